"""Content filters: conditions on a message's fields, given as plain data, never code.

A filter is a nested list (JSON-like), checked when subscribing (a bad one raises
``ValueError`` and changes nothing) and evaluated in the service for each event that
reaches the subscription, so events that fail it are never sent::

    ["==", "symbol", "SUN"]              # also "!=", "<", "<=", ">", ">="
    ["in", "symbol", ["SUN", "IBM"]]     # membership in a list of values
    ["exists", "price"]                  # the key is present
    ["and", COND, COND, ...]             # also "or"
    ["not", COND]

A field is a key of the message, which must be a dict; ``"a.b"`` reaches into nested
dicts. A missing field, a message that is no dict, or values that cannot be compared
(``"a" < 1``) make that condition false. Cost: one Python call per condition node, about
a microsecond each, paid only by events whose subject matches the subscription.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, List

Filter = Callable[[Any], bool]

MAX_FILTER_NODES = 256  # conditions and combinators in one filter
MAX_FILTER_DEPTH = 16  # nesting of and/or/not
MAX_IN_VALUES = 10_000  # values in one "in" list

_COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                ">": operator.gt, ">=": operator.ge}
_MISSING = object()


def compile_filter(spec: Any) -> Filter:
    """A callable ``message -> bool`` for ``spec``; ValueError if ``spec`` is not a filter.
    It carries ``nodes``, the number of its conditions and combinators. A filter that is one
    equality (``["==", FIELD, VALUE]``) also carries ``equality`` =
    (a getter of FIELD, VALUE), so that many of them can be looked up at once."""
    budget = [MAX_FILTER_NODES]
    passes = _compile(spec, 0, budget)
    passes.nodes = MAX_FILTER_NODES - budget[0]  # type: ignore[attr-defined]  # its conditions, for budgets
    if spec[0] == "==" and isinstance(spec[2], (str, int, float, bool, type(None))):
        try:
            hash(spec[2])
            passes.equality = (spec[1], _getter(spec[1]), spec[2])  # type: ignore[attr-defined]
        except TypeError:
            pass
    return passes


def _compile(spec: Any, depth: int, budget: List[int]) -> Filter:
    if not isinstance(spec, (list, tuple)) or not spec or not isinstance(spec[0], str):
        raise ValueError(f"a filter is a list starting with an operator, not {spec!r:.80}")
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"filter has more than {MAX_FILTER_NODES} conditions")
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(f"filter nested deeper than {MAX_FILTER_DEPTH}")
    op, args = spec[0], list(spec[1:])
    if op in ("and", "or"):
        if not args:
            raise ValueError(f"{op!r} needs at least one condition")
        parts = [_compile(arg, depth + 1, budget) for arg in args]
        combine = all if op == "and" else any
        return lambda msg: combine(part(msg) for part in parts)
    if op == "not":
        if len(args) != 1:
            raise ValueError("'not' takes exactly one condition")
        inner = _compile(args[0], depth + 1, budget)
        return lambda msg: not inner(msg)
    if op == "exists":
        if len(args) != 1:
            raise ValueError("'exists' takes exactly one field")
        get = _getter(args[0])
        return lambda msg: get(msg) is not _MISSING
    if op == "in":
        if len(args) != 2 or not isinstance(args[1], (list, tuple)):
            raise ValueError("'in' takes a field and a list of values")
        if len(args[1]) > MAX_IN_VALUES:
            raise ValueError(f"'in' takes at most {MAX_IN_VALUES} values")
        get, values = _getter(args[0]), _lookup(args[1])
        return lambda msg: _contains(values, get(msg))
    compare = _COMPARISONS.get(op)
    if compare is None:
        raise ValueError(f"unknown filter operator {op!r} (use one of: and, or, not, exists, in, "
                         f"{', '.join(_COMPARISONS)})")
    if len(args) != 2:
        raise ValueError(f"{op!r} takes a field and a value")
    get, value = _getter(args[0]), args[1]
    _check_value(value)
    return lambda msg: _compare(compare, get(msg), value)


def _getter(field: Any) -> Callable[[Any], Any]:
    if not isinstance(field, str) or not field:
        raise ValueError(f"a field is a non-empty str, not {field!r:.80}")
    path = field.split(".")

    def get(msg: Any) -> Any:
        for key in path:
            if not isinstance(msg, dict):
                return _MISSING
            msg = msg.get(key, _MISSING)
            if msg is _MISSING:
                return _MISSING
        return msg
    return get


def _check_value(value: Any) -> None:
    if not isinstance(value, (str, int, float, bool, type(None))):
        raise ValueError(f"a filter value is a str, number, bool or None, not {type(value).__name__}")


def _lookup(values: Any) -> Any:
    for value in values:
        _check_value(value)
    try:
        return frozenset(values)
    except TypeError:
        return tuple(values)


def _contains(values: Any, found: Any) -> bool:
    if found is _MISSING:
        return False
    try:
        return found in values
    except TypeError:  # an unhashable field value
        return False


def _compare(compare: Callable[[Any, Any], Any], found: Any, value: Any) -> bool:
    if found is _MISSING:
        return False
    try:
        return bool(compare(found, value))
    except TypeError:
        return False
