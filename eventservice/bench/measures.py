"""How each kind of scenario is measured (:data:`MEASURES`, by :attr:`Mix.kind`), but for
publish/subscribe, which has :mod:`.pubsub` to itself. Each function takes a :class:`Run`,
starts what it needs through it, and returns the run's :class:`Result`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from .children import Child
from .procfs import cpu_between, proc_sample
from .pubsub import measure_pubsub
from .result import Result
from .run import Run
from .stats import merge_latency

LOOPLAG_RATE = 10_000  # events/s arriving while the loop's lag is measured
LOOPLAG_SECONDS = 5.0
REQUEST_SUBJECT = "bench.request"


def call_result(run: Run, client: Child, service_cpu: Optional[float]) -> Result:
    """The result of a run whose client made one call per event (no subscriber): calls/s."""
    report = client.report or {}
    sent = report.get("sent", 0)
    duration = (report["end"] - report["start"]) if report.get("end") else None
    if report.get("error"):
        run.problems.append(f"{client.name}: {report['error']}")
    return Result(events=sent, events_per_s=sent / duration if duration else None, duration_s=duration,
                  lost=run.mix.events - sent, cpu_es_s=service_cpu, cpu_publishers_s=report.get("cpu"))


def measure_raw(run: Run) -> Result:
    """A plain Pyro5 client calling a no-op of a plain Pyro5 daemon: no es at all."""
    server = run.spawn("raw-server", "raw-server", {})
    run.wait_ready([server])
    client = run.spawn("raw-client", "raw-client", {"uri": server.uris[0], "events": run.mix.events})
    run.wait_ready([client])
    run.drive(client, "raw client")
    server.send("stop")
    run.wait_reports([server], 5)
    return call_result(run, client, server.report.get("cpu") if server.report else None)


def measure_plain_publish(run: Run) -> Result:
    """A plain Pyro5 client calling the service's publish(), one event per call."""
    run.start_es()
    client = run.spawn("plain-publisher", "plain-publisher",
                       {"events": run.mix.events, "payload_size": run.mix.payload_size})
    run.wait_ready([client])
    before = proc_sample(run.es_pid)
    run.drive(client, "plain publisher")
    result = call_result(run, client, cpu_between(before, proc_sample(run.es_pid)))
    if client.report and client.report.get("eventservice_imported"):
        run.problems.append("plain publisher imported eventservice")
    return result


def measure_request(run: Run) -> Result:
    """Round trips: one requester asking one responder, one request at a time."""
    run.start_es()
    responder = run.spawn("responder", "responder", {"subject": REQUEST_SUBJECT})
    run.wait_ready([responder])
    client = run.spawn("requester", "requester", {"subject": REQUEST_SUBJECT, "events": run.mix.events})
    run.wait_ready([client])
    before = proc_sample(run.es_pid)
    run.drive(client, "requester")
    after = proc_sample(run.es_pid)
    responder.send("stop")
    run.wait_reports([responder], 5)
    result = call_result(run, client, cpu_between(before, after))
    latency = merge_latency([client.report or {}])
    result.latency_p50_us, result.latency_p90_us = latency["p50"], latency["p90"]
    result.latency_p99_us, result.latency_max_us = latency["p99"], latency["max"]
    result.cpu_subscribers_s = (responder.report or {}).get("cpu")
    return result


def measure_workqueue(run: Run) -> Result:
    """One batched publisher, N members of one group: each event to exactly one member."""
    run.start_es()
    events = run.mix.events
    members = [run.spawn(f"member-{n}", "member", {"group": "bench-workers"}) for n in range(run.mix.subscribers)]
    run.wait_ready(members)
    pub = run.spawn("publisher", "publisher", {"events": events, "batch": True, "rate": None,
                                               "payload_size": run.mix.payload_size, "pub": None})
    run.wait_ready([pub])
    before = proc_sample(run.es_pid)
    run.go([pub])

    def total() -> int:
        return sum((m.progress or 0) for m in members)
    if not run.wait(lambda: total() >= events, run.timeout):
        run.problems.append(f"members got {total()} of {events} events before the timeout")
    after = proc_sample(run.es_pid)
    for child in members:
        child.send("stop")
    run.wait_reports(members + [pub], 10)
    reports = [m.report or {} for m in members]
    received = sum(r.get("received", 0) for r in reports)
    start = (pub.report or {}).get("start")
    last = max((r.get("last", 0) for r in reports), default=0)
    duration = last - start if start else None
    if not all(r.get("in_order") for r in reports):
        run.problems.append("a member got its share out of order")
    if sum(r.get("distinct", 0) for r in reports) != received:
        run.problems.append("a member got an event twice")
    shares = [r.get("received", 0) for r in reports]
    rate = received / duration if duration else None
    return Result(events=received, events_per_s=rate, duration_s=duration, deliveries=received,
                  deliveries_per_s=rate, lost=events - received, cpu_es_s=cpu_between(before, after),
                  cpu_publishers_s=(pub.report or {}).get("cpu"),
                  cpu_subscribers_s=sum(r.get("cpu", 0) for r in reports),
                  extra={"smallest_share": min(shares) if shares else 0})


def measure_looplag(run: Run) -> Result:
    """The lag of an asyncio loop while 10,000 events/s arrive at an AsyncSubscriber."""
    from ..looplag import measure_loop_lag

    run.start_es()
    found = measure_loop_lag(run.esuri, ident=run.options.ident, rate=LOOPLAG_RATE, seconds=LOOPLAG_SECONDS,
                             repeat=1)

    def us(key: str) -> Optional[float]:
        return found[key] * 1000 if found.get(key) is not None else None
    return Result(events_per_s=found.get("achieved_rate"), duration_s=LOOPLAG_SECONDS,
                  lost=found.get("dropped", 0), latency_p50_us=us("p50_ms"), latency_p99_us=us("p99_ms"),
                  latency_max_us=us("max_ms"))


MEASURES: Dict[str, Callable[[Run], Result]] = {
    "pubsub": measure_pubsub, "fanout": measure_pubsub, "raw": measure_raw,
    "plain-publish": measure_plain_publish, "request": measure_request, "workqueue": measure_workqueue,
    "looplag": measure_looplag,
}
