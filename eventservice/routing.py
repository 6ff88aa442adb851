"""Who gets an event: the one place that answers "which subscribers get this (subject,
message)". Pure data and logic, no sockets; tested without a network.

A subscription carries :class:`Options` (a work-queue ``group``, a content ``filter``).
The :class:`~eventservice.matching.SubscriptionIndex` finds the subscriptions that match a
subject and gives their :class:`Route`; :class:`Router` turns a route and a message into
the set of subscribers the event goes to:

- plain subscriptions: the subscriber gets every event;
- filtered ones: the subscriber gets the event when any of its filters on the subject passes
  (filters that are all equalities on one field are looked up in a table, not run);
- groups: one member of each group gets it, chosen round robin among the members whose
  filter passes, preferring those not known to be frozen or slow.

A subscriber is in the answer once, however many of its subscriptions match.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any, Callable, Dict, FrozenSet, Hashable, Iterable, List, Optional, Set, Tuple

from .filters import Filter

Conditional = Tuple[Tuple[Hashable, Tuple[Filter, ...]], ...]
Groups = Tuple[Tuple[str, Tuple[Tuple[Hashable, Optional[Filter]], ...]], ...]
Indexed = Tuple[Tuple[Callable[[Any], Any], Dict[Any, Tuple[Hashable, ...]]], ...]


class Options:
    """What a subscription carries besides its subject: a group and a filter (both optional)."""

    __slots__ = ("group", "filter", "spec", "nodes")

    def __init__(self, group: Optional[str] = None, filter: Optional[Filter] = None, spec: Any = None) -> None:
        self.group = group
        self.filter = filter
        self.spec = spec  # the filter as given, for reporting
        self.nodes = getattr(filter, "nodes", 1) if filter is not None else 0  # its conditions, for the budget


PLAIN = Options()  # no group, no filter


@dataclasses.dataclass(frozen=True)
class Route:
    """Who gets an event on one subject.

    ``plain``: keys that get every event; ``conditional``: (key, filters) for keys that get
    an event when any of their filters passes; ``indexed``: (getter of a field, {value:
    keys}) for keys whose filters are all equalities, looked up once per event; ``groups``:
    (group, members) where members are (key, filter or None) and one passing member gets
    the event; ``keys``: all keys; ``simple``: only ``plain`` is set."""

    plain: FrozenSet[Hashable]
    conditional: Conditional = ()
    groups: Groups = ()
    indexed: Indexed = ()
    keys: FrozenSet[Hashable] = dataclasses.field(default=frozenset(), compare=False)
    simple: bool = dataclasses.field(default=True, compare=False)

    @staticmethod
    def build(holders: Iterable[Tuple[Hashable, Options]]) -> "Route":
        """The route for these (key, options) subscriptions matching one subject."""
        plain: Set[Hashable] = set()
        filtered: Dict[Hashable, List[Filter]] = {}
        groups: Dict[str, Dict[Hashable, Optional[Filter]]] = {}
        for key, options in holders:
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
        keys = frozenset(plain).union(k for k, _ in conditional).union(
            k for _, ms in grouped for k, _ in ms).union(k for _, table in indexed for ks in table.values() for k in ks)
        return Route(frozenset(plain), tuple(conditional), grouped, indexed, keys,
                     not conditional and not grouped and not indexed)


NOWHERE = Route(frozenset())


class Router:
    """Turns a :class:`Route` and a message into the subscribers that get the event.

    ``is_live(key)`` says whether a subscriber is not known to be frozen or slow (groups
    prefer those). Thread-safe; the round-robin turn of each group is shared by all callers."""

    def __init__(self, is_live: Callable[[Hashable], bool] = lambda key: True) -> None:
        self.is_live = is_live
        self._turns: Dict[str, "itertools.count[int]"] = {}
        self._lock = threading.Lock()

    def targets(self, route: Route, message: Any,
                picks: Optional[Dict[Hashable, str]] = None) -> FrozenSet[Hashable] | Set[Hashable]:
        """The keys an event with ``message`` on the route's subject goes to, each once;
        ``picks``, when given, is told the group each chosen group member was chosen for."""
        if route.simple:
            return route.plain
        targets = set(route.plain)
        for key, filters in route.conditional:
            if any(passes(message) for passes in filters):
                targets.add(key)
        for getter, table in route.indexed:  # equality filters: one lookup for all of them
            try:
                targets.update(table.get(getter(message), ()))
            except TypeError:  # an unhashable value equals none of the filter values
                pass
        for group, members in route.groups:
            chosen = self._choose(group, members, message)
            if chosen is not None:
                targets.add(chosen)
                if picks is not None:
                    picks[chosen] = group
        return targets

    def pick(self, route: Route, group: str, message: Any) -> Optional[Hashable]:
        """The member of ``group`` an event with ``message`` on the route's subject goes to
        (as :meth:`targets` chooses), or None when the group has none."""
        for name, members in route.groups:
            if name == group:
                return self._choose(group, members, message)
        return None

    def _choose(self, group: str, members: Tuple[Tuple[Hashable, Optional[Filter]], ...],
                message: Any) -> Optional[Hashable]:
        candidates = [key for key, passes in members if passes is None or passes(message)]
        if not candidates:
            return None
        live = [key for key in candidates if self.is_live(key)] or candidates
        return live[self._turn(group) % len(live)]

    def _turn(self, group: str) -> int:
        turn = self._turns.get(group)
        if turn is None:
            with self._lock:
                turn = self._turns.setdefault(group, itertools.count())
        return next(turn)  # itertools.count is atomic under the GIL
