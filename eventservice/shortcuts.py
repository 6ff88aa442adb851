"""Two-line use for one-off scripts: ``register`` a function, ``emit`` an event.

::

    import eventservice
    eventservice.register("greetings", lambda event: print(event.msg))
    eventservice.emit("greetings", "hello")

``register`` makes (at its first call) one process-wide :class:`~eventservice.Subscriber`
that listens in a background thread, and attaches the function as a handler (see
:meth:`Subscriber.on`); ``emit`` makes one process-wide :class:`~eventservice.Publisher`
and publishes, returning once the service accepted the event. Both clients find the
service the usual way (name server, ``EVENTSERVICE_IDENT`` for the passphrase) and are closed
at interpreter exit, or by :func:`shutdown`. Thread-safe.

leap.common.events' shape works too: ``emit(subject, *content)``; a callback that takes
more than one argument (``def cb(subject, *content)``) is called with the subject and the
content; ``register(..., uid=, replace=)``; ``unregister(subject)`` and
``unregister(subject, uid=...)``.
"""

from __future__ import annotations

import atexit
import inspect
import threading
from typing import Any, Callable, Dict, Optional, Set, Tuple

from .clients import Publisher, Subjects, Subscriber
from .event import Event
from .link import check_subjects
from .typed import register_type, registered_types

_lock = threading.RLock()
_subscriber: Optional[Subscriber] = None
_publisher: Optional[Publisher] = None
_uids: Dict[Tuple[str, Any], Any] = {}  # (casefolded subject, uid) -> the handler registered with it
_names: Set[str] = set()  # subjects (casefolded) and patterns registered here, for unregister(subject)

Callback = Callable[..., Any]
CONTENT_TYPE = "eventservice.Content"  # the registered name content of several values travels under


class Content(tuple):  # type: ignore[type-arg]
    """What ``emit(subject, a, b, ...)`` publishes: the values, in order (a tuple)."""


def _content_type() -> None:
    """Register :class:`Content` (when used: every registered type costs subscribers a check)."""
    if CONTENT_TYPE not in registered_types():
        register_type(Content, CONTENT_TYPE, to_dict=lambda c: {"content": list(c)},
                      from_dict=lambda d: Content(d["content"]))


class _Leap:
    """A callback of leap's shape, ``cb(subject, *content)``, as a handler (equal to the
    callback, so that ``unregister(cb)`` finds it)."""

    def __init__(self, callback: Callback) -> None:
        self.callback = callback

    def __call__(self, event: Event) -> Any:
        msg = event.msg
        content = () if msg is None else tuple(msg) if type(msg) is Content else (msg,)
        return self.callback(event.subject, *content)

    def __eq__(self, other: object) -> bool:
        return other == self.callback

    def __hash__(self) -> int:
        return hash(self.callback)


def _takes_content(callback: Callback) -> bool:
    """True for a callback of leap's shape: more than one positional argument, or ``*args``."""
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some built-ins): an Event then
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
               for p in parameters) > 1


def _shared_subscriber() -> Subscriber:
    global _subscriber
    with _lock:
        if _subscriber is None:
            _subscriber = Subscriber()
            _subscriber.start()
        return _subscriber


def register(subjects: Subjects, callback: Optional[Callback] = None, *, match: bool = False,
             uid: Any = None, replace: bool = False) -> Any:
    """Call ``callback(event)`` for every event on these subjects (or, with ``match=True``,
    regex patterns), from the shared subscriber's threads; a callback that takes more than
    one argument is called ``callback(subject, *content)`` (see :func:`emit`). Returns
    ``callback``; without it, a decorator. Subscribed at the service when this returns;
    raises what subscribing raised. With ``uid``, the callback is known by it on each
    subject: ``unregister(subject, uid=uid)`` removes it, and registering that uid again
    on the subject raises ``ValueError`` unless ``replace=True`` (then it replaces it)."""
    if callback is None:
        def decorate(fn: Callback) -> Callback:
            register(subjects, fn, match=match, uid=uid, replace=replace)
            return fn
        return decorate
    names = check_subjects(subjects, "pattern" if match else "subject")
    handler: Any = callback
    if _takes_content(callback):
        _content_type()
        handler = _Leap(callback)
    with _lock:
        subscriber = _shared_subscriber()
        if uid is not None:
            for name in names:
                old = _uids.get((name.casefold(), uid))
                if old is not None and not replace:
                    raise ValueError(f"a callback with uid {uid!r} is registered on {name!r}: pass replace=True")
                if old is not None:
                    subscriber.remove_handler(old, name)
        if match:
            subscriber.on_match(names, handler)
        else:
            subscriber.on(names, handler)
        _names.update(names if match else (name.casefold() for name in names))
        if uid is not None:
            _uids.update(((name.casefold(), uid), handler) for name in names)
    return callback


def unregister(target: Any, subjects: Optional[Subjects] = None, *, uid: Any = None) -> bool:
    """``unregister(callback[, subjects])``: detach ``callback`` from these subjects, or
    from all (see ``Subscriber.remove_handler``); True if it held any.
    ``unregister(subject)``: drop every callback of the subject (or pattern), True if
    callbacks were registered on it here; ``unregister(subject, uid=...)``: the one
    registered there with that uid, True if there was one."""
    with _lock:
        subscriber = _subscriber
        if subscriber is None:
            return False
        if not isinstance(target, str):
            return subscriber.remove_handler(target, subjects)
        folded = target.casefold()
        if uid is not None:
            handler = _uids.pop((folded, uid), None)
            return handler is not None and subscriber.remove_handler(handler, target)
        for key in [key for key in _uids if key[0] == folded]:
            del _uids[key]
        had = folded in _names or target in _names
        _names.difference_update((folded, target))
        subscriber.unsubscribe(target)
        return had


def emit(subjects: Subjects, *content: Any) -> None:
    """Publish on these subjects through the shared publisher: no content publishes None,
    one value that value, several a :class:`Content` of them (leap's ``emit(event,
    *content)``). Returns once the service accepted the event; raises what it raised."""
    global _publisher
    if len(content) > 1:
        _content_type()
    msg = None if not content else content[0] if len(content) == 1 else Content(content)
    with _lock:
        if _publisher is None:
            _publisher = Publisher()
        publisher = _publisher
    publisher.publish(subjects, msg)


def shutdown() -> None:
    """Close the shared clients (registered callbacks are detached); later calls make new ones."""
    global _subscriber, _publisher
    with _lock:
        subscriber, publisher = _subscriber, _publisher
        _subscriber = _publisher = None
        _uids.clear()
        _names.clear()
    try:
        if subscriber is not None:
            subscriber.close()
    finally:
        if publisher is not None:
            publisher.close()


atexit.register(shutdown)
