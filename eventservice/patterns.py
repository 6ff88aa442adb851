"""Subscription patterns: Python ``re`` semantics (IGNORECASE, ``re.match``).

Placeholder interface; the bounded-work matcher replaces the body.
"""

from __future__ import annotations

import re


class Pattern:
    """A compiled subscription pattern."""

    __slots__ = ("source", "_regex", "literal_prefix")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._regex = re.compile(source, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"invalid pattern {source!r}: {exc}") from None
        self.literal_prefix = ""

    def match(self, subject: str) -> bool:
        return self._regex.match(subject) is not None


def compile_pattern(source: str) -> Pattern:
    """Compile ``source``; TypeError if it is not a str, ValueError if it is no valid pattern."""
    if not isinstance(source, str):
        raise TypeError(f"pattern must be a str, not {type(source).__name__}")
    return Pattern(source)
