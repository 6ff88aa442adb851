"""``es stats``, ``es subjects`` and ``es ping``: what the Event Service is doing, for people."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..clients import ServiceLink
from . import connect
from .formats import json_value
from .output import (BOLD, CLEAR_SCREEN, DIM, duration, is_terminal, line, local_time, note, number, paint, rate,
                     write)

COUNTERS = ("subscribers", "subject_subscriptions", "pattern_subscriptions", "published", "delivered", "dropped",
            "removed", "requests", "slow_subscribers", "queue_size", "overflow", "heartbeat")
RATED = ("published", "delivered", "dropped", "requests")
APART = {"id", "version", "started", "backbone", "per_subscriber", "subjects", *COUNTERS}
BACKBONE_COUNTERS = ("sent", "received", "failed", "reconnects", "outages", "pending", "messages_sent",
                     "messages_received", "duplicates", "inbound_dropped", "invalid", "forged")
SUBJECTS_SHOWN = 40  # characters of a subscriber's subjects in the table

Snapshot = Tuple[float, Dict[str, Any]]  # (monotonic time, stats with "subjects")


def fetch(service: ServiceLink, limit: int) -> Snapshot:
    """The service's stats (per subscriber) and its ``limit`` busiest subjects."""
    stats = service.call("stats", True)
    stats["subjects"] = service.call("subjects", None, limit)
    return time.monotonic(), stats


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the counters, the subscribers and the busiest subjects (``--watch``: again and again)."""
    service = connect.link(args)
    try:
        if args.json:
            line(json.dumps(json_value(fetch(service, args.limit)[1]), indent=2, sort_keys=True, allow_nan=False))
        elif args.watch is not None:
            _watch(service, args)
        else:
            before = fetch(service, args.limit) if args.interval else None
            if before is not None:
                time.sleep(args.interval)
            line("\n".join(render(fetch(service, args.limit), before, args.found_at)))
    finally:
        service.reset()
    return 0


def _watch(service: ServiceLink, args: argparse.Namespace) -> None:
    terminal = is_terminal(sys.stdout)
    before: Optional[Snapshot] = None
    while True:
        now = fetch(service, args.limit)
        screen = render(now, before, args.found_at)
        if terminal:
            write(CLEAR_SCREEN + paint(f"every {args.watch:g}s, Ctrl-C stops", DIM) + "\n" + "\n".join(screen) + "\n")
        else:
            write("\n".join(screen) + "\n\n")
        before = now
        time.sleep(args.watch)


def render(now: Snapshot, before: Optional[Snapshot], where: str) -> List[str]:
    """The lines of one ``es stats`` screen; rates over the time since ``before``, if given."""
    stats = now[1]
    run = str(stats.get("id", "?"))[:12]
    lines = [paint(f"Event Service {stats.get('version', '?')} at {where} (run {run})", BOLD)]
    if isinstance(stats.get("started"), (int, float)):
        lines.append(f"{'started':22} {local_time(stats['started'])} (up {duration(time.time() - stats['started'])})")
    for key in COUNTERS:
        if key in stats:
            lines.append(f"{key:22} {_value(stats[key])}")
    for key in sorted(set(stats) - APART):
        lines.append(f"{key:22} {_value(stats[key])}")
    if isinstance(stats.get("backbone"), dict):
        lines += backbone_lines(stats["backbone"])
    if before is not None:
        elapsed = max(now[0] - before[0], 1e-9)
        shown = [f"{key} {rate((stats[key] - before[1][key]) / elapsed)}" for key in RATED
                 if isinstance(stats.get(key), int) and isinstance(before[1].get(key), int)]
        lines += ["", f"rates over the last {elapsed:.1f}s: " + ", ".join(shown)]
    lines += _subscribers_table(stats.get("per_subscriber") or {})
    lines += _subjects_table(stats.get("subjects") or [])
    return lines


def backbone_lines(bb: Dict[str, Any]) -> List[str]:
    """The backbone section: a headline, then one counter a line."""
    state = bb.get("state", "?")
    where = f" via {bb['server']}" if bb.get("server") else ""
    lines = [f"{'backbone':22} {state}: {bb.get('url')} (event space {bb.get('name')!r}{where})"]
    lines += [f"  {key:20} {_value(bb[key])}" for key in BACKBONE_COUNTERS if key in bb]
    routed = "the whole space" if bb.get("whole_space") else f"{bb.get('routed_subjects', 0)} exact subjects"
    lines.append(f"  {'receiving':20} {routed}")
    if bb.get("last_error") and state != "connected":
        lines.append(f"  {'last_error':20} {bb['last_error']}")
    return lines


def _subscribers_table(per_subscriber: Dict[str, Dict[str, Any]]) -> List[str]:
    rows = []
    for uri, counters in sorted(per_subscriber.items()):
        held = list(counters.get("subjects", [])) + list(counters.get("patterns", []))
        text = ", ".join(held)
        if len(text) > SUBJECTS_SHOWN:
            text = text[:SUBJECTS_SHOWN - 1] + "…"
        rows.append([uri, text, counters.get("queued", 0), counters.get("delivered", 0), counters.get("dropped", 0),
                     "slow" if counters.get("slow") else "-"])
    if not rows:
        return ["", "no subscribers"]
    return [""] + table(("SUBSCRIBER", "SUBJECTS", "QUEUED", "DELIVERED", "DROPPED", "SLOW"), rows)


def _subjects_table(subjects: Sequence[Dict[str, Any]]) -> List[str]:
    if not subjects:
        return ["", "no subjects published lately or subscribed"]
    return [""] + subjects_table(subjects)


def subjects_table(subjects: Sequence[Dict[str, Any]]) -> List[str]:
    """The busiest subjects as a table: subject, subscribers, events, rate."""
    rows = [[s["subject"], s["subscribers"], s["events"], rate(s["rate"])] for s in subjects]
    return table(("SUBJECT", "SUBSCRIBERS", "EVENTS", "RATE"), rows)


def table(headers: Sequence[str], rows: List[List[Any]]) -> List[str]:
    """Columns padded to their widest cell; numbers right-aligned; the headers in bold."""
    cells = [[number(c) if isinstance(c, (int, float)) and not isinstance(c, bool) else str(c) for c in row]
             for row in rows]
    right = [all(isinstance(row[i], (int, float)) or str(row[i]).endswith("/s") for row in rows)
             for i in range(len(headers))]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()
    return [paint(fmt(headers), BOLD)] + [fmt(row) for row in cells]


def _value(value: Any) -> str:
    return number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def cmd_subjects(args: argparse.Namespace) -> int:
    """List the busiest subjects (matching PATTERN): subscribers, events, rate."""
    service = connect.link(args)
    try:
        subjects = service.call("subjects", args.pattern, args.limit)
    finally:
        service.reset()
    if args.json:
        line(json.dumps(json_value(subjects), allow_nan=False))
    elif subjects:
        line("\n".join(subjects_table(subjects)))
    else:
        note("no subjects published lately or subscribed" + (f" match {args.pattern!r}" if args.pattern else ""))
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    """Time round trips to the service's ``ping``."""
    service = connect.link(args)
    try:
        started = time.perf_counter()
        run = service.call("ping")
        line(f"connected to {service.uri} (run {str(run)[:12]}) in {_ms(time.perf_counter() - started)}")
        took = []
        for seq in range(1, args.count + 1):
            if seq > 1 and args.interval:
                time.sleep(args.interval)
            started = time.perf_counter()
            service.call("ping")
            took.append(time.perf_counter() - started)
            line(f"ping {seq}: {_ms(took[-1])}")
    finally:
        service.reset()
    if len(took) > 1:
        line(f"{len(took)} pings: min {_ms(min(took))}, average {_ms(sum(took) / len(took))}, max {_ms(max(took))}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the service to read its users file again (an admin's call)."""
    service = connect.link(args)
    try:
        done: Dict[str, Any] = service.call("reload")
    finally:
        service.reset()
    line(f"reloaded: {done['users']} users; revoked the subscriptions of {len(done['revoked'])} subscriber(s)")
    return 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"
