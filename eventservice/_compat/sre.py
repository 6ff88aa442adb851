"""Python's regular-expression parser: ``re._parser`` and ``re._constants`` (before Python
3.11: ``sre_parse`` and ``sre_constants``, deprecated names since). Tested with CPython 3.11.

Subscription patterns (:mod:`eventservice.patterns`) bound the work of a pattern from the
tree ``re`` itself parses it into, so that they agree with ``re`` exactly. They rely on:

- :func:`parse` giving a sequence of ``(op, av)`` pairs, ``op`` being one of the opcode
  objects of :data:`constants` (compared with ``is``), with these ``av``: LITERAL and
  NOT_LITERAL a code point; ANY None; IN a list of ``(op, arg)`` (NEGATE, LITERAL, RANGE
  with ``(lo, hi)``, CATEGORY with a CATEGORY_* object); MAX_REPEAT, MIN_REPEAT and
  POSSESSIVE_REPEAT ``(min, max, items)``, ``max`` being MAXREPEAT when unbounded;
  SUBPATTERN ``(group, add_flags, del_flags, items)``; BRANCH ``(None, [items, ...])``;
  GROUPREF a group number; GROUPREF_EXISTS ``(group, items, items or None)``; ASSERT and
  ASSERT_NOT ``(direction, items)``; ATOMIC_GROUP ``items``; AT an AT_* object;
- the parsed pattern's ``state.flags``: the flags in force, inline ones included.

``tests/test_compat.py`` checks each of these against the running Python.
"""

from __future__ import annotations

import sys
from typing import Any, List, Tuple

if sys.version_info >= (3, 11):
    from re import _constants as constants
    from re import _parser as _sre_parse
else:  # pragma: no cover - Python 3.9 and 3.10
    import sre_constants as constants
    import sre_parse as _sre_parse

__all__ = ["constants", "parse"]

TESTED_VERSIONS = ("3.11",)


def parse(source: str, flags: int) -> Tuple[List[Tuple[Any, Any]], int]:
    """The parse tree of ``source`` under ``flags`` (see the module), and the flags in force.
    Raises ``re.error`` for an invalid pattern."""
    parsed = _sre_parse.parse(source, flags)
    return list(parsed), int(parsed.state.flags)  # type: ignore[call-overload]
