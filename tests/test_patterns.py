"""Tests of eventservice.patterns: agreement with re, bounded time, refusals, literal prefixes."""

from __future__ import annotations

import re
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from eventservice import patterns
from eventservice.patterns import Pattern, compile_pattern

# Letters with tricky IGNORECASE folds: KELVIN SIGN, long s, dotted/dotless i, sharp s, sigmas.
TRICKY = "kK\u212asS\u017fiI\u0130\u0131\xdf\u1e9e\u03c3\u03a3\u03c2\xb5\u03bc"
SUBJECT_CHARS = "aAbB" + TRICKY + "1_ .-\n"
ATOMS = ["a", "A", "b", "B", "k", "K", "s", "S", "i", "I", "\u212a", "\u017f", "\u0130", "\u0131",
         "\xdf", "\u03c3", "\u03a3", "\xb5", "1", "_", " ", "-", ".", r"\.", "\n", r"\n",
         "[ab]", "[^a]", "[a-c]", "[K-k]", "[^\\w]", "[s\u017f]", "[\u0130-\u0131]", "[\\d_]",
         "[^\\W\\d]", r"\d", r"\w", r"\W", r"\s", r"\S", r"\D", "[.\\s]", "^", "$", r"\b", r"\B",
         r"\A", r"\Z"]
QUANTIFIERS = ["*", "+", "?", "*?", "+?", "??", "{2}", "{0,2}", "{1,3}", "{2,}", "{,3}?"]
FLAGS = ["", "", "", "(?s)", "(?m)", "(?a)", "(?sm)", "(?x)"]
LOCAL_FLAGS = ["(?:", "(", "(?-i:", "(?s:", "(?m:", "(?a:", "(?u:", "(?i:"]


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    group = st.tuples(st.sampled_from(LOCAL_FLAGS), inner).map(lambda t: t[0] + t[1] + ")")
    return st.one_of(
        st.tuples(inner, inner).map("".join),
        st.tuples(inner, inner).map("|".join),
        group,
        st.tuples(group, st.sampled_from(QUANTIFIERS)).map("".join),
    )


def _quantified_atom(atom: str, quantifier: str) -> str:
    return atom + quantifier if atom not in ("^", "$", r"\b", r"\B", r"\A", r"\Z") else atom


atoms = st.one_of(st.sampled_from(ATOMS),
                  st.tuples(st.sampled_from(ATOMS), st.sampled_from(QUANTIFIERS)).map(lambda t: _quantified_atom(*t)))
pattern_bodies = st.recursive(atoms, _extend, max_leaves=8)
pattern_sources = st.tuples(st.sampled_from(FLAGS), pattern_bodies).map("".join)
subjects = st.text(alphabet=SUBJECT_CHARS, max_size=10)


def truth(source: str, subject: str) -> bool:
    return re.compile(source, re.IGNORECASE).match(subject) is not None


def nfa(source: str) -> patterns._Nfa:
    """The linear-time matcher for source, even when the pattern is safe for re."""
    return patterns._Nfa(*patterns._parse(source), source)


def _mutate(literal: str, draw_choice) -> str:
    """A spelling of literal that IGNORECASE still matches: case changes and exotic folds."""
    variants = {"k": "kK\u212a", "s": "sS\u017f", "i": "iI\u0131\u0130"}
    return "".join(draw_choice(variants.get(c.lower(), c.lower() + c.upper())) for c in literal)


# --- agreement with re -----------------------------------------------------------------------

def _subjects_for(source: str) -> st.SearchStrategy[str]:
    """Subjects over the pattern's own characters (so repeats and matches are common) or all."""
    own = sorted({c for c in source if c.isalnum() or c in " .-_\n"} | {"\n", "a"})
    return st.one_of(st.text(alphabet=own, max_size=12), subjects)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_agrees_with_re(data) -> None:
    source = data.draw(pattern_sources)
    check_agreement(source, data.draw(st.lists(_subjects_for(source), min_size=1, max_size=8)))


@pytest.mark.parametrize("source,samples", [
    ("(?a)k", ["\u212a", "K"]),
    ("[K-k]", ["\u212a", "\u017f", "_"]),
    (r"\B", ["", "a", " "]),
    (r"\b", ["", "a"]),
    ("(?a)\\b\u00e9", ["\u00e9"]),
    ("(?m)a$", ["a\n", "a\nb"]),
    ("a$", ["a\n", "a\n\n"]),
    ("^$", ["\n", "", "\n\n"]),
    ("(?m)^$", ["\n", "", "a"]),
    (r"a\Z", ["a\n", "a"]),
    ("(?m)a\n^b", ["a\nb"]),
    ("a\n^b", ["a\nb"]),
    ("(?-i:[K-k]+)", ["\u212a", "kK"]),
    ("\u0130|\xdf+", ["i", "I", "\u0131", "ss", "\u1e9e"]),
    ("(?a)(?u:\\w)", ["\u00e9"]),
    ("(?a)(?u:k)", ["\u212a"]),
    ("(?a)(?u:\\b)", ["\u00e9"]),
    ("a{0,2}b", ["aab", "aaab", "b"]),
    ("(?:ab){1,3}c", ["ababc", "abababc", "ababababc"]),
    ("(?:a|bc){2,}d", ["abcd", "ad", "bcbcad"]),
])
def test_agrees_with_re_examples(source: str, samples: list) -> None:
    check_agreement(source, samples)


def check_agreement(source: str, samples: list) -> None:
    try:
        truth(source, "")
    except re.error:
        with pytest.raises(ValueError):
            compile_pattern(source)
        return
    pattern = compile_pattern(source)
    machine = nfa(source)  # the grammar uses nothing the NFA refuses
    for subject in samples:
        expected = truth(source, subject)
        assert pattern.match(subject) == expected, (source, subject, pattern.engine)
        assert machine.match(subject) == expected, (source, subject)
        if expected:
            assert patterns.fold(subject).startswith(pattern.literal_prefix), (source, subject)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.sampled_from(FLAGS), pattern_bodies, st.data())
def test_agrees_with_re_on_matching_subjects(flags: str, body: str, data) -> None:
    """Subjects generated to match, so True answers are common, checked on both engines. Only
    for patterns safe for re: from_regex checks its strings with re, which must not backtrack."""
    source = flags + body
    try:
        assume(compile_pattern(source).engine == "re")
        strategy = st.from_regex(re.compile(source, re.IGNORECASE), fullmatch=True)
    except ValueError:
        assume(False)
        return
    try:
        subject = data.draw(strategy.filter(lambda s: len(s) <= 12))
    except Exception:  # noqa: BLE001 - constructs from_regex cannot generate
        assume(False)
        return
    assert compile_pattern(source).match(subject) == truth(source, subject)
    assert nfa(source).match(subject) == truth(source, subject)


def test_case_folding_matches_re_for_non_ascii() -> None:
    """Each char against a literal and a class of itself, its lower, upper and casefold forms."""
    chars = [chr(c) for c in range(0x80, 0x2200)] + list("\u2126\u212a\u212b\uff21\uff41\U00010400\U00010428")
    for char in chars:
        for other in {char, char.lower(), char.upper(), char.casefold()}:
            if len(other) != 1:
                continue
            for source in ("(?:" + re.escape(other) + ")+$", "[" + re.escape(other) + "]"):
                for subject in (char, char * 2, other):
                    assert nfa(source).match(subject) == truth(source, subject), (char, other, source)


def test_engines() -> None:
    for source in ["abc", r"stockquotes\.sun.*", ".*a.*b", "(a)\\1", "x{3,5}y", "(?=ab)a+", "(foo|bar)\\..*"]:
        assert compile_pattern(source).engine == "re", source
    for source in ["(a+)+$", "(a|a)*$", "a*a*a*b", "(.*a){12}", "(?:x?)*y", "(?:){9}", ".*.*.*"]:
        assert compile_pattern(source).engine == "nfa", source
    with pytest.raises(AttributeError):
        compile_pattern("abc").engine = "nfa"  # type: ignore[misc]


def test_long_subject_on_re_engine_uses_nfa() -> None:
    pattern = compile_pattern(".*a.*b")
    assert pattern.engine == "re" and 512 <= pattern._limit < 10_000
    subject = "a" * 20_000
    start = time.perf_counter()
    assert pattern.match(subject) is False
    assert pattern.match(subject + "b") is True
    assert time.perf_counter() - start < 1.0
    assert isinstance(pattern._nfa, patterns._Nfa)


# --- catastrophic patterns -------------------------------------------------------------------

CATASTROPHIC = [
    # (pattern, subject, expected): the truth by reasoning, not by re
    ("(a+)+$", "a" * 5000 + "b", False),
    ("(a+)+$", "a" * 5000 + "c", False),
    ("(a+)+$", "a" * 5000, True),
    ("(a*)*$", "a" * 5000 + "b", False),
    ("(a*)*$", "a" * 5000 + "\n", True),  # $ matches before a final newline
    ("(a|a)*$", "a" * 5000 + "b", False),
    ("(a|a)*$", "a" * 5000 + "c", False),
    ("(a|aa)+$", "a" * 5000 + "b", False),
    ("(a|aa)+$", "A" * 5000, True),
    ("(.*a){12}", "a" * 5000 + "b", True),
    ("(.*a){12}", "a" * 5000 + "c", True),
    ("(.*a){12}", "b" * 5000 + "a" * 11, False),  # only 11 a's
    ("a*a*a*a*a*a*a*b", "a" * 5000 + "b", True),
    ("a*a*a*a*a*a*a*b", "a" * 5000 + "c", False),
    ("(?:\\w+\\s?)+$", "word " * 1000 + "!", False),
    ("(x+x+)+y", "x" * 5000, False),
]


@pytest.mark.parametrize("source,subject,expected", CATASTROPHIC)
def test_catastrophic_patterns_finish_quickly(source: str, subject: str, expected: bool) -> None:
    start = time.perf_counter()
    pattern = compile_pattern(source)
    assert pattern.engine == "nfa"
    assert pattern.match(subject) is expected
    assert pattern.match(subject) is expected  # again, on the cached DFA
    assert time.perf_counter() - start < 1.0


def test_cache_restart_keeps_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patterns, "MAX_DFA_CACHE", 12)
    pattern = compile_pattern("(a|b|ab)*c$")
    tables = set()
    for n in range(60):
        subject = "ab" * n + "ba" * (n % 3) + ("c" if n % 2 else "")
        assert pattern.match(subject) == truth("[ab]*c$", subject)  # same language, no backtracking
        tables.add(id(pattern._nfa._tables))
    assert len(tables) > 1  # the cache did restart


def test_threads_agree() -> None:
    source = "(\\w+\\.)+(sun|moon)\\b"
    pattern = compile_pattern(source)
    words = ["stock.sun", "a.b.moon", "x.sunny", "sun", "q.w.e.moon!", "Ab.\u212a.SUN"]
    failures: list = []

    def work(k: int) -> None:
        for j in range(300):
            subject = words[(k + j) % len(words)] + str(j % 7) * (j % 3)
            if pattern.match(subject) != truth(source, subject):
                failures.append(subject)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [None, 1, b"abc", ["a"]])
def test_non_str_is_a_type_error(source) -> None:
    with pytest.raises(TypeError):
        compile_pattern(source)


@pytest.mark.parametrize("source", ["(", "[a-", "*a", "a{2,1}", "(?L)a", "(?<x>a)(?P=y)", "\\"])
def test_invalid_pattern_is_a_value_error(source: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_pattern(source)
    assert not isinstance(info.value, re.error)
    assert "invalid pattern" in str(info.value)


@pytest.mark.parametrize("source,construct", [
    ("(a+)+\\1", "backreference"), ("(?=a)(a*)*$", "lookaround"), ("(?!b)(a|aa)+$", "lookaround"),
    ("(a)?(?(1)b|c)(x+)+y", "conditional"), ("(?<=a)(a+)+", "lookaround"),
])
def test_unsupported_construct_in_unsafe_pattern(source: str, construct: str) -> None:
    with pytest.raises(ValueError, match="could backtrack without bound.*" + construct):
        compile_pattern(source)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="possessive and atomic need Python 3.11")
@pytest.mark.parametrize("source", ["(a*+)*b", "(?>a+)+b"])
def test_possessive_and_atomic_in_unsafe_pattern(source: str) -> None:
    with pytest.raises(ValueError, match="could backtrack without bound"):
        compile_pattern(source)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="possessive and atomic need Python 3.11")
@pytest.mark.parametrize("source,subject", [("a*+a", "aaa"), ("(?>a+)b", "aab"), ("(?>a+)a", "aa")])
def test_possessive_and_atomic_in_safe_pattern(source: str, subject: str) -> None:
    pattern = compile_pattern(source)
    assert pattern.engine == "re" and pattern.match(subject) == truth(source, subject)


@pytest.mark.parametrize("source,subject", [("(a)\\1", "aA"), ("(a)\\1", "ab"), ("(?P<x>b+)-(?P=x)", "bb-bb"),
                                            ("(?=ab)a", "ab"), ("(?!ab)a", "ab")])
def test_backreference_and_lookaround_in_safe_pattern(source: str, subject: str) -> None:
    pattern = compile_pattern(source)
    assert pattern.engine == "re"
    assert pattern.match(subject) == truth(source, subject)


def test_too_large_pattern() -> None:
    with pytest.raises(ValueError, match="too large"):
        compile_pattern("(a+)+(?:b{100}){200}")
    with pytest.raises(ValueError, match="too large"):
        compile_pattern("(?:\\b){20000}")  # zero-width body: re would loop 20000 times per try
    assert compile_pattern("(?:){99999999}").match("x")  # an empty body compiles to nothing


def test_deep_nesting_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        compile_pattern("(" * 2000 + "a" + ")" * 2000)


# --- literal prefix --------------------------------------------------------------------------

@pytest.mark.parametrize("source,prefix", [
    ("weather\\.bern.*", "weather.bern"),
    ("(?a)stockquotes\\.sun.*", "stockquotes.sun"),
    ("stockquotes\\.sun.*", "stockquotes.sun"),  # "\u017ftockquotes.sun" matches too: it folds to s
    ("quotes\\.sun", "quotes.sun"),
    ("ABC|ABD", "ab"),
    ("(?i)abc|abd", "ab"),
    ("^Foo\\.", "foo."),
    ("(?:foo)\\.bar", "foo.bar"),
    ("(?:foo)?bar", ""),
    ("ab*c", "a"),
    ("ab+c", "a"),
    ("[a]bc", "abc"),  # the parser turns [a] into a literal
    ("[ab]c", ""),
    ("\u00e9t\u00e9", ""),
    ("a.b", "a"),
    ("(?-i:AB)c", "abc"),
    ("(?-i:S)", "s"),
    ("\\d+", ""),
    ("", ""),
    ("Kelvin", "kelvin"),
    ("(?:ab*)c", "a"),
    ("(ab*)c", "a"),
    ("(?-i:ab?)c", "a"),
    ("(a)(b)", "ab"),
    ("(?:a(?:b))c", "abc"),
])
def test_literal_prefix_examples(source: str, prefix: str) -> None:
    assert compile_pattern(source).literal_prefix == prefix


def test_fold_maps_every_char_to_the_ascii_char_ignorecase_matches_it_to() -> None:
    """Brute force: every non-ASCII char IGNORECASE matches to an ASCII char folds to that
    char lowered, one char for one; with (?a) nothing non-ASCII matches at all."""
    everything = "".join(map(chr, range(0x80, sys.maxunicode + 1)))
    assert len(patterns.fold(everything)) == len(everything)
    for char in set(re.findall("[\x00-\x7f]", everything, re.IGNORECASE)):
        for ascii_char in map(chr, range(128)):
            if re.match(re.escape(ascii_char), char, re.IGNORECASE):
                assert patterns.fold(char) == ascii_char.lower(), char
    assert not re.search("[\x00-\x7f]", everything, re.IGNORECASE | re.ASCII)


literals = st.text(alphabet="abcikmsxyzKIS.-_0", min_size=1, max_size=6)


@settings(max_examples=1000, deadline=None)
@given(literals, st.sampled_from(["", "(?a)"]), pattern_bodies, st.data())
def test_literal_prefix_never_excludes_a_match(literal: str, flags: str, body: str, data) -> None:
    source = flags + re.escape(literal) + body
    try:
        pattern = compile_pattern(source)
    except ValueError:
        assume(False)
        return
    assert pattern.literal_prefix == pattern.literal_prefix.lower() and pattern.literal_prefix.isascii()
    tail = data.draw(subjects)
    subject = _mutate(literal, lambda options: data.draw(st.sampled_from(options))) + tail
    for candidate in (subject, literal + tail, tail):
        if pattern.match(candidate):
            assert patterns.fold(candidate).startswith(pattern.literal_prefix), (source, candidate)


def test_pattern_attributes() -> None:
    pattern = compile_pattern("Ab")
    assert isinstance(pattern, Pattern) and pattern.source == "Ab" and pattern.literal_prefix == "ab"
    assert Pattern("Ab").match("aBc") is True and Pattern("Ab").match("b") is False
