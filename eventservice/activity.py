"""Events published per subject, for the service's ``subjects()``: how many, and how fast.

Cheap on the publish path: :meth:`SubjectActivity.count` is one C-level count per batch
(``collections.Counter.update``). Bounded: at most ``capacity`` subjects are remembered;
past that the least active (lowest recent rate, then fewest events) are forgotten. Subjects
are counted case-insensitively, under the spelling seen first.

Rates are events per second over the last window: a window ends when a caller asks and it
is at least :data:`MIN_WINDOW` seconds old, after :data:`MAX_WINDOW` seconds, or when it has
seen ``capacity`` distinct spellings. Not thread-safe: the service calls it under its
counter lock.
"""

from __future__ import annotations

import collections
import heapq
import time
from typing import Callable, Dict, Iterable, List, Tuple

DEFAULT_CAPACITY = 10_000  # subjects remembered at most
MIN_WINDOW = 1.0  # seconds: a window younger than this is not ended by a question
MAX_WINDOW = 10.0  # seconds: a window is ended by the next publish after this long


class _Entry:
    __slots__ = ("spelling", "events", "rate")

    def __init__(self, spelling: str) -> None:
        self.spelling = spelling
        self.events = 0
        self.rate = 0.0


class SubjectActivity:
    """Per-subject event counts and rates (see the module)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._clock = clock
        self._window: "collections.Counter[str]" = collections.Counter()  # spelling -> events this window
        self._window_start = clock()
        self._entries: Dict[str, _Entry] = {}  # casefolded subject -> its counts

    def count(self, subjects: Iterable[str]) -> None:
        """Count one event per subject in ``subjects`` (one batch)."""
        self._window.update(subjects)
        if len(self._window) >= self.capacity or self._clock() - self._window_start >= MAX_WINDOW:
            self._end_window()

    def snapshot(self) -> List[Tuple[str, int, float]]:
        """(subject, events, events per second) of every remembered subject."""
        if self._clock() - self._window_start >= MIN_WINDOW:
            self._end_window()
        pending: Dict[str, int] = {}
        for spelling, n in self._window.items():  # this window's events count at once, its rate later
            folded = spelling.casefold()
            pending[folded] = pending.get(folded, 0) + n
        result = [(e.spelling, e.events + pending.pop(folded, 0), e.rate) for folded, e in self._entries.items()]
        for spelling, n in self._window.items():
            n = pending.pop(spelling.casefold(), 0)
            if n:
                result.append((spelling, n, 0.0))
        return result

    def _end_window(self) -> None:
        now = self._clock()
        elapsed = max(now - self._window_start, 1e-9)
        window, self._window, self._window_start = self._window, collections.Counter(), now
        recent: Dict[str, int] = {}
        entries = self._entries
        for spelling, n in window.items():
            folded = spelling.casefold()
            entry = entries.get(folded)
            if entry is None:
                entry = entries[folded] = _Entry(spelling)
            entry.events += n
            recent[folded] = recent.get(folded, 0) + n
        for folded, entry in entries.items():
            entry.rate = recent.get(folded, 0) / elapsed
        if len(entries) > self.capacity:
            kept = heapq.nlargest(self.capacity, entries.items(), key=lambda item: (item[1].rate, item[1].events))
            self._entries = dict(kept)
