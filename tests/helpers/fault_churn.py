"""Clients that come and go, for the soak: until SIGTERM, each cycle creates a project
``Subscriber`` (subscribes one exact subject of its own and one pattern), starts it, creates
a ``Publisher``, publishes one probe event on that subject, waits for it to arrive (at most
--wait seconds), then closes both. Prints ``DONE <json>`` with the number of cycles, of
probes published, how many probes arrived, and the errors met."""

import argparse
import json
import os
import signal
import threading
import time

from eventservice import Publisher, Subscriber

parser = argparse.ArgumentParser()
parser.add_argument("--wait", type=float, default=15.0)
parser.add_argument("--name", default="churn")
args = parser.parse_args()

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())


class Probe(Subscriber):
    def __init__(self):
        super().__init__()
        self.got = threading.Event()

    def event(self, event):
        self.got.set()


cycles = arrived = published = 0
errors = {}
longest = 0.0
print("READY", flush=True)
while not stop.is_set():
    subject = f"churn.{args.name}.{os.getpid()}.{cycles}"
    begun = time.monotonic()
    sub = pub = None
    try:
        sub = Probe()
        sub.subscribe(subject)
        sub.subscribeMatch(r"churn\.never\..*")
        sub.start()
        pub = Publisher()
        pub.publish(subject, {"cycle": cycles})
        published += 1
        if sub.got.wait(args.wait):
            arrived += 1
    except Exception as exc:  # counted and reported
        name = type(exc).__name__
        errors[name] = errors.get(name, 0) + 1
        print(f"ERROR {name}: {exc}", flush=True)
    finally:
        for client in (pub, sub):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:
                    name = "close:" + type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
    cycles += 1
    longest = max(longest, time.monotonic() - begun)
print("DONE " + json.dumps({"cycles": cycles, "published": published, "arrived": arrived, "errors": errors,
                            "longest_cycle": round(longest, 3)}), flush=True)
