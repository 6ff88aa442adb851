"""The matching core: which subscribers want an event on a subject.

Pure data, no sockets. Subscribers are opaque hashable keys (the service uses the
subscriber's URI string). Exact subjects are case-insensitive (``str.casefold``);
patterns follow :mod:`eventservice.patterns`. A subscription may carry options: a work
queue ``group`` (an event goes to one member of each group) and a content ``filter``.

The answer for a subject is a :class:`Route`, computed once per subject as spelled and
cached until the next change: the keys that get every event on it (each once, however
many subscriptions match), the keys that get it only if a filter passes, and the groups.

Thread-safety: every method may be called from any thread. ``route`` takes no lock on a
cache hit.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, FrozenSet, Hashable, Iterable, List, Optional, Set, Tuple

from .filters import Filter
from .patterns import Pattern

MAX_CACHED_SUBJECTS = 100_000  # distinct subjects remembered before the cache starts over


class Options:
    """What a subscription carries besides its subject: a group and a filter (both optional)."""

    __slots__ = ("group", "filter", "spec")

    def __init__(self, group: Optional[str] = None, filter: Optional[Filter] = None, spec: Any = None) -> None:
        self.group = group
        self.filter = filter
        self.spec = spec  # the filter as given, for reporting


PLAIN = Options()  # no group, no filter


class Route:
    """Who gets an event on one subject.

    ``plain``: keys that get every event; ``conditional``: (key, filters) for keys that get
    an event when any of their filters passes; ``groups``: (group, members) where members
    are (key, filter or None) and one passing member gets the event; ``keys``: all keys."""

    __slots__ = ("plain", "conditional", "groups", "indexed", "keys", "simple")

    def __init__(self, plain: FrozenSet[Hashable], conditional: Tuple[Tuple[Hashable, Tuple[Filter, ...]], ...],
                 groups: Tuple[Tuple[str, Tuple[Tuple[Hashable, Optional[Filter]], ...]], ...],
                 indexed: Tuple[Tuple[Callable[[Any], Any], Dict[Any, Tuple[Hashable, ...]]], ...] = ()) -> None:
        self.plain = plain
        self.conditional = conditional
        self.groups = groups
        self.indexed = indexed  # (getter of a field, {value: keys}): keys whose filters are all equalities
        self.keys = plain.union(k for k, _ in conditional).union(k for _, ms in groups for k, _ in ms).union(
            k for _, table in indexed for ks in table.values() for k in ks)
        self.simple = not conditional and not groups and not indexed  # plain get every event, nobody else

NOWHERE = Route(frozenset(), (), ())


class SubscriptionIndex:
    """Exact and pattern subscriptions of all subscribers."""

    def __init__(self, max_subscriptions: int = 10_000) -> None:
        self.max_subscriptions = max_subscriptions
        self._lock = threading.Lock()
        self._exact: Dict[str, Dict[Hashable, Options]] = {}  # casefolded subject -> key -> options
        self._patterns: Dict[str, Tuple[Pattern, Dict[Hashable, Options]]] = {}  # source -> (pattern, ...)
        self._subjects_of: Dict[Hashable, Set[str]] = {}  # key -> casefolded subjects
        self._patterns_of: Dict[Hashable, Set[str]] = {}  # key -> pattern sources
        self._cache: Dict[str, Route] = {}

    # -- changes -------------------------------------------------------------------------
    def add_subjects(self, key: Hashable, subjects: Iterable[str], options: Options = PLAIN) -> None:
        """Subscribe ``key`` to exact subjects (case-insensitive); a subject it holds
        already takes the new ``options``. ValueError past the subscription limit."""
        folded = {subject.casefold() for subject in subjects}
        with self._lock:
            mine = self._subjects_of.get(key, set())
            self._check_limit(key, len(folded - mine))
            for subject in folded:
                self._exact.setdefault(subject, {})[key] = options
            self._subjects_of[key] = mine | folded
            self._changed()

    def add_patterns(self, key: Hashable, patterns: Iterable[Pattern], options: Options = PLAIN) -> None:
        """Subscribe ``key`` to compiled patterns, like :meth:`add_subjects`."""
        patterns = list(patterns)
        sources = {p.source for p in patterns}
        with self._lock:
            mine = self._patterns_of.get(key, set())
            self._check_limit(key, len(sources - mine))
            for pattern in patterns:
                entry = self._patterns.get(pattern.source)
                if entry is None:
                    entry = self._patterns[pattern.source] = (pattern, {})
                entry[1][key] = options
            self._patterns_of[key] = mine | sources
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
                    self._drop_exact(folded, key)
                if name in patterns:
                    patterns.discard(name)
                    self._drop_pattern(name, key)
            if not subjects:
                self._subjects_of.pop(key, None)
            if not patterns:
                self._patterns_of.pop(key, None)
            self._changed()

    def remove_subscriber(self, key: Hashable) -> bool:
        """Remove every subscription of ``key``; True if it had any."""
        with self._lock:
            subjects = self._subjects_of.pop(key, set())
            patterns = self._patterns_of.pop(key, set())
            for subject in subjects:
                self._drop_exact(subject, key)
            for source in patterns:
                self._drop_pattern(source, key)
            self._changed()
            return bool(subjects or patterns)

    # -- questions -----------------------------------------------------------------------
    def route(self, subject: str) -> Route:
        """Who gets an event on ``subject``."""
        found = self._cache.get(subject)
        if found is None:
            with self._lock:
                found = self._compute(subject)
                if len(self._cache) >= MAX_CACHED_SUBJECTS:
                    self._cache = {}
                self._cache[subject] = found
        return found

    def match(self, subject: str) -> FrozenSet[Hashable]:
        """The keys holding a subscription that matches ``subject``, each once."""
        return self.route(subject).keys

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
    def _compute(self, subject: str) -> Route:
        found: List[Tuple[Hashable, Options]] = list(self._exact.get(subject.casefold(), {}).items())
        if self._patterns:
            lowered = subject.lower()
            for pattern, holders in self._patterns.values():
                if lowered.startswith(pattern.literal_prefix) and pattern.match(subject):
                    found.extend(holders.items())
        if not found:
            return NOWHERE
        plain: Set[Hashable] = set()
        filtered: Dict[Hashable, List[Filter]] = {}
        groups: Dict[str, Dict[Hashable, Optional[Filter]]] = {}
        for key, options in found:
            if options.group is not None:
                members = groups.setdefault(options.group, {})
                if key not in members or members[key] is not None:
                    members[key] = options.filter  # an unfiltered membership wins
            elif options.filter is None:
                plain.add(key)
            else:
                filtered.setdefault(key, []).append(options.filter)
        conditional = []
        by_field: Dict[str, Tuple[Callable[[Any], Any], Dict[Any, List[Hashable]]]] = {}
        for key, fs in filtered.items():
            if key in plain:
                continue
            if all(getattr(f, "equality", None) for f in fs):  # looked up once per event, not run
                for f in fs:
                    field, getter, value = f.equality  # type: ignore[attr-defined]
                    by_field.setdefault(field, (getter, {}))[1].setdefault(value, []).append(key)
            else:
                conditional.append((key, tuple(fs)))
        indexed = tuple((getter, {value: tuple(keys) for value, keys in table.items()})
                        for getter, table in by_field.values())
        grouped = tuple((name, tuple(members.items())) for name, members in sorted(groups.items()))
        return Route(frozenset(plain), tuple(conditional), grouped, indexed)

    def _check_limit(self, key: Hashable, new: int) -> None:
        held = len(self._subjects_of.get(key, ())) + len(self._patterns_of.get(key, ()))
        if held + new > self.max_subscriptions:
            raise ValueError(f"too many subscriptions for one subscriber (limit {self.max_subscriptions})")

    def _drop_exact(self, subject: str, key: Hashable) -> None:
        holders = self._exact.get(subject)
        if holders is not None:
            holders.pop(key, None)
            if not holders:
                del self._exact[subject]

    def _drop_pattern(self, source: str, key: Hashable) -> None:
        entry = self._patterns.get(source)
        if entry is not None:
            entry[1].pop(key, None)
            if not entry[1]:
                del self._patterns[source]

    def _changed(self) -> None:
        self._cache = {}
