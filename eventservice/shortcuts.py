"""Two-line use for one-off scripts: ``register`` a function, ``emit`` an event.

::

    import eventservice
    eventservice.register("greetings", lambda event: print(event.msg))
    eventservice.emit("greetings", "hello")

``register`` makes (at its first call) one process-wide :class:`~eventservice.Subscriber`
that listens in a background thread, and attaches the function as a handler (see
:meth:`Subscriber.on`); ``emit`` makes one process-wide :class:`~eventservice.Publisher`
and publishes, returning once the service accepted the event and, when functions
registered in this process want it, once they were called (so the two lines above print
"hello" before a script ends). Both clients find the service the usual way (name server,
``EVENTSERVICE_IDENT`` for the passphrase, or ``EVENTSERVICE_USER`` and
``EVENTSERVICE_PASSWORD`` for a user) and are closed at interpreter exit, or by
:func:`shutdown`. ``user=`` and ``password=`` log in as another user: one shared client per
user. Thread-safe.

leap.common.events' shape works too: ``emit(subject, *content)``; a callback that takes
more than one argument (``def cb(subject, *content)``) is called with the subject and the
content; ``register(..., uid=, replace=)``; ``unregister(subject)`` and
``unregister(subject, uid=...)``.
"""

from __future__ import annotations

import atexit
import collections
import inspect
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from . import typed
from .clients import Publisher, Subjects, Subscriber
from .config import DEFAULT_CLIENT_TIMEOUT
from .event import Event
from .link import check_subjects
from .typed import register_type, registered_types

log = logging.getLogger(__name__)

_lock = threading.RLock()
Login = Tuple[Optional[str], Optional[str]]  # (user, password) given; (None, None): the environment's
_subscribers: Dict[Login, "_Shared"] = {}
_publishers: Dict[Login, Publisher] = {}

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


class _Shared(Subscriber):
    """A shared subscriber: counts, per subject, the events its handlers were called for,
    so that :func:`emit` can wait for them; keeps the uids of its handlers (per casefolded
    subject) and the subjects and patterns registered, for :func:`unregister`."""

    def __init__(self, user: Optional[str], password: Optional[str]) -> None:
        super().__init__(user=user, password=password)
        self.arrived: "collections.Counter[str]" = collections.Counter()
        self.cond = threading.Condition()
        self.in_handler = threading.local()
        self.uids: Dict[Tuple[str, Any], Any] = {}  # (casefolded subject, uid) -> the handler registered with it
        self.names: Set[str] = set()  # subjects (casefolded) and patterns registered here

    def event(self, event: Event) -> None:
        self.in_handler.active = True
        try:
            super().event(event)
        finally:
            self.in_handler.active = False
            with self.cond:
                self.arrived[event.subject.casefold()] += 1
                self.cond.notify_all()

    def wanted(self, subjects: Subjects, msg: Any) -> "collections.Counter[str]":
        """How many events with ``msg`` on ``subjects`` handlers here would be called for, per
        subject; none when asked from a handler (waiting there would hold up the deliveries)."""
        if getattr(self.in_handler, "active", False):
            return collections.Counter()
        travelled = typed.encode(msg)  # what handlers' filters see
        return collections.Counter(s.casefold() for s in check_subjects(subjects)
                                   if self._handlers.targets(s, travelled))

    def counted(self) -> "collections.Counter[str]":
        """The events counted so far, per subject."""
        with self.cond:
            return collections.Counter(self.arrived)

    def wait_for(self, wanted: "collections.Counter[str]", before: "collections.Counter[str]",
                 timeout: float) -> None:
        """Wait until ``wanted`` more events arrived than ``before`` (at most ``timeout`` s)."""
        with self.cond:
            if not self.cond.wait_for(lambda: all(self.arrived[s] >= before[s] + n for s, n in wanted.items()),
                                      timeout):
                log.debug("emit: handlers here not called within %gs", timeout)

    def drop(self, target: str, uid: Any) -> bool:
        """unregister(subject[, uid=]) on this subscriber (under the module's lock)."""
        folded = target.casefold()
        if uid is not None:
            handler = self.uids.pop((folded, uid), None)
            return handler is not None and self.remove_handler(handler, target)
        for key in [key for key in self.uids if key[0] == folded]:
            del self.uids[key]
        had = folded in self.names or target in self.names
        self.names.difference_update((folded, target))
        self.unsubscribe(target)
        return had


def _shared_subscriber(login: Login) -> "_Shared":
    with _lock:
        subscriber = _subscribers.get(login)
        if subscriber is None:
            subscriber = _subscribers[login] = _Shared(*login)
            subscriber.start()
        return subscriber


def register(subjects: Subjects, callback: Optional[Callback] = None, *, match: bool = False,
             uid: Any = None, replace: bool = False, user: Optional[str] = None,
             password: Optional[str] = None) -> Any:
    """Call ``callback(event)`` for every event on these subjects (or, with ``match=True``,
    regex patterns), from the shared subscriber's threads; a callback that takes more than
    one argument is called ``callback(subject, *content)`` (see :func:`emit`). Returns
    ``callback``; without it, a decorator. Subscribed at the service when this returns;
    raises what subscribing raised. With ``uid``, the callback is known by it on each
    subject: ``unregister(subject, uid=uid)`` removes it, and registering that uid again
    on the subject raises ``ValueError`` unless ``replace=True`` (then it replaces it)."""
    if callback is None:
        def decorate(fn: Callback) -> Callback:
            register(subjects, fn, match=match, uid=uid, replace=replace, user=user, password=password)
            return fn
        return decorate
    names = check_subjects(subjects, "pattern" if match else "subject")
    handler: Any = callback
    if _takes_content(callback):
        _content_type()
        handler = _Leap(callback)
    with _lock:
        subscriber = _shared_subscriber((user, password))
        if uid is not None:
            for name in names:
                old = subscriber.uids.get((name.casefold(), uid))
                if old is not None and not replace:
                    raise ValueError(f"a callback with uid {uid!r} is registered on {name!r}: pass replace=True")
                if old is not None:
                    subscriber.remove_handler(old, name)
        if match:
            subscriber.on_match(names, handler)
        else:
            subscriber.on(names, handler)
        subscriber.names.update(names if match else (name.casefold() for name in names))
        if uid is not None:
            subscriber.uids.update(((name.casefold(), uid), handler) for name in names)
    return callback


def unregister(target: Any, subjects: Optional[Subjects] = None, *, uid: Any = None) -> bool:
    """``unregister(callback[, subjects])``: detach ``callback`` from these subjects, or
    from all (see ``Subscriber.remove_handler``), whichever shared subscriber holds it; True
    if one held it. ``unregister(subject)``: drop every callback of the subject (or pattern),
    True if callbacks were registered on it here; ``unregister(subject, uid=...)``: the one
    registered there with that uid, True if there was one."""
    with _lock:
        subscribers = list(_subscribers.values())
        if not isinstance(target, str):
            return any([subscriber.remove_handler(target, subjects) for subscriber in subscribers])
        return any([subscriber.drop(target, uid) for subscriber in subscribers])


def emit(subjects: Subjects, *content: Any, timeout: float = DEFAULT_CLIENT_TIMEOUT,
         user: Optional[str] = None, password: Optional[str] = None) -> None:
    """Publish on these subjects through the shared publisher (of ``user``): no content
    publishes None, one value that value, several a :class:`Content` of them (leap's
    ``emit(event, *content)``). Raises what the service raised. Returns once the service
    accepted the event and, when functions registered here (as the same user) want it, once
    they were called (or as many events on those subjects; at most ``timeout`` seconds; not
    waited for when called from a registered function)."""
    if len(content) > 1:
        _content_type()
    msg = None if not content else content[0] if len(content) == 1 else Content(content)
    login = (user, password)
    with _lock:
        publisher = _publishers.get(login)
        if publisher is None:
            publisher = _publishers[login] = Publisher(user=user, password=password)
        subscriber = _subscribers.get(login)
    wanted = subscriber.wanted(subjects, msg) if subscriber is not None else None
    if subscriber is None or not wanted:
        publisher.publish(subjects, msg)
        return
    before = subscriber.counted()
    publisher.publish(subjects, msg)
    subscriber.wait_for(wanted, before, timeout)


def shutdown() -> None:
    """Close the shared clients (registered callbacks are detached); later calls make new ones."""
    with _lock:
        clients: List[Union[Subscriber, Publisher]] = [*_subscribers.values(), *_publishers.values()]
        _subscribers.clear()
        _publishers.clear()
    errors = []
    for client in clients:
        try:
            client.close()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


atexit.register(shutdown)
