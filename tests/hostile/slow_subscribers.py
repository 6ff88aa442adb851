"""Slow subscribers (finding 3): ``--count`` plain Pyro5 objects in one daemon, each
subscribed at ``--esuri`` to ``--subject``, whose ``event``/``deliverEvents`` calls take
``--seconds`` each but which answer a heartbeat at once. Prints one line ``KEYS [...]``
(their callback URIs: the service's keys for them), then ``READY``; then ``CALL n`` each time
a slow call begins (n: calls under way). Never imports eventservice."""

import argparse
import json
import sys
import threading
import time

import Pyro5
import Pyro5.api

parser = argparse.ArgumentParser()
parser.add_argument("--esuri", required=True)
parser.add_argument("--count", type=int, required=True)
parser.add_argument("--subject", required=True)
parser.add_argument("--seconds", type=float, default=3.0)
args = parser.parse_args()
assert "eventservice" not in sys.modules

Pyro5.config.THREADPOOL_SIZE = max(200, 4 * args.count)
Pyro5.config.SERVERTYPE = "thread"
lock = threading.Lock()
under_way = [0]


class Slow:
    def _slow(self) -> None:
        with lock:
            under_way[0] += 1
            print(f"CALL {under_way[0]}", flush=True)
        time.sleep(args.seconds)
        with lock:
            under_way[0] -= 1

    @Pyro5.api.expose
    def event(self, event):
        self._slow()

    @Pyro5.api.expose
    def deliverEvents(self, items):
        self._slow()

    @Pyro5.api.expose
    def heartbeat(self, service_id):
        return True


daemon = Pyro5.api.Daemon(host="127.0.0.1")
uris = [daemon.register(Slow()) for _ in range(args.count)]
service = Pyro5.api.Proxy(args.esuri)
for uri in uris:
    service.subscribe(args.subject, Pyro5.api.Proxy(uri))
service._pyroRelease()
print("KEYS " + json.dumps([str(uri) for uri in uris]), flush=True)
print("READY", flush=True)
daemon.requestLoop()
