"""The errors of eventservice: one root, :class:`EventServiceError`, and errors that carry
what they are about as fields. Each also derives from the built-in exception users caught
before it existed (``TimeoutError``, ``PermissionError``, ``RuntimeError``...), so code
that catches those keeps working.

Misuse (a subject that is not a str, an invalid pattern) raises the built-ins ``TypeError``
and ``ValueError``, as the standard library does. The service itself raises only built-in
exceptions over the wire, so plain Pyro5 clients can decode them; eventservice's clients
turn them into the richer errors here.
"""

from __future__ import annotations

import ast
import re
from typing import Optional


class EventServiceError(Exception):
    """The root of eventservice's own errors."""


class NameTakenError(EventServiceError, RuntimeError):
    """The name is registered by another Event Service that still answers."""

    def __init__(self, message: str, name: str = "", holder: str = "") -> None:
        super().__init__(message)
        self.name = name  # the name in the name server
        self.holder = holder  # the URI registered under it


class BackboneError(EventServiceError):
    """The backbone cannot be used: a bad URL or name, a missing client library, an engine
    that cannot be reached or refuses the credentials. The text is one line, without
    passwords."""


class NoResponderError(EventServiceError, TimeoutError):
    """A request got no answer: no responder holds its subject, or none answered within
    ``timeout`` seconds (None when there was no responder to ask)."""

    def __init__(self, message: str, subject: str = "", timeout: Optional[float] = None) -> None:
        super().__init__(message)
        self.subject = subject
        self.timeout = timeout


class RemoteError(EventServiceError):
    """A responder raised while answering a request: ``type_name`` is its exception's
    class (``"ValueError"``, or ``"module.Class"`` for others), ``message`` its text."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"the responder raised {type_name}: {message}")
        self.type_name = type_name
        self.message = message


def type_name(exc: BaseException) -> str:
    """The name :class:`RemoteError` carries for ``exc``: its class, with its module unless
    it is a built-in."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class ServiceNotFoundError(EventServiceError, ConnectionError):
    """No Event Service could be reached: no name server answered, the name is not
    registered, or nothing answers where it points. The text says what to do next."""


class PermissionDenied(EventServiceError, PermissionError):
    """The service refused an operation by the rules of its users file (``es --users``):
    ``user`` may not ``action`` (publish, subscribe, change, unsubscribe, join, call)
    ``subject`` (a subject, a pattern, a subscriber's URI, a work-queue group or a method).
    Nothing changed."""

    def __init__(self, message: str, user: str = "", action: str = "", subject: str = "") -> None:
        super().__init__(message)
        self.user = user
        self.action = action
        self.subject = subject

    @classmethod
    def from_text(cls, text: str) -> "PermissionDenied":
        """The error whose text the service sent (see :func:`denial_text`); fields left
        empty when the text has another form."""
        found = _DENIAL.match(text)
        if found is None:
            return cls(text)
        return cls(text, ast.literal_eval(found["user"]), found["action"], ast.literal_eval(found["subject"]))


_QUOTED = r"'(?:[^'\\]|\\.)*'" + "|" + r'"(?:[^"\\]|\\.)*"'  # a str as repr() writes it
_DENIAL = re.compile(rf"permission denied: user (?P<user>{_QUOTED}) may not (?P<action>[a-z]+) (?P<subject>{_QUOTED})")


def denial_text(user: str, action: str, subject: str, why: str) -> str:
    """The text of a refusal, as the service raises it in a built-in ``PermissionError``
    (which plain Pyro5 clients decode) and :meth:`PermissionDenied.from_text` reads."""
    return f"permission denied: user {user!r} may not {action} {subject!r} ({why})"
