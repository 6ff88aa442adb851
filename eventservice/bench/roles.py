"""The roles of ``es bench`` children that use eventservice: its Subscriber and Publisher,
request/reply, work-queue members, and the fanout process of many Pyro5 subscribers that
take events as eventservice's Subscriber does.

A child runs one of them as ``python -m eventservice.bench.roles --role NAME --config JSON``
(see :mod:`.child` for the conversation). The roles that must not import eventservice are in
:mod:`.plain_roles`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Dict, List

from .child import (IDENT_ENV, SUBJECT, Config, Control, Role, Tally, completion, latency_report, publish_loop,
                    publisher_report, run_role, run_subscriber_loop, stride)
from .plain_roles import plain_daemon


def role_subscriber(cfg: Config, ctl: Control) -> None:
    """The project's Subscriber: subscribes ``subjects`` and ``patterns``, counts events."""
    from eventservice import Subscriber

    latencies: List[float] = []
    probed = threading.Event()

    def on_probe() -> None:
        if not probed.is_set():
            probed.set()
            ctl.send({"type": "probed"})
    tally = Tally(cfg["expected"], latencies, stride(cfg["expected"]), completion(ctl, 1), on_probe)

    class BenchSubscriber(Subscriber):
        def event(self, event: Any) -> None:
            tally.add(event.msg, time.time())

    sub = BenchSubscriber(esURI=cfg["esuri"])
    sub.setThreading(False)
    sub.start()
    if cfg.get("patterns"):
        sub.subscribeMatch(cfg["patterns"])
    sub.subscribe(cfg["subjects"])
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [sub.uri]})

    def cleanup() -> None:
        if cfg.get("cleanup"):
            sub.close()
    run_subscriber_loop(ctl, [tally], latencies, cpu0, cleanup)


def role_responder(cfg: Config, ctl: Control) -> None:
    """The project's Subscriber answering requests on ``subject`` (its ``respond``)."""
    from eventservice import Subscriber

    class Responder(Subscriber):
        def respond(self, event: Any) -> Any:
            return event.msg

    sub = Responder(esURI=cfg["esuri"])
    sub.start()
    sub.subscribe(cfg["subject"], group=cfg.get("group"))
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [sub.uri]})
    ctl.stop.wait()
    ctl.send({"type": "report", "cpu": time.process_time() - cpu0})


def role_requester(cfg: Config, ctl: Control) -> None:
    """A Publisher making ``events`` requests one after another; round-trip latencies."""
    from eventservice import Publisher

    pub = Publisher(esURI=cfg["esuri"])
    pub.request(cfg["subject"], "warm-up", 10)
    if not ctl.ready_then_go():
        return
    start, cpu0 = time.time(), time.process_time()
    latencies: List[float] = []
    sent, error = 0, None
    try:
        for seq in range(cfg["events"]):
            began = time.perf_counter()
            if pub.request(cfg["subject"], seq, 10) != seq:
                error = f"request {seq} got a wrong answer"
                break
            latencies.append((time.perf_counter() - began) * 1e6)
            sent += 1
            if ctl.stop.is_set():
                break
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    ctl.send(publisher_report(sent, start, cpu0, error, **latency_report(latencies)))


def role_member(cfg: Config, ctl: Control) -> None:
    """The project's Subscriber in a work-queue group: counts its share, checks order."""
    from eventservice import Subscriber

    got: List[int] = []

    class Member(Subscriber):
        def event(self, event: Any) -> None:
            got.append(event.msg["seq"])

    sub = Member(esURI=cfg["esuri"])
    sub.setThreading(False)
    sub.start()
    sub.subscribe(SUBJECT, group=cfg["group"])
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [sub.uri]})
    while not ctl.stop.wait(0.05):
        ctl.send({"type": "progress", "n": len(got)})
    ctl.send({"type": "report", "received": len(got), "last": time.time(), "cpu": time.process_time() - cpu0,
              "in_order": got == sorted(got), "distinct": len(set(got))})


def role_fanout(cfg: Config, ctl: Control) -> None:
    """One Pyro5 daemon (multiplexed) with ``objects`` subscribers exposing what
    eventservice's Subscriber exposes (``deliverPacked``, ``deliverEvents``, ``event``) and
    called back in msgpack as it is; each subscribes itself to its subjects."""
    import Pyro5
    from Pyro5.api import Proxy, expose
    import eventservice  # noqa: F401  (registers Event, for event())
    from eventservice import wire
    from eventservice.config import FAST_SERIALIZER

    Pyro5.config.SERVERTYPE = "multiplex"
    ident = os.environ.get(IDENT_ENV) or None
    daemon = plain_daemon()
    objects, expected = cfg["objects"], cfg["expected"]
    latencies: List[float] = []
    every = stride(objects * expected)
    complete = completion(ctl, objects)

    @expose
    class FanoutSubscriber:
        def __init__(self) -> None:
            self.tally = Tally(expected, latencies, every, complete)

        def deliverEvents(self, items: List[Any]) -> None:
            calls[0] += 1
            now, add = time.time(), self.tally.add
            for _subject, msg, _when in items:
                add(msg, now)

        def deliverPacked(self, data: bytes) -> None:  # as eventservice.Subscriber takes them
            self.deliverEvents(wire.unpack(data))

        def event(self, event: Any) -> None:
            calls[1] += 1
            self.tally.add(event["msg"] if isinstance(event, dict) else event.msg, time.time())

    calls = [0, 0]  # deliverEvents and event calls (one thread: the daemon is multiplexed)
    subscribers = [FanoutSubscriber() for _ in range(objects)]
    uris = [daemon.register(s) for s in subscribers]
    threading.Thread(target=daemon.requestLoop, name="bench-fanout-daemon", daemon=True).start()
    es = Proxy(cfg["esuri"])
    es._pyroHandshake = ident
    es._pyroTimeout = 30
    tag = cfg["tag"]

    def subjects(n: int) -> List[str]:
        return [SUBJECT] + [f"fanout.{tag}.{n}.{j}" for j in range(1, cfg["subjects_each"])]
    for n, uri in enumerate(uris):
        callback = Proxy(uri)
        callback._pyroSerializer = FAST_SERIALIZER  # called back as eventservice.Subscriber is
        es.subscribe(subjects(n), callback)
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [str(u) for u in uris]})

    def cleanup() -> None:
        if cfg.get("cleanup"):
            for n, uri in enumerate(uris):
                es.unsubscribe(subjects(n), Proxy(uri))
    run_subscriber_loop(ctl, [s.tally for s in subscribers], latencies, cpu0, cleanup, calls=calls)


def role_publisher(cfg: Config, ctl: Control) -> None:
    """The project's Publisher, batched or not."""
    from eventservice import Publisher

    publisher = Publisher(esURI=cfg["esuri"], batch=cfg["batch"])
    publisher.publish("bench.warmup", None)  # connect before the clock starts
    publisher.flush()
    if not ctl.ready_then_go():
        return
    start, cpu0 = time.time(), time.process_time()
    sent, error = publish_loop(ctl, lambda msg: publisher.publish(SUBJECT, msg), cfg)
    try:
        publisher.flush(timeout=max(1.0, cfg["deadline"] - time.time() - 10))
    except Exception as exc:
        error = error or f"flush: {type(exc).__name__}: {exc}"
    ctl.send(publisher_report(sent, start, cpu0, error))
    try:
        publisher.close()
    except Exception:
        pass


ROLES: Dict[str, Role] = {
    "subscriber": role_subscriber, "fanout": role_fanout, "publisher": role_publisher,
    "responder": role_responder, "requester": role_requester, "member": role_member,
}

if __name__ == "__main__":
    run_role(ROLES, sys.argv[1:])
