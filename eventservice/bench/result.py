"""What one run of a scenario measured: :class:`Result`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class Result:
    """The figures of one run. The first fields are every scenario's (None where a kind of
    scenario has no such figure); ``extra`` holds those of one kind (publish rate,
    subscribers, the service's counters, memory, backbone, frozen subscribers, ...), under
    the names of the JSON output.

    events/s = events published / (first publish -> last arrival); deliveries/s = events
    received by all (healthy) subscribers over the same window; latency = arrival time - the
    publisher's stamp (µs); cpu: seconds of the es, the publishers and the subscribers."""

    events: Optional[int] = None
    events_per_s: Optional[float] = None
    duration_s: Optional[float] = None
    deliveries: Optional[int] = None
    deliveries_per_s: Optional[float] = None
    lost: int = 0
    out_of_order: int = 0
    latency_p50_us: Optional[float] = None
    latency_p90_us: Optional[float] = None
    latency_p99_us: Optional[float] = None
    latency_max_us: Optional[float] = None
    cpu_es_s: Optional[float] = None
    cpu_publishers_s: Optional[float] = None
    cpu_subscribers_s: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    es_warnings: int = 0  # WARNING lines in the es's log
    es_warning_sample: List[str] = field(default_factory=list)  # the first three of them

    def as_dict(self) -> Dict[str, Any]:
        """The run as the JSON output has it: the common figures, then ``extra``'s, then the
        problems and warnings (``es_warning_sample`` only when there are warnings)."""
        common = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("extra", "problems", "es_warnings", "es_warning_sample")}
        out = {**common, **self.extra, "problems": list(self.problems), "es_warnings": self.es_warnings}
        if self.es_warning_sample:
            out["es_warning_sample"] = list(self.es_warning_sample)
        return out
