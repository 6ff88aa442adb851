"""The matching core: which subscribers want an event on a subject.

Pure data, no sockets. Subscribers are opaque hashable keys (the service uses the
subscriber's URI string). Exact subjects are case-insensitive (``str.casefold``);
patterns follow :mod:`eventservice.patterns`. A subscription may carry options: a work
queue ``group`` (an event goes to one member of each group) and a content ``filter``.

The answer for a subject is a :class:`~eventservice.routing.Route`, cached per subject as
spelled (:class:`~eventservice.routing.Router` turns it and a message into subscribers). Routing cost
is paid by whoever causes it:

- **a change patches the cache, it never empties it**: a new or removed exact subject
  touches only the cached spellings of that subject; a new pattern is matched, by the
  subscribing caller, against the cached subjects its literal prefix allows, and patches
  those it matches; a removed pattern patches the subjects it had matched. Publishers on
  other subjects keep their cached routes and pay nothing.
- **a fresh subject** is matched only against the patterns whose literal prefix it starts
  with (an index by prefix), by the publishing caller, outside the index lock.
- **budgets per subscriber**: the matching work of its patterns (:attr:`Pattern.cost`) and
  the conditions of its filters are bounded; a change beyond them raises ``ValueError``
  naming the limit and changes nothing.

Admission: with :attr:`SubscriptionIndex.admit` set (``es --users``), a route leaves out the
subscribers that may not receive its subject; asked when the route is built, so once per
(subscriber, subject) until the route is patched or :meth:`~SubscriptionIndex.forget_routes`.

Thread-safety: every method may be called from any thread. ``route`` takes no lock on a
cache hit, and never matches a pattern while holding the lock.
"""

from __future__ import annotations

import itertools
import threading
from typing import Callable, Dict, FrozenSet, Hashable, Iterable, List, Optional, Set, Tuple

from .patterns import Pattern, fold
from .routing import NOWHERE, PLAIN, Options, Route

MAX_CACHED_SUBJECTS = 100_000  # distinct subjects remembered before the cache starts over
UNLIMITED = 1 << 62


class _PatternEntry:
    __slots__ = ("pattern", "holders")

    def __init__(self, pattern: Pattern) -> None:
        self.pattern = pattern
        self.holders: Dict[Hashable, Options] = {}


class _Cached:
    """A cached subject: the pattern sources it matches and its route (None: to rebuild)."""

    __slots__ = ("sources", "route", "seq")

    def __init__(self, sources: Set[str], seq: int) -> None:
        self.sources = sources
        self.route: Optional[Route] = None
        self.seq = seq


class _View:
    """The patterns by literal prefix, read by matching without the lock: changed in place
    (under the index lock) by replacing whole tuples, which a reader sees whole or not at all."""

    __slots__ = ("by_prefix", "lengths", "_count")

    def __init__(self) -> None:
        self.by_prefix: Dict[str, Tuple[Tuple[str, Pattern], ...]] = {}
        self.lengths: Tuple[int, ...] = ()  # the lengths of the prefixes in use, ascending
        self._count: Dict[int, int] = {}

    def add(self, source: str, pattern: Pattern) -> None:
        prefix = pattern.literal_prefix
        self.by_prefix[prefix] = self.by_prefix.get(prefix, ()) + ((source, pattern),)
        self._count[len(prefix)] = self._count.get(len(prefix), 0) + 1
        if self._count[len(prefix)] == 1:
            self.lengths = tuple(sorted(self._count))

    def remove(self, source: str, pattern: Pattern) -> None:
        prefix = pattern.literal_prefix
        left = tuple(item for item in self.by_prefix.get(prefix, ()) if item[0] != source)
        if left:
            self.by_prefix[prefix] = left
        else:
            self.by_prefix.pop(prefix, None)
        self._count[len(prefix)] -= 1
        if not self._count[len(prefix)]:
            del self._count[len(prefix)]
            self.lengths = tuple(sorted(self._count))

    def matches(self, subject: str) -> Set[str]:
        """The sources of the patterns that match ``subject``."""
        found: Set[str] = set()
        lengths = self.lengths
        if not lengths:
            return found
        lowered = fold(subject)
        get = self.by_prefix.get
        for length in lengths:
            if length > len(lowered):
                break
            for source, pattern in get(lowered[:length], ()):
                if pattern.match(subject):
                    found.add(source)
        return found


def _group_by_prefix(patterns: Iterable[Pattern]) -> Dict[str, List[Pattern]]:
    grouped: Dict[str, List[Pattern]] = {}
    for pattern in patterns:
        grouped.setdefault(pattern.literal_prefix, []).append(pattern)
    return grouped


class Prepared:
    """Patterns matched against the cached subjects of an index (see :meth:`SubscriptionIndex.prepare`)."""

    __slots__ = ("patterns", "hits", "seq")

    def __init__(self, patterns: List[Pattern], hits: Dict[str, List[str]], seq: int) -> None:
        self.patterns, self.hits, self.seq = patterns, hits, seq


# SubscriptionIndex is longer than the ~250 lines a class gets here: the cache and the tables
# it patches must change under one lock, together; what a route is lives in routing.py.
class SubscriptionIndex:
    """Exact and pattern subscriptions of all subscribers (see the module)."""

    def __init__(self, max_subscriptions: int = 10_000, max_pattern_cost: int = UNLIMITED,
                 max_filter_nodes: int = UNLIMITED) -> None:
        self.max_subscriptions = max_subscriptions
        self.max_pattern_cost = max_pattern_cost
        self.max_filter_nodes = max_filter_nodes
        self._lock = threading.Lock()
        self._exact: Dict[str, Dict[Hashable, Options]] = {}  # casefolded subject -> key -> options
        self._patterns: Dict[str, _PatternEntry] = {}  # source -> its pattern and holders
        self._subjects_of: Dict[Hashable, Set[str]] = {}  # key -> casefolded subjects
        self._patterns_of: Dict[Hashable, Set[str]] = {}  # key -> pattern sources
        self._spent: Dict[Hashable, List[int]] = {}  # key -> [pattern cost, filter nodes]
        self._view = _View()
        self._pattern_gen = 0  # changes of the pattern set
        self._cache: Dict[str, _Cached] = {}
        self._spellings: Dict[str, Set[str]] = {}  # casefolded -> cached spellings
        self._matched_by: Dict[str, Set[str]] = {}  # pattern source -> cached subjects it matches
        self._seq = itertools.count(1)
        # (key, subject as published) -> whether that subscriber may receive it; None: all may
        self.admit: Optional[Callable[[Hashable, str], bool]] = None

    # -- changes -------------------------------------------------------------------------
    def add_subjects(self, key: Hashable, subjects: Iterable[str], options: Options = PLAIN) -> None:
        """Subscribe ``key`` to exact subjects (case-insensitive); a subject it holds
        already takes the new ``options``. ValueError past a limit, changing nothing."""
        folded = {subject.casefold() for subject in subjects}
        with self._lock:
            mine = self._subjects_of.get(key, set())
            self._check_limit(key, len(folded - mine))
            old_nodes = sum(self._exact[s][key].nodes for s in folded & mine)
            self._check_budget(key, 0, options.nodes * len(folded) - old_nodes)
            for subject in folded:
                self._exact.setdefault(subject, {})[key] = options
                self._touch_exact(subject)
            self._subjects_of[key] = mine | folded
            self._spend(key, 0, options.nodes * len(folded) - old_nodes)

    def prepare(self, patterns: Iterable[Pattern]) -> "Prepared":
        """Match new patterns against the cached subjects, in the caller's thread and without
        any lock: the costly part of :meth:`add_patterns`, done before taking locks."""
        patterns = list({p.source: p for p in patterns}.values())
        with self._lock:
            fresh = [p for p in patterns if p.source not in self._patterns]
            subjects = list(self._cache)
            seq = next(self._seq)
        return Prepared(patterns, self._match_cached(fresh, subjects), seq)

    def add_patterns(self, key: Hashable, patterns: "Iterable[Pattern] | Prepared", options: Options = PLAIN) -> None:
        """Subscribe ``key`` to compiled patterns (or patterns from :meth:`prepare`), like
        :meth:`add_subjects`."""
        prepared = patterns if isinstance(patterns, Prepared) else self.prepare(patterns)
        patterns, hits, seq = prepared.patterns, prepared.hits, prepared.seq
        sources = {p.source for p in patterns}
        with self._lock:
            mine = self._patterns_of.get(key, set())
            new = sources - mine
            self._check_limit(key, len(new))
            cost = sum(p.cost for p in patterns if p.source in new)
            old_nodes = sum(self._patterns[s].holders[key].nodes for s in sources & mine)
            nodes = options.nodes * len(sources) - old_nodes
            self._check_budget(key, cost, nodes)
            view_changed = False
            for pattern in patterns:
                entry = self._patterns.get(pattern.source)
                if entry is None:
                    entry = self._patterns[pattern.source] = _PatternEntry(pattern)
                    for subject in hits.get(pattern.source, ()):
                        cached = self._cache.get(subject)
                        if cached is not None and cached.seq < seq:
                            cached.sources.add(pattern.source)
                            cached.route = None
                            self._matched_by.setdefault(pattern.source, set()).add(subject)
                    self._view.add(pattern.source, pattern)
                    view_changed = True
                else:
                    self._touch_pattern(pattern.source)
                entry.holders[key] = options
            if view_changed:
                # subjects cached while the new patterns were matched missed them: recompute those
                late = []
                for subject in reversed(self._cache):  # newest first: stop at the older ones
                    if self._cache[subject].seq < seq:
                        break
                    late.append(subject)
                for subject in late:
                    self._uncache(subject)
                self._pattern_gen += 1
            self._patterns_of[key] = mine | sources
            self._spend(key, cost, nodes)

    def remove(self, key: Hashable, names: Iterable[str], patterns_too: bool = True) -> None:
        """Remove exact subscriptions (case-insensitive) and, unless ``patterns_too`` is
        false, pattern subscriptions (same string) of ``key``. Names it does not hold are
        ignored."""
        with self._lock:
            subjects = self._subjects_of.get(key, set())
            patterns = self._patterns_of.get(key, set())
            view_changed = False
            for name in names:
                folded = name.casefold()
                if folded in subjects:
                    subjects.discard(folded)
                    self._drop_exact(folded, key)
                if patterns_too and name in patterns:
                    patterns.discard(name)
                    view_changed |= self._drop_pattern(name, key)
            if not subjects:
                self._subjects_of.pop(key, None)
            if not patterns:
                self._patterns_of.pop(key, None)
            if view_changed:
                self._new_view()
            self._forget_spent(key)

    def remove_subscriber(self, key: Hashable) -> bool:
        """Remove every subscription of ``key``; True if it had any."""
        with self._lock:
            subjects = self._subjects_of.pop(key, set())
            patterns = self._patterns_of.pop(key, set())
            view_changed = False
            for subject in subjects:
                self._drop_exact(subject, key)
            for source in patterns:
                view_changed |= self._drop_pattern(source, key)
            if view_changed:
                self._new_view()
            self._spent.pop(key, None)
            return bool(subjects or patterns)

    # -- questions -----------------------------------------------------------------------
    def route(self, subject: str) -> Route:
        """Who gets an event on ``subject``."""
        cached = self._cache.get(subject)
        if cached is not None:
            route = cached.route
            if route is not None:
                return route
            with self._lock:
                return self._route_of(subject, cached)
        gen, view = self._pattern_gen, self._view
        sources = view.matches(subject)  # the costly part: in this thread, without the lock
        with self._lock:
            cached = self._cache.get(subject)
            if cached is not None:  # another thread was quicker
                return self._route_of(subject, cached)
            if gen != self._pattern_gen:  # patterns changed meanwhile: answer, do not cache
                return self._build(subject, [s for s in sources if s in self._patterns])
            if len(self._cache) >= MAX_CACHED_SUBJECTS:
                self._clear_cache()
            cached = self._cache[subject] = _Cached(sources, next(self._seq))
            self._spellings.setdefault(subject.casefold(), set()).add(subject)
            for source in sources:
                self._matched_by.setdefault(source, set()).add(subject)
            return self._route_of(subject, cached)

    def forget_routes(self) -> None:
        """Build every cached route again when next asked (who may receive what changed)."""
        with self._lock:
            for cached in self._cache.values():
                cached.route = None

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

    def spent(self, key: Hashable) -> Tuple[int, int]:
        """(pattern cost, filter nodes) that ``key``'s subscriptions use of its budgets."""
        with self._lock:
            spent = self._spent.get(key)
            return (spent[0], spent[1]) if spent else (0, 0)

    def counts(self) -> Dict[str, int]:
        """Numbers of subscribers, exact subscriptions, pattern subscriptions and cached subjects."""
        with self._lock:
            keys = set(self._subjects_of) | set(self._patterns_of)
            return {
                "subscribers": len(keys),
                "subject_subscriptions": sum(len(s) for s in self._subjects_of.values()),
                "pattern_subscriptions": sum(len(p) for p in self._patterns_of.values()),
            }

    # -- insides (the lock held, unless said otherwise) ----------------------------------
    @staticmethod
    def _match_cached(fresh: List[Pattern], subjects: List[str]) -> Dict[str, List[str]]:
        """{source: cached subjects it matches} for new patterns (no lock: the caller's work)."""
        hits: Dict[str, List[str]] = {}
        if not fresh or not subjects:
            return hits
        grouped = _group_by_prefix(fresh)
        lengths = sorted({len(prefix) for prefix in grouped})
        for subject in subjects:
            lowered = fold(subject)
            for length in lengths:
                if length > len(lowered):
                    break
                for pattern in grouped.get(lowered[:length], ()):
                    if pattern.match(subject):
                        hits.setdefault(pattern.source, []).append(subject)
        return hits

    def _route_of(self, subject: str, cached: _Cached) -> Route:
        route = cached.route
        if route is None:
            route = cached.route = self._build(subject, cached.sources)
        return route

    def _build(self, subject: str, sources: Iterable[str]) -> Route:
        holders: List[Tuple[Hashable, Options]] = list(self._exact.get(subject.casefold(), {}).items())
        for source in sources:
            holders.extend(self._patterns[source].holders.items())
        admit = self.admit
        if admit is not None:
            holders = [(key, options) for key, options in holders if admit(key, subject)]
        return Route.build(holders) if holders else NOWHERE

    def _touch_exact(self, folded: str) -> None:
        for subject in self._spellings.get(folded, ()):
            self._cache[subject].route = None

    def _touch_pattern(self, source: str) -> None:
        for subject in self._matched_by.get(source, ()):
            self._cache[subject].route = None

    def _drop_exact(self, subject: str, key: Hashable) -> None:
        holders = self._exact.get(subject)
        if holders is not None:
            holders.pop(key, None)
            if not holders:
                del self._exact[subject]
            self._touch_exact(subject)

    def _drop_pattern(self, source: str, key: Hashable) -> bool:
        """Drop ``key``'s hold on a pattern; True if the pattern went."""
        entry = self._patterns.get(source)
        if entry is None:
            return False
        entry.holders.pop(key, None)
        if entry.holders:
            self._touch_pattern(source)
            return False
        del self._patterns[source]
        self._view.remove(source, entry.pattern)
        for subject in self._matched_by.pop(source, ()):
            cached = self._cache[subject]
            cached.sources.discard(source)
            cached.route = None
        return True

    def _new_view(self) -> None:
        """The pattern set changed (the view was changed in place): routes being computed
        from the old set are not cached."""
        self._pattern_gen += 1

    def _uncache(self, subject: str) -> None:
        cached = self._cache.pop(subject)
        spellings = self._spellings.get(subject.casefold())
        if spellings is not None:
            spellings.discard(subject)
            if not spellings:
                del self._spellings[subject.casefold()]
        for source in cached.sources:
            matched = self._matched_by.get(source)
            if matched is not None:
                matched.discard(subject)
                if not matched:
                    del self._matched_by[source]

    def _clear_cache(self) -> None:
        self._cache = {}
        self._spellings = {}
        self._matched_by = {}

    def _check_limit(self, key: Hashable, new: int) -> None:
        held = len(self._subjects_of.get(key, ())) + len(self._patterns_of.get(key, ()))
        if held + new > self.max_subscriptions:
            raise ValueError(f"too many subscriptions for one subscriber (limit {self.max_subscriptions})")

    def _check_budget(self, key: Hashable, cost: int, nodes: int) -> None:
        spent = self._spent.get(key, [0, 0])
        if cost > 0 and spent[0] + cost > self.max_pattern_cost:
            raise ValueError(f"these patterns would make this subscriber's matching work {spent[0] + cost:,}, "
                             f"more than the limit of {self.max_pattern_cost:,} (es --max-pattern-cost): "
                             f"use fewer patterns, or patterns that begin with literal text")
        if nodes > 0 and spent[1] + nodes > self.max_filter_nodes:
            raise ValueError(f"these filters would give this subscriber {spent[1] + nodes:,} filter conditions, "
                             f"more than the limit of {self.max_filter_nodes:,} (es --max-filter-nodes)")

    def _spend(self, key: Hashable, cost: int, nodes: int) -> None:
        spent = self._spent.setdefault(key, [0, 0])
        spent[0] += cost
        spent[1] += nodes

    def _forget_spent(self, key: Hashable) -> None:
        """Recount ``key``'s budgets from what it still holds."""
        if key not in self._subjects_of and key not in self._patterns_of:
            self._spent.pop(key, None)
            return
        cost = sum(self._patterns[s].pattern.cost for s in self._patterns_of.get(key, ()))
        nodes = sum(self._exact[s][key].nodes for s in self._subjects_of.get(key, ()))
        nodes += sum(self._patterns[s].holders[key].nodes for s in self._patterns_of.get(key, ()))
        self._spent[key] = [cost, nodes]
