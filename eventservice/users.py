"""The users file of ``es --users``: who may connect, and what each user may publish and
subscribe to.

A TOML file with one table per user::

    [users.alice]
    password = "s3cret"                 # or: cert = "alice" (the CN of a TLS client certificate)
    publish = ['orders\\..*']            # regexes, as subscribeMatch: re.match, ignore case
    subscribe = ['orders\\..*', 'es\\.presence\\..*']
    deny_publish = ['orders\\.internal\\..*']   # deny wins over allow
    admin = true                        # may call stats(), reload() and replacedBy()

A user has a ``password`` or a ``cert`` (or both). A subject may be published when one of
``publish`` matches it and none of ``deny_publish`` does; the same for subscribing. A user
without ``publish`` may publish nothing; the same for ``subscribe``. Any other key, a value
of the wrong type, an invalid pattern or a file that does not parse is a
:class:`UsersFileError` naming the file, the line and the key.

Each :class:`User` decides once per subject and remembers it (up to
:data:`MAX_DECISIONS` subjects), so a check on the publishing path is a dict lookup.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Dict, List, Optional, Sequence

from .patterns import Pattern, compile_pattern

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the backport, on older Pythons
    import tomli as tomllib

RULE_KEYS = ("publish", "subscribe", "deny_publish", "deny_subscribe")
KEYS = ("password", "cert") + RULE_KEYS + ("admin",)
MAX_DECISIONS = 10_000  # subjects whose decision a user remembers, per action, before starting over


class UsersFileError(ValueError):
    """A users file that cannot be used; the text names the file, the line and the key."""


class Rules:
    """Allow and deny patterns of one action (publish or subscribe) of one user."""

    def __init__(self, user: str, action: str, allow: Sequence[Pattern], deny: Sequence[Pattern]) -> None:
        self.user, self.action = user, action
        self.allow, self.deny = tuple(allow), tuple(deny)
        self._decided: Dict[str, Optional[str]] = {}

    def refusal(self, subject: str) -> Optional[str]:
        """None when ``subject`` is allowed; else the rule that refuses it, as text."""
        decided = self._decided
        try:
            return decided[subject]
        except KeyError:
            pass
        why = self._decide(subject)
        if len(decided) >= MAX_DECISIONS:
            decided.clear()
        decided[subject] = why
        return why

    def _decide(self, subject: str) -> Optional[str]:
        for pattern in self.deny:
            if pattern.match(subject):
                return f"deny_{self.action} rule {pattern.source!r} of user {self.user!r} matches it"
        if any(pattern.match(subject) for pattern in self.allow):
            return None
        if not self.allow:
            return f"user {self.user!r} may {self.action} nothing"
        return f"no {self.action} rule of user {self.user!r} matches it"


class User:
    """One user of the file: how it logs in, its rules, whether it is an admin."""

    def __init__(self, name: str, entry: Dict[str, Any], patterns: Dict[str, List[Pattern]]) -> None:
        self.name = name
        self.password: Optional[str] = entry.get("password")
        self.cert: Optional[str] = entry.get("cert")
        self.admin: bool = entry.get("admin", False)
        self.publish = Rules(name, "publish", patterns["publish"], patterns["deny_publish"])
        self.subscribe = Rules(name, "subscribe", patterns["subscribe"], patterns["deny_subscribe"])

    @classmethod
    def without_rights(cls, name: str) -> "User":
        """A user that may do nothing (one the file no longer has)."""
        return cls(name, {}, {key: [] for key in RULE_KEYS})

    @property
    def subscribes_at_all(self) -> bool:
        """True when some subject may be subscribed to (what ``subscribeMatch`` needs)."""
        return bool(self.subscribe.allow)


class Users:
    """The users of one file, by name (the :class:`~eventservice.auth.Accounts` of the
    service's daemon). Not changed once made: a reload makes a new one."""

    def __init__(self, path: str, users: Dict[str, User]) -> None:
        self.path = path
        self._users = users
        self._by_cert = {user.cert: name for name, user in users.items() if user.cert}

    def __len__(self) -> int:
        return len(self._users)

    def get(self, name: Optional[str]) -> Optional[User]:
        """The user called ``name``, or None."""
        return self._users.get(name) if name is not None else None

    def password_of(self, user: str) -> Optional[str]:
        found = self._users.get(user)
        return found.password if found is not None else None

    def user_of_cert(self, common_name: str) -> Optional[str]:
        return self._by_cert.get(common_name)


def load_users(path: str) -> Users:
    """The users of the file at ``path``; :class:`UsersFileError` when it cannot be used."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"users file {path}: cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsersFileError(f"users file {path}: not valid TOML: {exc}") from None
    return Users(path, _Checker(path, text).users(data))


class _Checker:
    """Checks the parsed file; its errors name the line, found in the text."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def fail(self, what: str, user: Optional[str] = None, key: Optional[str] = None) -> UsersFileError:
        line = self._line_of(user, key)
        where = f", line {line}" if line else ""
        return UsersFileError(f"users file {self.path}{where}: {what}")

    def users(self, data: Dict[str, Any]) -> Dict[str, User]:
        for key in data:
            if key != "users":
                raise self.fail(f"unknown key {key!r} (the file holds [users.NAME] tables only)", None, key)
        tables = data.get("users")
        if not isinstance(tables, dict) or not tables:
            raise self.fail("no users: give at least one [users.NAME] table")
        users: Dict[str, User] = {}
        certs: Dict[str, str] = {}
        for name, entry in tables.items():
            if not isinstance(entry, dict):
                raise self.fail(f"users.{name} must be a table of the keys {', '.join(KEYS)}", name)
            users[name] = user = User(name, self._entry(name, entry), self._patterns(name, entry))
            if user.cert is not None:
                if user.cert in certs:
                    raise self.fail(f"user {name!r} has the cert {user.cert!r} of user {certs[user.cert]!r}",
                                    name, "cert")
                certs[user.cert] = name
        return users

    def _entry(self, name: str, entry: Dict[str, Any]) -> Dict[str, Any]:
        for key, value in entry.items():
            if key not in KEYS:
                raise self.fail(f"unknown key {key!r} of user {name!r} (known: {', '.join(KEYS)})", name, key)
            if key in ("password", "cert") and (not isinstance(value, str) or not value):
                raise self.fail(f"{key} of user {name!r} must be a non-empty string", name, key)
            if key == "admin" and not isinstance(value, bool):
                raise self.fail(f"admin of user {name!r} must be true or false", name, key)
            if key in RULE_KEYS and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise self.fail(f"{key} of user {name!r} must be a list of regex strings", name, key)
        if "password" not in entry and "cert" not in entry:
            raise self.fail(f"user {name!r} has neither password nor cert: it could never log in", name)
        return entry

    def _patterns(self, name: str, entry: Dict[str, Any]) -> Dict[str, List[Pattern]]:
        compiled: Dict[str, List[Pattern]] = {}
        for key in RULE_KEYS:
            compiled[key] = []
            for source in entry.get(key, []):
                try:
                    compiled[key].append(compile_pattern(source))
                except ValueError as exc:
                    raise self.fail(f"{key} of user {name!r}: pattern {source!r}: {exc}", name, key) from None
        return compiled

    def _line_of(self, user: Optional[str], key: Optional[str]) -> Optional[int]:
        """The line of ``key`` in the table of ``user`` (of the table, without a key; of a
        top-level key, without a user), 1-based; None when it cannot be found."""
        start, end = 0, len(self.lines)
        if user is not None:
            header = re.compile(r"^\s*\[\s*users\s*\.\s*(?P<q>[\"']?)" + re.escape(user) + r"(?P=q)\s*\]")
            found = _first(self.lines, header.match, 0, end)
            if found is None:
                return _first(self.lines, re.compile(re.escape(user)).search, 0, end)
            if key is None:
                return found + 1
            start = found + 1
            following = _first(self.lines, re.compile(r"^\s*\[").match, start, end)
            end = following if following is not None else end
        if key is None:
            return None
        assignment = re.compile(r"^\s*(?P<q>[\"']?)" + re.escape(key) + r"(?P=q)\s*=")
        found = _first(self.lines, assignment.match, start, end)
        if found is None:
            found = _first(self.lines, re.compile(re.escape(key)).search, start, end)
        return None if found is None else found + 1


def _first(lines: List[str], test: Any, start: int, end: int) -> Optional[int]:
    """The index of the first of ``lines[start:end]`` that ``test`` finds something in."""
    for index in range(start, end):
        if test(lines[index]):
            return index
    return None

