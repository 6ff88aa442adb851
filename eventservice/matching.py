"""The matching core: which subscribers want an event on a subject.

Pure data, no sockets. Subscribers are opaque hashable keys (the service uses the
subscriber's URI string). Exact subjects are case-insensitive (``str.casefold``);
patterns follow :mod:`eventservice.patterns`. The answer for a subject is a frozenset,
so a subscriber matched by several subscriptions is named once; answers are cached per
subject as spelled and the cache is dropped on every change.

Thread-safety: every method may be called from any thread. ``match`` takes no lock on a
cache hit.
"""

from __future__ import annotations

import threading
from typing import Dict, FrozenSet, Hashable, Iterable, List, Set, Tuple

from .patterns import Pattern, compile_pattern

MAX_CACHED_SUBJECTS = 100_000  # distinct subjects remembered before the cache starts over

_NOBODY: FrozenSet[Hashable] = frozenset()


class SubscriptionIndex:
    """Exact and pattern subscriptions of all subscribers."""

    def __init__(self, max_subscriptions: int = 10_000) -> None:
        self.max_subscriptions = max_subscriptions
        self._lock = threading.Lock()
        self._exact: Dict[str, Set[Hashable]] = {}  # casefolded subject -> keys
        self._patterns: Dict[str, Tuple[Pattern, Set[Hashable]]] = {}  # source -> (pattern, keys)
        self._subjects_of: Dict[Hashable, Set[str]] = {}  # key -> casefolded subjects
        self._patterns_of: Dict[Hashable, Set[str]] = {}  # key -> pattern sources
        self._cache: Dict[str, FrozenSet[Hashable]] = {}

    # -- changes -------------------------------------------------------------------------
    def add_subjects(self, key: Hashable, subjects: Iterable[str]) -> None:
        """Subscribe ``key`` to exact subjects (validated str, case-insensitive)."""
        folded = {subject.casefold() for subject in subjects}
        with self._lock:
            mine = self._subjects_of.get(key, set())
            self._check_limit(key, len(folded - mine), 0)
            for subject in folded:
                self._exact.setdefault(subject, set()).add(key)
            self._subjects_of[key] = mine | folded
            self._changed()

    def add_patterns(self, key: Hashable, patterns: Iterable[Pattern]) -> None:
        """Subscribe ``key`` to compiled patterns."""
        patterns = list(patterns)
        with self._lock:
            mine = self._patterns_of.get(key, set())
            self._check_limit(key, 0, len({p.source for p in patterns} - mine))
            for pattern in patterns:
                entry = self._patterns.get(pattern.source)
                if entry is None:
                    entry = self._patterns[pattern.source] = (pattern, set())
                entry[1].add(key)
            self._patterns_of[key] = mine | {p.source for p in patterns}
            self._changed()

    def remove(self, key: Hashable, names: Iterable[str]) -> None:
        """Remove exact subscriptions (case-insensitive) and pattern subscriptions (same
        string) of ``key``. Names it does not hold are ignored."""
        with self._lock:
            subjects = self._subjects_of.get(key, set())
            patterns = self._patterns_of.get(key, set())
            for name in names:
                folded = name.casefold()
                if folded in subjects:
                    subjects.discard(folded)
                    self._discard(self._exact, folded, key)
                if name in patterns:
                    patterns.discard(name)
                    entry = self._patterns[name]
                    entry[1].discard(key)
                    if not entry[1]:
                        del self._patterns[name]
            self._forget_if_empty(key)
            self._changed()

    def remove_subscriber(self, key: Hashable) -> bool:
        """Remove every subscription of ``key``; True if it had any."""
        with self._lock:
            subjects = self._subjects_of.pop(key, set())
            patterns = self._patterns_of.pop(key, set())
            for subject in subjects:
                self._discard(self._exact, subject, key)
            for source in patterns:
                entry = self._patterns[source]
                entry[1].discard(key)
                if not entry[1]:
                    del self._patterns[source]
            self._changed()
            return bool(subjects or patterns)

    # -- questions -----------------------------------------------------------------------
    def match(self, subject: str) -> FrozenSet[Hashable]:
        """The keys that want an event on ``subject``, each once."""
        found = self._cache.get(subject)
        if found is None:
            with self._lock:
                found = self._compute(subject)
                if len(self._cache) >= MAX_CACHED_SUBJECTS:
                    self._cache = {}
                self._cache[subject] = found
        return found

    def has(self, key: Hashable) -> bool:
        """True if ``key`` holds at least one subscription."""
        return key in self._subjects_of or key in self._patterns_of

    def interest(self) -> Tuple[FrozenSet[str], bool]:
        """(the casefolded exact subjects anyone holds, whether anyone holds a pattern):
        what this index wants from elsewhere."""
        with self._lock:
            return frozenset(self._exact), bool(self._patterns)

    def subscribers(self) -> Set[Hashable]:
        """Keys with at least one subscription."""
        with self._lock:
            return set(self._subjects_of) | set(self._patterns_of)

    def subscriptions_of(self, key: Hashable) -> Tuple[List[str], List[str]]:
        """(casefolded exact subjects, pattern sources) of ``key``."""
        with self._lock:
            return sorted(self._subjects_of.get(key, ())), sorted(self._patterns_of.get(key, ()))

    def counts(self) -> Dict[str, int]:
        """Numbers of subscribers, exact subscriptions and pattern subscriptions."""
        with self._lock:
            keys = set(self._subjects_of) | set(self._patterns_of)
            return {
                "subscribers": len(keys),
                "subject_subscriptions": sum(len(s) for s in self._subjects_of.values()),
                "pattern_subscriptions": sum(len(p) for p in self._patterns_of.values()),
            }

    # -- insides -------------------------------------------------------------------------
    def _compute(self, subject: str) -> FrozenSet[Hashable]:
        keys: Set[Hashable] = set(self._exact.get(subject.casefold(), ()))
        if self._patterns:
            lowered = subject.lower()
            for pattern, holders in self._patterns.values():
                if holders <= keys or not lowered.startswith(pattern.literal_prefix):
                    continue
                if pattern.match(subject):
                    keys |= holders
        return frozenset(keys) if keys else _NOBODY

    def _check_limit(self, key: Hashable, new_subjects: int, new_patterns: int) -> None:
        held = len(self._subjects_of.get(key, ())) + len(self._patterns_of.get(key, ()))
        if held + new_subjects + new_patterns > self.max_subscriptions:
            raise ValueError(f"too many subscriptions for one subscriber (limit {self.max_subscriptions})")

    def _forget_if_empty(self, key: Hashable) -> None:
        if not self._subjects_of.get(key):
            self._subjects_of.pop(key, None)
        if not self._patterns_of.get(key):
            self._patterns_of.pop(key, None)

    @staticmethod
    def _discard(table: Dict[str, Set[Hashable]], name: str, key: Hashable) -> None:
        holders = table.get(name)
        if holders is not None:
            holders.discard(key)
            if not holders:
                del table[name]

    def _changed(self) -> None:
        self._cache = {}
