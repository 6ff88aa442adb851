"""The clients of one host in the two-hosts test, run inside that host's network namespace.

Finds its ``es`` through the name server of its host (PYRO_NS_HOST), subscribes to the other
host's stream (exact) and to every host's stream (pattern), then probes until both hosts
are known to hear each other, publishes ``--count`` numbered events on ``hosts.ME.stream``
and prints one JSON line: what each subscriber received, in order, and where its es was."""

import argparse
import json
import threading
import time

from eventservice import EVENTSERVICE_NAME, Publisher, Subscriber
from eventservice.naming import find_ns

parser = argparse.ArgumentParser()
parser.add_argument("--me", required=True)
parser.add_argument("--other", required=True)
parser.add_argument("--count", type=int, default=200)
parser.add_argument("--timeout", type=float, default=60)
args = parser.parse_args()

lock = threading.Lock()
received = {"exact": [], "pattern": []}
heard_other = threading.Event()   # a probe of the other host reached me
other_hears_me = threading.Event()  # ... and said it had heard mine


def on_probe(event):
    heard_other.set()
    if event.msg.get("heard"):
        other_hears_me.set()


def recorder(kind):
    def record(event):
        with lock:
            received[kind].append([event.subject, event.msg])
    return record


def wait(condition, what):
    deadline = time.monotonic() + args.timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{args.me}: timed out waiting for {what}: "
                             f"{ {k: len(v) for k, v in received.items()} }")
        time.sleep(0.01)


exact, pattern = Subscriber(), Subscriber()
exact.on(f"hosts.{args.other}.probe", on_probe)
exact.on(f"hosts.{args.other}.stream", recorder("exact"))
pattern.on_match(r"hosts\.[a-z]+\.stream", recorder("pattern"))
exact.start()
pattern.start()

publisher = Publisher()
deadline = time.monotonic() + args.timeout
while not other_hears_me.is_set():
    publisher.publish(f"hosts.{args.me}.probe", {"heard": heard_other.is_set()})
    other_hears_me.wait(0.05)
    if time.monotonic() > deadline:
        raise SystemExit(f"{args.me}: the other host never answered the probes")
publisher.publish(f"hosts.{args.me}.probe", {"heard": True})  # the other may still wait for this
for number in range(args.count):
    publisher.publish(f"hosts.{args.me}.stream", number)

wait(lambda: len(received["exact"]) >= args.count and len(received["pattern"]) >= 2 * args.count,
     "the events of both hosts")
ns = find_ns()  # where the clients found their es: by name, in this host's name server
es_uri = str(ns.lookup(EVENTSERVICE_NAME))
ns._pyroRelease()
with lock:
    print(json.dumps({"es": es_uri, "received": received}), flush=True)
exact.close()
pattern.close()
publisher.close()
