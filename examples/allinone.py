"""Everything in one process: a Pyro5 name server, the Event Service, a subscriber and a
publisher. Shows a few events and exits.

    python allinone.py

It uses free ports on localhost of its own, so it never clashes with a running es or
name server.
"""

import socket
import threading

import Pyro5
from Pyro5.nameserver import start_ns

from eventservice import Publisher, Subscriber, start_es

HOST = "127.0.0.1"
COUNT = 5


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Printer(Subscriber):
    """Prints events; ``done`` is set after ``count`` of them."""

    def __init__(self, count):
        super().__init__()
        self.setThreading(False)
        self.remaining = count
        self.done = threading.Event()

    def event(self, event):
        print(f"received {event}", flush=True)
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


def main():
    # 1. a name server, where the clients below will look for it
    Pyro5.config.NS_HOST, Pyro5.config.NS_PORT = HOST, free_port()
    ns_uri, ns_daemon, _ = start_ns(HOST, Pyro5.config.NS_PORT)
    threading.Thread(target=ns_daemon.requestLoop, daemon=True).start()
    print(f"name server at {ns_uri}")

    # 2. the Event Service, registered in it as Pyro.EventService
    server = start_es(HOST, 0, ns_host=HOST, ns_port=Pyro5.config.NS_PORT)
    service_thread = threading.Thread(target=server.loop, daemon=True)
    service_thread.start()
    print(f"Event Service at {server.uri}")

    # 3. a subscriber to the pattern weather\..* and a publisher, both found by name
    printer = Printer(COUNT)
    printer.subscribeMatch(r"weather\..*")
    printer.start()
    with Publisher() as publisher:
        for i in range(COUNT):
            publisher.publish(f"weather.city{i}", {"temperature": 15 + i})
            publisher.publish("news.sport", "nobody subscribed to this: dropped")
    ok = printer.done.wait(10)

    printer.close()
    server.stop()
    service_thread.join(10)
    ns_daemon.shutdown()
    print("all events received" if ok else "some events did not arrive")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
