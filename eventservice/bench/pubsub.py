"""How a publish/subscribe scenario is measured (kinds pubsub and fanout, cross runs too):
subscribers first, all subscribed before anyone publishes; then the publishers go, and the
run follows progress until every subscriber has everything, progress stops, or time is up.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Dict, List, Optional

from .child import SUBJECT, Config
from .children import Child
from .procfs import Monitor, Sample, cpu_between, proc_sample
from .result import Result
from .run import STARTUP_TIMEOUT, Run
from .scenarios import FANOUT_OBJECTS, FANOUT_SUBJECTS
from .stats import merge_latency

SETTLE = 3.0  # seconds without progress, after the publishers finished, before the rest counts as lost
STALL = 30.0  # seconds without any progress before a run is given up
PROBE_EVERY = 0.05  # seconds between the probes of a cross run, until every subscriber heard one
SAY_EVERY = 2.0  # seconds between progress lines


def measure_pubsub(run: Run) -> Result:
    """Publishers -> subscribers as the run's mix says; the service's CPU, threads, memory
    and counters around it (and the backbone's, in a cross run)."""
    run.start_es()
    mix = run.mix
    expected = mix.events * mix.publishers
    fresh = proc_sample(run.es_pid)
    monitor = Monitor(run.es_pid)
    extra: Dict[str, Any] = {}
    try:
        subs = _spawn_subscribers(run, expected)
        pubs = []
        for n in range(mix.publishers):
            cfg = {"events": mix.events, "batch": mix.batch, "rate": mix.rate, "esuri": run.pub_esuri,
                   "payload_size": mix.payload_size, "pub": n if mix.publishers > 1 else None}
            pubs.append(run.spawn(f"publisher-{n}", "publisher", cfg))
        run.wait_ready(subs + pubs)
        subscribed = monitor.sample()
        if mix.kind == "fanout":
            extra.update(es_threads_before=fresh["threads"], es_rss_before_mb=fresh["rss_mb"],
                         es_rss_subscribed_mb=subscribed["rss_mb"], es_threads_subscribed=subscribed["threads"])
        frozen = subs[len(subs) - mix.frozen:] if mix.frozen else []
        for child in frozen:
            child.signal(signal.SIGSTOP)
            child.frozen = True
        healthy = [c for c in subs if not c.frozen]
        if run.backbone_es:
            _probe(run, healthy)
        backbone_before = _backbone_sample(run)
        before = proc_sample(run.es_pid)
        stats_before = run.stats()  # after the publishers' warm-up events
        run.say(f"{len(subs)} subscriber process(es), {len(pubs)} publisher(s) ready; publishing "
                f"{expected:,} events" + (f" at {mix.rate:g}/s" if mix.rate else ""))
        run.go(pubs)
        _follow(run, pubs, healthy, expected)
        after = proc_sample(run.es_pid)
        stats = run.settled_stats()
        extra.update(_backbone_result(backbone_before, _backbone_sample(run)))
        ended = monitor.sample()
        if frozen and stats:
            extra.update(_frozen_counters(stats, frozen, healthy))
        for child in healthy + pubs:
            child.send("stop")
        for child in frozen:
            child.signal(signal.SIGCONT)
            child.send("stop")
        run.wait_reports(healthy + pubs, 15)
        run.wait_reports(frozen, 3)
        extra.update(es_threads_after=ended["threads"], es_rss_after_mb=ended["rss_mb"])
    finally:
        monitor.close()
    result = _result(run, pubs, healthy, frozen, expected, before, after, stats, stats_before)
    result.extra.update(es_threads_max=monitor.threads_max, es_rss_max_mb=monitor.rss_max)
    result.extra.update(extra)
    if run.backbone_es and result.cpu_es_s is not None:  # cpu es: every es of the run
        result.cpu_es_s += (extra.get("cpu_es_publishing_s") or 0.0) + (extra.get("cpu_es_idle_s") or 0.0)
    return result


def _spawn_subscribers(run: Run, expected: int) -> List[Child]:
    """The subscriber processes of the mix (fanout processes of many subscribers each)."""
    mix = run.mix
    external = run.es is None  # then they unsubscribe at the end: the service lives on
    patterns = [rf"stockquotes\.x{i}\..*" for i in range(mix.patterns)]
    subs = []
    for n in range(mix.subscribers):
        cfg: Config
        if mix.kind == "fanout":
            cfg = {"objects": FANOUT_OBJECTS, "expected": expected, "subjects_each": FANOUT_SUBJECTS,
                   "tag": n, "cleanup": external}
            subs.append(run.spawn(f"fanout-{n}", "fanout", cfg))
        else:
            cfg = {"subjects": [SUBJECT], "expected": expected, "cleanup": external,
                   "patterns": patterns if n == 0 else [], "callback_serializer": mix.callback_serializer}
            subs.append(run.spawn(f"subscriber-{n}", "plain-sub" if mix.plain else "subscriber", cfg))
    return subs


def _frozen_counters(stats: Dict[str, Any], frozen: List[Child], healthy: List[Child]) -> Dict[str, int]:
    """What the service dropped and queued for the frozen subscribers, and dropped for the others."""
    per = stats.get("per_subscriber", {})
    keys = [uri for c in frozen for uri in c.uris]
    healthy_keys = [uri for c in healthy for uri in c.uris]
    return {"frozen_dropped": sum(per.get(k, {}).get("dropped", 0) for k in keys),
            "frozen_queued": sum(per.get(k, {}).get("queued", 0) for k in keys),
            "healthy_dropped": sum(per.get(k, {}).get("dropped", 0) for k in healthy_keys)}


def _probe(run: Run, subs: List[Child]) -> None:
    """Publish probes at the publishers' es until every subscriber (at the other es) heard
    one: the subscribers' interest has crossed the backbone."""
    from Pyro5.api import Proxy

    def heard() -> bool:
        return all(child.probed for child in subs)
    end = time.monotonic() + STARTUP_TIMEOUT
    with Proxy(run.pub_esuri) as proxy:
        proxy._pyroHandshake = run.options.ident
        proxy._pyroTimeout = 10
        probe = 0
        while not heard():
            if time.monotonic() > end:
                raise RuntimeError(f"no probe crossed the backbone within {STARTUP_TIMEOUT:.0f}s")
            proxy.publish(SUBJECT, {"probe": probe})
            probe += 1
            run.wait(heard, PROBE_EVERY)
    run.say(f"the backbone carries events to the subscribers' es ({probe} probe(s))")


def _backbone_sample(run: Run) -> Dict[str, Any]:
    """Per es of a cross run: its backbone counters and its CPU seconds ({} otherwise)."""
    sample: Dict[str, Any] = {}
    if not run.backbone_es or run.es is None:
        return sample
    for role, es in {**run.backbone_es, "subscribing": run.es}.items():
        stats = run.stats(es.uri) or {}
        sample[role] = dict(stats.get("backbone") or {}, cpu=proc_sample(es.pid)["cpu"])
    return sample


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


def _follow(run: Run, pubs: List[Child], subs: List[Child], expected: int) -> None:
    """Wait until the subscribers have everything, progress stops, or time is up."""
    started = time.monotonic()
    last_change, last_state = started, None
    last_say = started
    total = expected * sum(len(c.uris) for c in subs)
    while True:
        with run.cond:
            run.cond.wait(0.2)
            pubs_done = all(c.report is not None or c.exited for c in pubs)
            subs_done = all(c.complete is not None or c.exited for c in subs)
            state = (tuple(c.progress for c in pubs), tuple(c.progress for c in subs),
                     sum(c.report is not None for c in pubs), sum(c.complete is not None for c in subs))
        now = time.monotonic()
        if state != last_state:
            last_state, last_change = state, now
        if pubs_done and subs_done:
            return
        if run.es is not None and run.es.proc.poll() is not None:
            run.problems.append(f"es exited during the run (code {run.es.proc.returncode})")
            return
        if pubs_done and now - last_change > SETTLE:
            return  # what has not arrived by now counts as lost
        if now - last_change > STALL:
            run.problems.append(f"no progress for {STALL:.0f}s: run given up")
            return
        if now - started > run.timeout:
            run.problems.append(f"run took longer than --timeout {run.timeout:.0f}s: given up")
            return
        if now - last_say >= SAY_EVERY:
            last_say = now
            published = sum(c.report.get("sent", 0) if c.report else c.progress for c in pubs)
            arrived = sum(c.progress for c in subs)
            run.say(f"published {published:,}, received {arrived:,} of {total:,}", running=True)


def _check_subscribers(run: Run, healthy: List[Child], expected: int, stats: Optional[Dict[str, Any]]) -> None:
    """Add a problem for each healthy subscriber process that got less than it should, sent
    no report, failed to clean up, or (plain) imported eventservice."""
    per_subscriber = (stats or {}).get("per_subscriber", {})
    for child in healthy:
        uris = child.uris
        if child.report is not None and child.report["received"] < expected * len(uris):
            # say what the service knows of it: removed, dropped, or still queued
            known = {uri: per_subscriber.get(uri, "not subscribed any more") for uri in uris}
            run.problems.append(f"{child.name} received {child.report['received']:,} of "
                                f"{expected * len(uris):,}; the service: {known}")
        if child.report is None:
            run.problems.append(f"{child.name} sent no report: its events count as lost")
        elif child.report.get("cleanup_error"):
            run.problems.append(f"{child.name}: cleanup: {child.report['cleanup_error']}")
        if run.mix.plain and child.report and child.report.get("eventservice_imported"):
            run.problems.append(f"{child.name} (plain) imported eventservice")


def _result(run: Run, pubs: List[Child], healthy: List[Child], frozen: List[Child], expected: int,
            before: Sample, after: Sample, stats: Optional[Dict[str, Any]],
            stats_before: Optional[Dict[str, Any]]) -> Result:
    """The figures of a publish/subscribe run from what its children reported and the
    service's counters before and after."""
    reports = [c.report for c in healthy if c.report]
    pub_reports = [c.report for c in pubs if c.report]
    for child in pubs:
        if child.report and child.report.get("error"):
            run.problems.append(f"{child.name}: {child.report['error']}")
    _check_subscribers(run, healthy, expected, stats)
    sent = sum(r.get("sent", 0) for r in pub_reports)
    objects = sum(len(c.uris) for c in healthy)
    wanted = expected * objects
    received = sum(r["received"] for r in reports)
    starts = [r["start"] for r in pub_reports if r.get("start")]
    lasts = [r["last"] for r in reports if r.get("last")]
    window = (max(lasts) - min(starts)) if starts and lasts else None
    published_in = max((r["end"] - r["start"] for r in pub_reports if r.get("end")), default=None)
    latency = merge_latency(reports)
    extra: Dict[str, Any] = {
        "publish_s": published_in, "publish_per_s": sent / published_in if published_in else None,
        "duplicates_or_extra": max(0, received - wanted),
        "subscribers": objects + sum(len(c.uris) for c in frozen), "publishers": len(pubs),
    }
    calls = [sum(r["calls"]) for r in reports if r.get("calls")]
    if calls:
        extra["subscriber_calls"] = sum(calls)
        extra["events_per_call"] = received / sum(calls)
    if sent < expected:
        extra["unpublished"] = expected - sent
    if frozen:
        extra["frozen_received"] = sum(c.report["received"] for c in frozen if c.report)
    if stats:
        base = stats_before or {}
        for key in ("published", "delivered", "dropped", "removed"):
            if key in stats:
                extra[f"es_{key}"] = stats[key] - base.get(key, 0)
        for key in ("subscribers", "subject_subscriptions", "pattern_subscriptions", "overflow", "queue_size"):
            if key in stats:
                extra[f"es_{key}"] = stats[key]
    return Result(events=sent, events_per_s=sent / window if window else None, duration_s=window,
                  deliveries=received, deliveries_per_s=received / window if window else None,
                  lost=max(0, wanted - received), out_of_order=sum(r["out_of_order"] for r in reports),
                  latency_p50_us=latency["p50"], latency_p90_us=latency["p90"], latency_p99_us=latency["p99"],
                  latency_max_us=latency["max"], cpu_es_s=cpu_between(before, after),
                  cpu_publishers_s=sum(r.get("cpu", 0.0) for r in pub_reports) if pub_reports else None,
                  cpu_subscribers_s=sum(r.get("cpu", 0.0) for r in reports) if reports else None, extra=extra)
