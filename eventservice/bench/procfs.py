"""What ``es bench`` reads of a process from /proc (Linux): CPU seconds, threads, resident
memory. Elsewhere, or for a process that is gone, every figure is None."""

from __future__ import annotations

import os
import threading
from typing import Dict, Optional

Sample = Dict[str, Optional[float]]  # "cpu" (seconds, user + system), "threads", "rss_mb"


def proc_sample(pid: Optional[int]) -> Sample:
    """CPU seconds (user + system), thread count and resident memory (MB) of ``pid``; None
    for what cannot be read (not Linux, no such process, or no pid)."""
    result: Sample = {"cpu": None, "threads": None, "rss_mb": None}
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


def cpu_between(before: Sample, after: Sample) -> Optional[float]:
    """CPU seconds a process used between two samples (None where unknown)."""
    if after["cpu"] is None or before["cpu"] is None:
        return None
    return after["cpu"] - before["cpu"]


class Monitor:
    """Samples a process's threads and memory every ``interval`` seconds while a run goes on
    (from a thread of its own, until :meth:`close`); keeps the peaks."""

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

    def sample(self) -> Sample:
        """Sample now (also counted in the peaks)."""
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
