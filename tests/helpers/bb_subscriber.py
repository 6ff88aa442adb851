"""A plain Pyro5 subscriber process that never imports eventservice (so it receives events
as dicts): subscribes at ``--esuri`` to ``--subjects`` (exact) and ``--patterns``, prints
READY, then one JSON line per event: {"type", "subject", "msg", "time"}."""

import argparse
import json
import sys
import threading

import Pyro5.api

parser = argparse.ArgumentParser()
parser.add_argument("--esuri", required=True)
parser.add_argument("--subjects", default="", help="comma-separated exact subjects")
parser.add_argument("--patterns", default="", help="patterns separated by ';'")
args = parser.parse_args()

assert "eventservice" not in sys.modules
lock = threading.Lock()


class Sink:
    @Pyro5.api.expose
    def event(self, event):
        kind = "dict" if isinstance(event, dict) else type(event).__name__
        data = event if isinstance(event, dict) else {"subject": event.subject, "msg": event.msg, "time": event.time}
        with lock:
            print(json.dumps({"type": kind, "subject": data["subject"], "msg": data["msg"], "time": data["time"]}),
                  flush=True)


daemon = Pyro5.api.Daemon(host="127.0.0.1")
me = daemon.register(Sink())
service = Pyro5.api.Proxy(args.esuri)
subjects = [s for s in args.subjects.split(",") if s]
patterns = [p for p in args.patterns.split(";") if p]
if subjects:
    service.subscribe(subjects, Pyro5.api.Proxy(me))
if patterns:
    service.subscribeMatch(patterns, Pyro5.api.Proxy(me))
service._pyroRelease()
print("READY", flush=True)
daemon.requestLoop()
