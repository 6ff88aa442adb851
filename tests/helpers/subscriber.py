"""A subscriber process for tests: prints READY once subscribed, then one JSON line per
event on stdout. ``--plain`` uses bare Pyro5 and never imports eventservice."""

import argparse
import json
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("subjects", nargs="+")
parser.add_argument("--match", action="store_true")
parser.add_argument("--plain", action="store_true", help="bare Pyro5 object exposing only event()")
parser.add_argument("--plain-import", action="store_true", help="bare Pyro5 object, but import eventservice")
parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep in each event()")
parser.add_argument("--raise-on", type=int, default=-1, help="raise in event() for message seq == N")
parser.add_argument("--hang-on", type=int, default=-1, help="never return from event() for seq == N")
parser.add_argument("--ident")
parser.add_argument("--quiet", action="store_true", help="print only a count every 1000 events")
parser.add_argument("--serializer", help="--plain: the serializer the service calls back in (default: its choice)")
args = parser.parse_args()

lock = threading.Lock()
count = 0


def record(event):
    global count
    if isinstance(event, dict):
        kind, subject, msg, when = "dict", event["subject"], event["msg"], event["time"]
    else:
        kind, subject, msg, when = type(event).__name__, event.subject, event.msg, event.time
    seq = msg.get("seq") if isinstance(msg, dict) else None
    if seq is not None and seq == args.hang_on:
        threading.Event().wait()
    if args.sleep:
        time.sleep(args.sleep)
    with lock:
        count += 1
        if args.quiet:
            if count % 1000 == 0:
                print(json.dumps({"count": count}), flush=True)
        else:
            print(json.dumps({"type": kind, "subject": subject, "msg": msg, "time": when}), flush=True)
    if seq is not None and seq == args.raise_on:
        raise ValueError(f"refusing event {seq}")


if args.plain or args.plain_import:
    import Pyro5.api
    if args.plain_import:
        import eventservice  # noqa: F401  (registers Event)

    class Plain:
        @Pyro5.api.expose
        def event(self, event):
            record(event)

    daemon = Pyro5.api.Daemon()
    me = daemon.register(Plain())
    ns = Pyro5.api.locate_ns()
    service = Pyro5.api.Proxy(ns.lookup("Pyro.EventService"))
    service._pyroHandshake = args.ident
    callback = Pyro5.api.Proxy(me)
    callback._pyroSerializer = args.serializer
    if args.match:
        service.subscribeMatch(args.subjects, callback)
    else:
        service.subscribe(args.subjects, callback)
    print("READY", flush=True)
    daemon.requestLoop()
else:
    from eventservice import Subscriber

    class Recording(Subscriber):
        def event(self, event):
            record(event)

    sub = Recording(ident=args.ident)
    if args.match:
        sub.subscribeMatch(args.subjects)
    else:
        sub.subscribe(args.subjects)
    print("READY", flush=True)
    sub.listen()
