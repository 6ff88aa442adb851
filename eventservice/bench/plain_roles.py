"""The roles of ``es bench`` children that must never import eventservice: a plain Pyro5
subscriber and publisher (what a client written without this package gets), and the raw
Pyro5 server and client of the baseline.

These children load this module, :mod:`.child` and :mod:`.stats` without importing
eventservice (see :data:`eventservice.bench.children.PLAIN_BOOT`); :func:`main` refuses to
run a role where eventservice was imported, and the subscriber's and publisher's reports say
whether it was imported while they ran. Standard library and Pyro5 only.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Dict, List, NoReturn

from .child import (IDENT_ENV, SUBJECT, Config, Control, Role, Tally, completion, publish_loop, publisher_report,
                    run_role, run_subscriber_loop, stride)

RAW_HOST = "127.0.0.1"  # where the raw server listens when PYRO_HOST does not say


def plain_daemon() -> Any:
    """A plain Pyro5 Daemon on $PYRO_HOST. (It asks nothing of its callers: the service
    never presents its passphrase to a subscriber that does not prove it knows it too.)"""
    from Pyro5.api import Daemon

    return Daemon(host=os.environ.get("PYRO_HOST") or None)


def role_plain_sub(cfg: Config, ctl: Control) -> None:
    """A plain Pyro5 subscriber: exposes only event(), subscribes itself, counts events."""
    from Pyro5.api import Proxy, expose

    ident = os.environ.get(IDENT_ENV) or None
    latencies: List[float] = []
    tally = Tally(cfg["expected"], latencies, stride(cfg["expected"]), completion(ctl, 1))
    lock = threading.Lock()

    @expose
    class PlainSubscriber:
        def event(self, event: Any) -> None:
            msg = event["msg"] if isinstance(event, dict) else getattr(event, "msg", None)
            with lock:
                tally.add(msg, time.time())

    daemon = plain_daemon()
    uri = daemon.register(PlainSubscriber())
    threading.Thread(target=daemon.requestLoop, name="bench-plain-daemon", daemon=True).start()
    es = Proxy(cfg["esuri"])
    es._pyroHandshake = ident
    es._pyroTimeout = 30
    callback = Proxy(uri)
    callback._pyroSerializer = cfg.get("callback_serializer")  # None: called back in serpent, Pyro5's default
    es.subscribe(cfg["subjects"], callback)
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [str(uri)]})

    def cleanup() -> None:
        if cfg.get("cleanup"):
            es.unsubscribe(cfg["subjects"], Proxy(uri))
    run_subscriber_loop(ctl, [tally], latencies, cpu0, cleanup)


def role_plain_publisher(cfg: Config, ctl: Control) -> None:
    """A plain Pyro5 client calling publish() once per event."""
    from Pyro5.api import Proxy

    es = Proxy(cfg["esuri"])
    es._pyroHandshake = os.environ.get(IDENT_ENV) or None
    es._pyroTimeout = 30
    es.publish("bench.warmup", None)
    if not ctl.ready_then_go():
        return
    start, cpu0 = time.time(), time.process_time()
    sent, error = publish_loop(ctl, lambda msg: es.publish(SUBJECT, msg), cfg)
    ctl.send(publisher_report(sent, start, cpu0, error, eventservice_imported="eventservice" in sys.modules))


def role_raw_server(cfg: Config, ctl: Control) -> None:
    """A plain Pyro5 daemon with one object exposing a no-op method that takes what
    ``publish`` takes: the baseline of what the service adds to a call."""
    from Pyro5.api import Daemon, expose

    @expose
    class Noop:
        def noop(self, subject: Any = None, message: Any = None) -> None:
            return None

    daemon = Daemon(host=os.environ.get("PYRO_HOST") or RAW_HOST)
    uri = daemon.register(Noop())
    threading.Thread(target=daemon.requestLoop, name="bench-raw-daemon", daemon=True).start()
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [str(uri)]})
    ctl.stop.wait()
    ctl.send({"type": "report", "cpu": time.process_time() - cpu0,
              "eventservice_imported": "eventservice" in sys.modules})


def role_raw_client(cfg: Config, ctl: Control) -> None:
    """Calls the raw server's no-op ``events`` times, two-way, with the arguments a plain
    publisher gives ``publish``."""
    from Pyro5.api import Proxy

    proxy = Proxy(cfg["uri"])
    proxy._pyroTimeout = 30
    proxy.noop()
    if not ctl.ready_then_go():
        return
    start, cpu0 = time.time(), time.process_time()
    noop = proxy.noop
    sent, error = publish_loop(ctl, lambda msg: noop(SUBJECT, msg), cfg)
    ctl.send(publisher_report(sent, start, cpu0, error))


ROLES: Dict[str, Role] = {
    "plain-sub": role_plain_sub, "plain-publisher": role_plain_publisher,
    "raw-server": role_raw_server, "raw-client": role_raw_client,
}


def main(argv: List[str]) -> NoReturn:
    """Run one plain role (``--role NAME --config JSON``); exits 4 without running it if
    eventservice has been imported in this process."""
    if "eventservice" in sys.modules:
        sys.stderr.write("es bench: a plain role must run where eventservice is not imported\n")
        sys.exit(4)
    run_role(ROLES, argv)
