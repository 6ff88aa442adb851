"""URLs of backbone engines: which engine a URL names, their passwords masked for showing,
the event space's name checked, one-line descriptions of errors."""

from __future__ import annotations

import re
from typing import List, Sequence, Set
from urllib.parse import unquote, urlsplit

NATS_SCHEMES = ("nats", "tls")
REDIS_SCHEMES = ("redis", "rediss")

_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")


def split_urls(values: Sequence[str]) -> List[str]:
    """The URLs in ``values``, each of which may hold several separated by commas."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def mask_url(url: str) -> str:
    """``url`` with its password (or a NATS token) replaced by ``***``."""
    def masked(match: "re.Match[str]") -> str:
        scheme, userinfo = match.group("scheme"), match.group("userinfo")
        user, colon, _password = userinfo.partition(":")
        if colon:
            return f"{scheme}{user}:***@"
        if scheme.lower().rstrip(":/") in NATS_SCHEMES and userinfo:
            return f"{scheme}***@"  # nats://TOKEN@host: the user part is a token
        return match.group(0)
    return _USERINFO.sub(masked, url)


def engine_of(url: str) -> str:
    """"nats" or "redis" for ``url``; ValueError for any other scheme."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in NATS_SCHEMES:
        return "nats"
    if scheme in REDIS_SCHEMES:
        return "redis"
    raise ValueError(f"backbone URL {mask_url(url)!r}: the scheme must be one of "
                     f"{', '.join(s + '://' for s in NATS_SCHEMES + REDIS_SCHEMES)}")


def check_name(name: str) -> str:
    """The event space's name: letters, digits, ``_`` and ``-``, in dot-separated parts."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 100:
        raise ValueError(f"backbone name {name!r}: use letters, digits, '_' and '-' (parts may be "
                         "separated by single dots), at most 100 characters")
    return name


def describe(exc: BaseException) -> str:
    """One line saying what ``exc`` was."""
    text = " ".join(str(exc).split())
    if not text or text in ("None",):
        return type(exc).__name__
    return text


def secrets_of(urls: Sequence[str]) -> List[str]:
    secrets: Set[str] = set()
    for url in urls:
        parts = urlsplit(url)
        if parts.password:
            secrets.update((parts.password, unquote(parts.password)))
        elif parts.username and parts.scheme.lower() in NATS_SCHEMES:
            secrets.update((parts.username, unquote(parts.username)))
    return sorted((s for s in secrets if s), key=len, reverse=True)
