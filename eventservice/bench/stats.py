"""Statistics of ``es bench``: nearest-rank quantiles, latency sketches and their merging, and
medians over repeated runs.

Standard library only, and no imports from this package: the plain children load this module
without importing eventservice (see :mod:`eventservice.bench.children`), and
:mod:`eventservice.looplag` takes its :func:`quantile` from here.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

LATENCY_POINTS = 1000  # quantiles a subscriber reports, for merging

# figures whose worst run (the largest) is the summary, not the median
WORST_OF_RUNS = ("lost", "out_of_order", "duplicates_or_extra", "unpublished")


def quantile(ordered: Sequence[float], q: float) -> Optional[float]:
    """Nearest-rank ``q`` quantile (0..1) of an ascending sequence; None when it is empty."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def quantile_points(values: Sequence[float], points: int = LATENCY_POINTS) -> List[float]:
    """``points + 1`` evenly spaced quantiles (0 .. 1) of ``values``; a compact sketch that
    sketches of other processes can be merged with (weighted by their counts)."""
    if not values:
        return []
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, round(i * (len(ordered) - 1) / points))] for i in range(points + 1)]


def merge_latency(reports: Iterable[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """p50/p90/p99/max (µs) over the latency sketches of reports (``lat_n``, ``lat_points``,
    ``lat_p50`` ... ``lat_max``); one report's own quantiles are taken as they are."""
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


def median(values: Iterable[Any]) -> Any:
    """The median of the numbers among ``values`` (None, strings and booleans left out);
    None when there are none."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return None
    return statistics.median(numbers)


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One summary of repeated runs: the median of each number, the worst run for loss and
    order (:data:`WORST_OF_RUNS`), every distinct problem, and the last run's other values."""
    keys: List[str] = []
    for run in runs:
        keys += [k for k in run if k not in keys]
    summary: Dict[str, Any] = {}
    for key in keys:
        values = [run.get(key) for run in runs]
        if key in WORST_OF_RUNS:
            numbers = [v for v in values if isinstance(v, (int, float))]
            summary[key] = max(numbers) if numbers else None
        elif key == "problems":
            summary[key] = sorted({p for run in runs for p in run.get("problems", [])})
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None):
            summary[key] = median(values)
        else:
            summary[key] = values[-1]
    return summary
