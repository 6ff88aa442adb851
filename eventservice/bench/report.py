"""What ``es bench`` prints: the summary of each scenario over its runs (medians, and the
ratios to reference scenarios), as a table or as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

from .scenarios import SCENARIOS, WORKQUEUE_MEMBERS
from .stats import median, summarize

# per scenario: name, description, spec, runs (each a Result.as_dict() and its number),
# median (the summary), and error/errors when runs failed
Results = Dict[str, Dict[str, Any]]


def summarize_results(results: Results) -> List[str]:
    """Set each scenario's ``median`` (see :func:`.stats.summarize`), add the ratios to the
    references to each run and summary, and return every problem, named by scenario."""
    for result in results.values():
        result["median"] = summarize(result["runs"]) if result["runs"] else {}
    _add_ratios({n: r for n, r in results.items() if r["runs"]})
    return sorted({f"{n}: {p}" for n, r in results.items() for p in r["median"].get("problems", [])})


def _add_ratios(results: Results) -> None:
    """Per run i: events/s of the scenario / of its reference's run i (and, across a backbone,
    the p50 latency above the reference's; with users, the es's CPU seconds over the
    reference's), under the scenario's ratio field; the median of those in the summary."""
    for name, result in results.items():
        scenario = SCENARIOS[name]
        ref, field = scenario.reference, scenario.ratio_field
        if ref is None or field is None or ref not in results:
            continue
        for run, ref_run in zip(result["runs"], results[ref]["runs"]):
            a, b = run.get("events_per_s"), ref_run.get("events_per_s")
            run[field] = a / b if a and b else None
            if scenario.mix.cross:
                a, b = run.get("latency_p50_us"), ref_run.get("latency_p50_us")
                run["p50_above_single_us"] = a - b if a is not None and b is not None else None
            if scenario.mix.users:  # what a shared machine's noise moves least: the es's own CPU seconds
                a, b = run.get("cpu_es_s"), ref_run.get("cpu_es_s")
                run["cpu_es_ratio_to_no_users"] = a / b if a and b else None
        extra = ("p50_above_single_us",) if scenario.mix.cross else ("cpu_es_ratio_to_no_users",) \
            if scenario.mix.users else ()
        for key in (field,) + extra:
            result["median"][key] = median(r.get(key) for r in result["runs"])


def fmt(value: Any, digits: int = 0) -> str:
    """A figure for the table: "-" for None, thousands separated, ``digits`` decimals."""
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def notes(name: str, m: Dict[str, Any]) -> str:
    """The notes column of scenario ``name`` with summary ``m``."""
    parts = []
    if m.get("ratio_to_s1") is not None:
        parts.append(f"x{m['ratio_to_s1']:.2f} of s1")
    if m.get("ratio_to_raw") is not None:
        parts.append(f"x{m['ratio_to_raw']:.2f} of raw")
    if m.get("ratio_to_no_users") is not None:
        parts.append(f"x{m['ratio_to_no_users']:.2f} of {SCENARIOS[name].reference} (without users)")
    if m.get("cpu_es_ratio_to_no_users") is not None:
        parts.append(f"es CPU x{m['cpu_es_ratio_to_no_users']:.2f} of {SCENARIOS[name].reference}'s")
    if m.get("ratio_to_single") is not None:
        parts.append(f"x{m['ratio_to_single']:.2f} of {SCENARIOS[name].reference}")
    if name == "s3-cross" and m.get("p50_above_single_us") is not None:
        parts.append(f"p50 {m['p50_above_single_us']:+,.0f} µs over s3")
    if "idle_received" in m:
        parts.append(f"backbone: sent {fmt(m.get('backbone_sent'))} in {fmt(m.get('backbone_messages_sent'))} "
                     f"messages, failed {fmt(m.get('backbone_failed'))}; the es with no subscriber received "
                     f"{fmt(m['idle_received'])}; cpu es = all three")
    if m.get("healthy_ratio_to_ref") is not None:
        parts.append(f"healthy x{m['healthy_ratio_to_ref']:.2f} of s2-ref")
    if "frozen_dropped" in m:
        parts.append(f"frozen dropped {fmt(m['frozen_dropped'])} (queued {fmt(m.get('frozen_queued'))})")
    if m.get("healthy_dropped"):
        parts.append(f"healthy dropped {fmt(m['healthy_dropped'])}")
    if m.get("es_rss_subscribed_mb") is not None:  # fanout
        parts.append(f"es threads {fmt(m.get('es_threads_before'))}->{fmt(m.get('es_threads_after'))} "
                     f"(max {fmt(m.get('es_threads_max'))}); RSS {fmt(m.get('es_rss_before_mb'), 1)} MB -> "
                     f"{fmt(m.get('es_rss_subscribed_mb'), 1)} MB with "
                     f"{fmt(m.get('es_subject_subscriptions'))} subscriptions")
    if SCENARIOS[name].note:
        parts.append(SCENARIOS[name].note)
    if "smallest_share" in m:  # workqueue
        parts.append(f"{WORKQUEUE_MEMBERS} members, the smallest share {fmt(m.get('smallest_share'))}")
    if m.get("unpublished"):
        parts.append(f"{fmt(m['unpublished'])} not published")
    if m.get("problems"):
        parts.append(f"{len(m['problems'])} problem(s)")
    return "; ".join(parts)


def table(results: Results, repeat: int) -> str:
    """The table of every scenario's summary, one row each, and a line saying what it shows."""
    header = ["scenario", "events/s", "deliv/s", "p50 µs", "p90 µs", "p99 µs", "max µs", "lost", "ooo",
              "cpu es", "cpu pub", "cpu sub", "notes"]
    rows = [header]
    for name, result in results.items():
        m = result["median"]
        if "error" in result and not result["runs"]:
            rows.append([name] + ["-"] * 11 + [f"failed: {result['error']}"])
            continue
        rows.append([name, fmt(m.get("events_per_s")), fmt(m.get("deliveries_per_s")),
                     fmt(m.get("latency_p50_us")), fmt(m.get("latency_p90_us")), fmt(m.get("latency_p99_us")),
                     fmt(m.get("latency_max_us")), fmt(m.get("lost")), fmt(m.get("out_of_order")),
                     fmt(m.get("cpu_es_s"), 2), fmt(m.get("cpu_publishers_s"), 2),
                     fmt(m.get("cpu_subscribers_s"), 2), notes(name, m)])
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


def json_text(results: Results, problems: List[str], repeat: int, esuri: Optional[str], es_options: List[str],
              seconds: float) -> str:
    """The whole outcome as indented JSON: the settings, every scenario, every problem."""
    import Pyro5
    out = {"repeat": repeat, "python": sys.version.split()[0], "pyro5": Pyro5.__version__, "esuri": esuri,
           "es_options": es_options, "seconds": seconds, "scenarios": results, "problems": problems}
    return json.dumps(out, indent=2, default=str)
