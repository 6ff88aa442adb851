"""The child's side of ``es bench``: what every child process speaks and counts, whichever
role it plays.

A child is driven through its stdin (``go``, ``stop``; end of input means stop) and reports
JSON lines on stdout (``ready``, ``progress``, ``complete``, ``probed``, ``report``,
``error``, ``deadline``). It has a deadline of its own, after which it reports what it has
and exits. Publishers stamp each message with ``time.time()`` (field ``t``); subscribers
count what arrives (:class:`Tally`) and report latencies as sketches (see
:mod:`eventservice.bench.stats`).

Standard library only (and :mod:`.stats`): the plain children load it without importing
eventservice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

from .stats import quantile, quantile_points

SUBJECT = "stockquotes.sun"  # what the publishers publish on and the subscribers subscribe to
PROGRESS_EVERY = 0.5  # seconds between a child's progress reports
LATENCY_SAMPLES = 200_000  # latencies a subscriber keeps at most (it samples beyond)
IDENT_ENV = "EVENTSERVICE_IDENT"  # the passphrase, as the coordinator passes it on

Config = Dict[str, Any]  # a child's configuration, as the coordinator sent it (JSON)


class Control:
    """A child's side of the conversation: commands on stdin, JSON lines on stdout, and a
    deadline (epoch seconds) after which it says so, stops, and exits 5 s later."""

    def __init__(self, deadline: float) -> None:
        self.go = threading.Event()
        self.stop = threading.Event()
        self._out = threading.Lock()
        threading.Thread(target=self._read, name="bench-stdin", daemon=True).start()
        threading.Thread(target=self._watchdog, args=(deadline,), name="bench-deadline", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "go":
                self.go.set()
            elif command == "stop":
                self.stop.set()
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
        """Write one JSON line to the coordinator (from any thread; lost if stdout is gone)."""
        line = json.dumps(message) + "\n"
        with self._out:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def ready_then_go(self) -> bool:
        """Say ``ready`` and wait for ``go``; False (reported as an error) when told to stop
        instead."""
        self.send({"type": "ready"})
        self.go.wait()
        if not self.stop.is_set():
            return True
        self.send({"type": "report", "sent": 0, "error": "stopped before go"})
        return False


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
        """Count ``msg`` (a publisher's message) arrived at ``now``; anything else is ignored."""
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


def stride(expected_total: int) -> int:
    """Keep every n-th latency so that ``expected_total`` events give at most LATENCY_SAMPLES."""
    return max(1, expected_total // LATENCY_SAMPLES + (1 if expected_total % LATENCY_SAMPLES else 0))


def completion(ctl: Control, objects: int) -> Callable[[], None]:
    """A callback each of ``objects`` tallies calls once when complete; the last one says
    ``complete``."""
    lock = threading.Lock()
    state = {"left": objects}

    def done() -> None:
        with lock:
            state["left"] -= 1
            if state["left"] == 0:
                ctl.send({"type": "complete", "at": time.time()})
    return done


def latency_report(latencies: List[float]) -> Dict[str, Any]:
    """The latency fields of a report: count, p50/p90/p99/max and the sketch (µs)."""
    ordered = sorted(latencies)
    return {"lat_n": len(ordered), "lat_p50": quantile(ordered, 0.5), "lat_p90": quantile(ordered, 0.9),
            "lat_p99": quantile(ordered, 0.99), "lat_max": ordered[-1] if ordered else None,
            "lat_points": quantile_points(ordered)}


def subscriber_report(tallies: List[Tally], latencies: List[float], cpu0: float, **extra: Any) -> Dict[str, Any]:
    """The final report of a subscriber process (one or more subscribers)."""
    firsts = [t.first for t in tallies if t.first is not None]
    lasts = [t.last for t in tallies if t.last is not None]
    report = {
        "type": "report", "received": sum(t.count for t in tallies),
        "out_of_order": sum(t.out_of_order for t in tallies),
        "min_received": min((t.count for t in tallies), default=0), "objects": len(tallies),
        "first": min(firsts) if firsts else None, "last": max(lasts) if lasts else None,
        "cpu": time.process_time() - cpu0, **latency_report(latencies),
        "eventservice_imported": "eventservice" in sys.modules,
    }
    report.update(extra)
    return report


def run_subscriber_loop(ctl: Control, tallies: List[Tally], latencies: List[float], cpu0: float,
                        cleanup: Callable[[], None], **extra: Any) -> None:
    """Report progress until stopped, then clean up (best effort) and report everything."""
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
    ctl.send(subscriber_report(tallies, latencies, cpu0, **extra))


def message(seq: int, pub: Optional[int], pad: Optional[str]) -> Dict[str, Any]:
    """The message a publisher publishes: a stock quote stamped with ``seq`` and the time."""
    msg: Dict[str, Any] = {"symbol": "SUN", "price": 22.44, "seq": seq, "t": time.time()}
    if pub is not None:
        msg["pub"] = pub
    if pad is not None:
        msg["pad"] = pad
    return msg


def publish_loop(ctl: Control, publish: Callable[[Dict[str, Any]], None], cfg: Config) -> Tuple[int, Optional[str]]:
    """Publish cfg["events"] messages (paced at cfg["rate"] if given) until done or stopped;
    (how many were published, the error that ended it early or None)."""
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
            publish(message(seq, pub, pad))
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


def publisher_report(sent: int, start: float, cpu0: float, error: Optional[str], **extra: Any) -> Dict[str, Any]:
    """The final report of a publishing child: what it sent from ``start`` until now."""
    return {"type": "report", "sent": sent, "start": start, "end": time.time(), "cpu": time.process_time() - cpu0,
            "error": error, **extra}


Role = Callable[[Config, Control], None]


def run_role(roles: Dict[str, Role], argv: List[str]) -> NoReturn:
    """The entry point of a child process: ``--role NAME --config JSON``, NAME one of
    ``roles``. Exits 0 once the role has reported, 2 if it failed (after reporting ``error``)."""
    parser = argparse.ArgumentParser(prog="es bench child")
    parser.add_argument("--role", required=True, choices=sorted(roles))
    parser.add_argument("--config", required=True, help="JSON object")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's: it ends us by pid
    ctl = Control(cfg["deadline"])
    try:
        roles[args.role](cfg, ctl)
    except Exception as exc:
        ctl.send({"type": "error", "error": f"{type(exc).__name__}: {exc}"})
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(2)
    sys.stdout.flush()
    os._exit(0)  # do not wait for daemon threads or atexit flushes: the report is out
