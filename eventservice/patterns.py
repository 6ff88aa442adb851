"""Subscription patterns: Python ``re`` semantics (IGNORECASE, ``re.match``) in bounded time.

``re`` backtracks while holding the GIL, so one pattern like ``(a+)+$`` could freeze every
thread. A pattern whose backtracking is provably small (see ``_cost``) runs on ``re``; any
other runs on a lazily built DFA over a Thompson NFA, whose work is O(len(subject) * program
size), or is refused with ValueError. Single characters are still tested by ``re`` (one
compiled one-character regex per class), so case folding agrees with ``re`` exactly.

A pattern on ``re`` whose bound n**q * alternatives * size exceeds MAX_RE_WORK for a subject
(q = 1 or 2, subjects far longer than ASSUMED_SUBJECT_LENGTH) matches that subject on the NFA;
if it uses a backreference or lookaround, which the NFA lacks, it stays on ``re``, whose work
is then polynomial (at most quadratic) in the subject length.
"""

from __future__ import annotations

import math
import re
import sys
import threading
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from ._compat import sre as _sre

_c = _sre.constants

__all__ = ["Pattern", "compile_pattern", "fold", "glob_pattern"]

_NONE = object()  # stands for an opcode this Python does not have
_ATOMS = frozenset((_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN))
_REPEATS = frozenset(op for op in (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", _NONE)))
_ATOMIC_GROUP = getattr(_c, "ATOMIC_GROUP", _NONE)
_POSSESSIVE_REPEAT = getattr(_c, "POSSESSIVE_REPEAT", _NONE)
_MAXREPEAT = _c.MAXREPEAT
_I, _A, _M, _S = int(re.IGNORECASE), int(re.ASCII), int(re.MULTILINE), int(re.DOTALL)
_TYPE_FLAGS = int(re.ASCII | re.LOCALE | re.UNICODE)

ASSUMED_SUBJECT_LENGTH = 512  # n in the cost bound that decides "safe for re"
MAX_RE_WORK = 1 << 20  # allowed n**q * alternatives * size of a pattern run on re (re holds the GIL: ~5 ms)
NFA_STEP_COST = 50  # one NFA instruction visited costs about this many re steps (it runs in Python)
MAX_RE_QUANTIFIERS = 2  # variable-width quantifiers (factors of n) allowed on re
MAX_RE_ALTERNATIVES = 64  # product of sequential alternatives allowed on re
MAX_NFA_SIZE = 10_000  # instructions of one NFA program
MAX_DFA_CACHE = 1 << 15  # cached DFA transitions + NFA threads in DFA states, per pattern

# The characters IGNORECASE (Unicode) matches to an ASCII letter whose .lower() is not that
# letter: U+0130 and U+0131 ~ 'i', U+017F ~ 's'. fold() maps them to it, so that a literal
# prefix may hold every ASCII letter. tests/test_patterns.py verifies this by brute force.
_FOLD_FIXES = {0x130: "i", 0x131: "i", 0x17F: "s"}


def fold(subject: str) -> str:
    """``subject`` as literal prefixes are compared with it: one character for one, each
    lowered, and the few that IGNORECASE matches to 'i' or 's' turned into those."""
    return subject.translate(_FOLD_FIXES).lower()

_CONSTRUCTS = {_c.GROUPREF: "a backreference", _c.GROUPREF_EXISTS: "a conditional group",
               _c.ASSERT: "a lookaround assertion", _c.ASSERT_NOT: "a negative lookaround assertion",
               _ATOMIC_GROUP: "an atomic group", _POSSESSIVE_REPEAT: "a possessive quantifier"}
_CATEGORIES = {
    _c.CATEGORY_DIGIT: r"\d", _c.CATEGORY_NOT_DIGIT: r"\D", _c.CATEGORY_SPACE: r"\s",
    _c.CATEGORY_NOT_SPACE: r"\S", _c.CATEGORY_WORD: r"\w", _c.CATEGORY_NOT_WORD: r"\W",
}

# Zero-width assertions, as bits of a position's context.
_BEG, _BEGL, _END, _ENDS, _ENDL, _BU, _NBU, _BA, _NBA = (1 << k for k in range(9))
_AT_BITS = {
    (_c.AT_BEGINNING, False): _BEG, (_c.AT_BEGINNING, True): _BEGL,
    (_c.AT_BEGINNING_STRING, False): _BEG, (_c.AT_BEGINNING_STRING, True): _BEG,
    (_c.AT_END, False): _END, (_c.AT_END, True): _ENDL,
    (_c.AT_END_STRING, False): _ENDS, (_c.AT_END_STRING, True): _ENDS,
}
_NONWORD_U, _NONWORD_A = re.compile(r"\W"), re.compile(r"\W", re.ASCII)
# Whether \b and \B match an empty subject differs between Python versions: ask sre.
_EMPTY_CTX = ((_BU | _BA) * bool(re.match(r"\b", "")) | _NBU * bool(re.match(r"\B", ""))
              | _NBA * bool(re.match(r"\B", "", re.ASCII)))

_START = 8  # class of "no character" before position 0
_CHAR, _SPLIT, _ASSERT, _MATCH = 0, 1, 2, 3
_DEAD, _ACCEPT = 0, 1  # DFA state ids: no thread left / a match was found


class _Unsafe(Exception):
    """The pattern is not provably safe for ``re``."""


def _combine(flags: int, add: int, remove: int) -> int:
    """Flags inside ``(?add-remove:...)``, as sre's compiler combines them."""
    if add & _TYPE_FLAGS:
        flags &= ~_TYPE_FLAGS
    return (flags | add) & ~remove


def _width(items: Any) -> int:
    """Width of a quantified body made of single characters and groups only, else _Unsafe."""
    width = 0
    for op, av in items:
        if op in _ATOMS:
            width += 1
        elif op is _c.SUBPATTERN:
            width += _width(av[-1])
        else:
            raise _Unsafe
    return width


def _empty(items: Any) -> bool:
    """Whether a sequence compiles to no NFA instruction at all."""
    for op, av in items:
        if op is _c.SUBPATTERN:
            if not _empty(av[-1]):
                return False
        elif op not in _REPEATS or (av[1] != 0 and not _empty(av[2])):
            return False
    return True


def _cost(items: Any) -> Tuple[int, int, int]:
    """(q, alternatives, size) of a sequence, bounding re's backtracking by n**q * alternatives
    * size: q counts variable-width quantifiers (n choices each), alternatives multiplies the
    choices of branches, optionals and short counted ranges, size is the work of one path.
    A quantifier (max > 1) may only hold single characters and groups of them: else _Unsafe."""
    quantifiers, alternatives, size = 0, 1, 0
    for op, av in items:
        if op in _ATOMS or op is _c.AT:
            sub = (0, 1, 1)
        elif op is _c.SUBPATTERN:
            sub = _cost(av[-1])
        elif op is _ATOMIC_GROUP:
            sub = _cost(av)
        elif op is _c.ASSERT or op is _c.ASSERT_NOT:
            sub = _cost(av[1])  # its search multiplies (conservative)
        elif op is _c.GROUPREF:
            sub = (0, 1, ASSUMED_SUBJECT_LENGTH)
        elif op is _c.BRANCH or op is _c.GROUPREF_EXISTS:  # alternatives: tried one by one
            costs = [_cost(alt) for alt in av[1]] if op is _c.BRANCH else [_cost(av[1]), _cost(av[2] or ())]
            sub = (max(c[0] for c in costs), sum(c[1] for c in costs), sum(c[2] for c in costs))
        elif op in _REPEATS:
            lo, hi, body = av
            if hi <= 1:
                inner = _cost(body)
                sub = (inner[0], inner[1] * (hi - lo + 1), inner[2] * hi)
            else:
                width = _width(body)
                if width == 0:
                    raise _Unsafe  # sre loops min times over an empty body
                if lo == hi:
                    sub = (0, 1, width * lo)
                elif hi != _MAXREPEAT and hi - lo < 8:
                    sub = (0, hi - lo + 1, width * hi)
                else:
                    sub = (1, 1, width)
        else:
            raise _Unsafe
        quantifiers, alternatives, size = quantifiers + sub[0], alternatives * sub[1], size + sub[2]
        if quantifiers > MAX_RE_QUANTIFIERS or alternatives > MAX_RE_ALTERNATIVES:
            raise _Unsafe
    return quantifiers, alternatives, size


def _re_limit(items: Any) -> Optional[int]:
    """Longest subject ``re`` may match within MAX_RE_WORK; None if not safe for re at all."""
    try:
        quantifiers, alternatives, size = _cost(items)
    except _Unsafe:
        return None
    per_path = alternatives * max(size, 1)
    if ASSUMED_SUBJECT_LENGTH ** quantifiers * per_path > MAX_RE_WORK:
        return None
    if quantifiers == 0:
        return sys.maxsize
    return MAX_RE_WORK // per_path if quantifiers == 1 else math.isqrt(MAX_RE_WORK // per_path)


def _re_work(items: Any) -> int:
    """The bound on ``re``'s work for one match of a subject of ASSUMED_SUBJECT_LENGTH
    (for a pattern found safe for ``re``)."""
    quantifiers, alternatives, size = _cost(items)
    work: int = ASSUMED_SUBJECT_LENGTH ** quantifiers * alternatives * max(size, 1)
    return min(work, MAX_RE_WORK)


def _prefix(items: Any, flags: int) -> Tuple[str, bool]:
    """Lower-case ASCII literal prefix of a sequence, and whether it covers the whole sequence."""
    out: List[str] = []
    for op, av in items:
        if op is _c.LITERAL and av < 128:
            out.append(chr(av).lower())
        elif op is _c.AT or op is _c.ASSERT or op is _c.ASSERT_NOT:
            continue  # zero width: skipping a condition keeps the prefix necessary
        elif op is _c.SUBPATTERN:
            part, whole = _prefix(av[-1], _combine(flags, av[1], av[2]))
            out.append(part)
            if not whole:
                return "".join(out), False
        else:
            return "".join(out), False
    return "".join(out), True


def _atom_source(op: Any, av: Any) -> str:
    """Regex source of one single-character parse node."""
    esc = "\\U%08x".__mod__
    if op is _c.LITERAL:
        return esc(av)
    if op is _c.NOT_LITERAL:
        return "[^" + esc(av) + "]"
    if op is _c.ANY:
        return "."
    parts = []
    for item, arg in av:
        if item is _c.NEGATE:
            parts.append("^")
        elif item is _c.LITERAL:
            parts.append(esc(arg))
        elif item is _c.RANGE:
            parts.append(esc(arg[0]) + "-" + esc(arg[1]))
        elif item is _c.CATEGORY and arg in _CATEGORIES:
            parts.append(_CATEGORIES[arg])
        else:
            raise ValueError(f"unexpected character set item {item} {arg}")
    return "[" + "".join(parts) + "]"


def _char_class(char: str) -> int:
    """What the assertions need to know of a character before a position."""
    return (char == "\n") | (_NONWORD_U.match(char) is None) << 1 | (_NONWORD_A.match(char) is None) << 2


def _context(prev: int, char: str, last: bool) -> int:
    """Bits of the assertions that hold between a character of class prev (_START at the
    start) and char ("" at the end; last: char is the subject's last)."""
    ctx = (_BEG | _BEGL) if prev == _START else _BEGL if prev & 1 else 0
    if not char:
        ctx |= _END | _ENDS | _ENDL
        if prev == _START:
            return ctx | _EMPTY_CTX
    elif char == "\n":
        ctx |= (_ENDL | _END) if last else _ENDL
    after = _char_class(char) if char else 0
    for bit, bound, nonbound in ((2, _BU, _NBU), (4, _BA, _NBA)):
        ctx |= bound if (prev & bit) != (after & bit) else nonbound
    return ctx


class _Tables:
    """The lazily built DFA. A state is (NFA threads before closure, class of the previous
    character); ids 0 (dead) and 1 (accept) are fixed, 2 is the start."""

    __slots__ = ("ids", "states", "next", "finals", "count")

    def __init__(self) -> None:
        self.ids: Dict[Tuple[FrozenSet[int], int], int] = {}
        self.states: List[Tuple[FrozenSet[int], int]] = [(frozenset(), 0), (frozenset(), 0), (frozenset((0,)), _START)]
        self.next: List[Dict[Any, int]] = [{}, {}, {}]
        self.finals: Dict[int, bool] = {}
        self.count = 0


class _Nfa:
    """A Thompson NFA for one pattern, simulated by a lazily built, size-capped DFA."""

    def __init__(self, items: Any, flags: int, source: str) -> None:
        self.source = source
        self.kind: List[int] = []
        self.arg: List[Any] = []
        self.tests: List[Callable[[str], Any]] = []
        self._test_ids: Dict[Tuple[str, int], int] = {}
        self.used = 0
        self._emit(items, flags)
        self._put(_MATCH, None)
        self._lock = threading.Lock()
        self._tables = _Tables()

    def _put(self, kind: int, arg: Any) -> int:
        if len(self.kind) >= MAX_NFA_SIZE:
            raise ValueError(f"pattern {self.source!r} is too large for the linear-time matcher "
                             f"(pattern too large: more than {MAX_NFA_SIZE} instructions)")
        self.kind.append(kind)
        self.arg.append(arg)
        return len(self.kind) - 1

    def _test(self, op: Any, av: Any, flags: int) -> int:
        key = (_atom_source(op, av), flags & (_I | _A | _S))
        index = self._test_ids.get(key)
        if index is None:
            index = self._test_ids[key] = len(self.tests)
            self.tests.append(re.compile(*key).match)
        return index

    def _emit(self, items: Any, flags: int) -> None:
        for op, av in items:
            if op in _ATOMS:
                self._put(_CHAR, self._test(op, av, flags))
            elif op is _c.SUBPATTERN:
                self._emit(av[-1], _combine(flags, av[1], av[2]))
            elif op is _c.BRANCH:
                split, starts, ends = self._put(_SPLIT, None), [], []
                for alt in av[1]:
                    starts.append(len(self.kind))
                    self._emit(alt, flags)
                    ends.append(self._put(_SPLIT, None))
                self.arg[split] = tuple(starts)
                for end in ends:
                    self.arg[end] = (len(self.kind),)
            elif op in _REPEATS and op is not _POSSESSIVE_REPEAT:
                self._emit_repeat(av, flags)
            elif op is _c.AT:
                if av is _c.AT_BOUNDARY or av is _c.AT_NON_BOUNDARY:
                    bit = ((_BA, _NBA) if flags & _A else (_BU, _NBU))[av is _c.AT_NON_BOUNDARY]
                else:
                    bit = _AT_BITS[(av, bool(flags & _M))]
                self.used |= bit
                self._put(_ASSERT, bit)
            else:
                what = _CONSTRUCTS.get(op, f"the construct {op}")
                raise ValueError(f"pattern {self.source!r} could backtrack without bound and uses "
                                 f"{what}, which the linear-time matcher cannot do")

    def _emit_repeat(self, av: Any, flags: int) -> None:
        lo, hi, body = av
        if hi == 0 or _empty(body):
            return  # a body that matches only "" adds nothing, whatever the count
        for _ in range(lo):
            self._emit(body, flags)  # each copy emits at least one instruction: capped
        if hi == _MAXREPEAT:
            loop = self._put(_SPLIT, None)
            self._emit(body, flags)
            self._put(_SPLIT, (loop,))
            self.arg[loop] = (loop + 1, len(self.kind))
            return
        splits = []
        for _ in range(hi - lo):
            splits.append(self._put(_SPLIT, None))
            self._emit(body, flags)
        for split in splits:
            self.arg[split] = (split + 1, len(self.kind))

    def _closure(self, pcs: Iterable[int], ctx: int) -> Optional[List[int]]:
        """The character instructions reachable from pcs without consuming; None if MATCH is."""
        kind, arg = self.kind, self.arg
        seen, stack, out = set(), list(pcs), []
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            k = kind[pc]
            if k == _CHAR:
                out.append(pc)
            elif k == _SPLIT:
                stack.extend(arg[pc])
            elif k == _ASSERT:
                if ctx & arg[pc]:
                    stack.append(pc + 1)
            else:
                return None
        return out

    def _step(self, tables: _Tables, state: int, char: str, last: bool) -> int:
        """Compute and cache the transition of state on char (lock held only here)."""
        with self._lock:
            kernel, prev = tables.states[state]
            used = self.used
            threads = self._closure(kernel, _context(prev, char, last) & used if used else 0)
            if threads is None:
                target = _ACCEPT
            else:
                tests, arg = self.tests, self.arg
                moved = frozenset(pc + 1 for pc in threads if tests[arg[pc]](char))
                key = (moved, _char_class(char) if used else 0)
                target = tables.ids.get(key, _DEAD) if moved else _DEAD
                if moved and target == _DEAD:
                    target = tables.ids[key] = len(tables.states)
                    tables.states.append(key)
                    tables.next.append({})
                    tables.count += len(moved)
            tables.next[state][(char,) if last else char] = target
            tables.count += 1
            if tables.count >= MAX_DFA_CACHE and tables is self._tables:
                self._tables = _Tables()  # matches under way finish on the old tables
            return target

    def _final(self, tables: _Tables, state: int) -> bool:
        """Whether state, at the end of the subject, has matched."""
        kernel, prev = tables.states[state]
        found = tables.finals[state] = self._closure(kernel, _context(prev, "", False) & self.used) is None
        return found

    def match(self, s: str) -> bool:
        """Whether the pattern matches at the start of s."""
        tables, state = self._tables, 2
        table, step = tables.next, self._step
        last = self.used and s  # with assertions, the last character is looked up apart
        for char in s[:-1] if last else s:
            target = table[state].get(char)
            if target is None:
                target = step(tables, state, char, False)
            if target < 2:
                return target == _ACCEPT
            state = target
        if last:
            target = table[state].get((s[-1],))
            if target is None:
                target = step(tables, state, s[-1], True)
            if target < 2:
                return target == _ACCEPT
            state = target
        found = tables.finals.get(state)
        return self._final(tables, state) if found is None else found


def _parse(source: str) -> Tuple[List[Any], int]:
    """sre's parse tree of ``source`` under IGNORECASE, and its flags."""
    return _sre.parse(source, re.IGNORECASE)


class Pattern:
    """A compiled subscription pattern: ``match`` agrees with ``re.match`` under IGNORECASE.

    ``literal_prefix``: lower-case ASCII text every matching subject starts with, once
    :func:`fold` ed;
    ``cost``: a bound on the work of one match against a subject of ASSUMED_SUBJECT_LENGTH
    characters, in steps of ``re`` (what subscription budgets count)."""

    __slots__ = ("source", "literal_prefix", "cost", "_engine", "_re_match", "_limit", "_nfa")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TypeError(f"pattern must be a str, not {type(source).__name__}")
        self.source = source
        try:
            self._re_match = re.compile(source, re.IGNORECASE).match
            items, flags = _parse(source)
            limit = _re_limit(items)
            self._nfa: Any = None
            if limit is None:
                self._engine, self._limit = "nfa", -1
                self._nfa = _Nfa(items, flags, source)
                self.cost = ASSUMED_SUBJECT_LENGTH * len(self._nfa.kind) * NFA_STEP_COST
            else:
                self._engine, self._limit = "re", limit
                self.cost = _re_work(items)
            self.literal_prefix = _prefix(items, flags)[0]
        except (re.error, OverflowError) as exc:
            raise ValueError(f"invalid pattern {source!r}: {exc}") from None
        except RecursionError:
            raise ValueError(f"pattern {source!r} is nested too deeply") from None

    @property
    def engine(self) -> str:
        """"re" if the pattern is safe for ``re``, else "nfa" (the linear-time matcher)."""
        return self._engine

    def match(self, subject: str) -> bool:
        """Whether the pattern matches at the start of subject (``re.match``, IGNORECASE)."""
        if len(subject) > self._limit:
            return self._long_match(subject)
        return self._re_match(subject) is not None

    def _long_match(self, subject: str) -> bool:
        """Match on the NFA: always for engine "nfa", for "re" when the subject is too long."""
        nfa = self._nfa
        if nfa is None:  # the parse tree is not kept (memory): parsed again, once
            try:
                nfa = _Nfa(*_parse(self.source), self.source)
            except (ValueError, RecursionError):
                nfa = False  # backreference, lookaround...: re's work grows polynomially
            self._nfa = nfa
        if nfa is False:
            return self._re_match(subject) is not None
        return bool(nfa.match(subject))

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"


def compile_pattern(source: str) -> Pattern:
    """Compile source; TypeError if it is not a str, ValueError if it is invalid or unsafe."""
    return Pattern(source)


def glob_pattern(glob: str) -> str:
    """The regex pattern of a glob-style one: ``*`` matches any run of characters, dots
    included (``sensor.*`` takes ``sensor.temp`` and ``sensor.a.b``; ``*`` takes every
    subject), ``?`` one character, anything else itself; anchored at both ends.
    ``glob_pattern("sensor.*") == "sensor\\..*$"``."""
    if not isinstance(glob, str):
        raise TypeError(f"a glob must be a str, not {type(glob).__name__}")
    parts: List[str] = []
    for char in glob:
        if char == "*":
            if parts[-1:] != [".*"]:
                parts.append(".*")
        else:
            parts.append("." if char == "?" else re.escape(char))
    return "".join(parts) + "$"
