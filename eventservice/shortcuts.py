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
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .clients import Publisher, Subjects, Subscriber
from .link import check_subjects
from .config import DEFAULT_CLIENT_TIMEOUT
from .event import Event

log = logging.getLogger(__name__)

_lock = threading.RLock()
Login = Tuple[Optional[str], Optional[str]]  # (user, password) given; (None, None): the environment's
_subscribers: Dict[Login, "_Shared"] = {}
_publishers: Dict[Login, Publisher] = {}

Callback = Callable[[Event], Any]


class _Shared(Subscriber):
    """The shared subscriber: counts, per subject, the events its handlers were called for,
    so that :func:`emit` can wait for them."""

    def __init__(self, user: Optional[str], password: Optional[str]) -> None:
        super().__init__(user=user, password=password)
        self.arrived: "collections.Counter[str]" = collections.Counter()
        self.cond = threading.Condition()
        self.in_handler = threading.local()

    def event(self, event: Event) -> None:
        self.in_handler.active = True
        try:
            super().event(event)
        finally:
            self.in_handler.active = False
            with self.cond:
                self.arrived[event.subject.casefold()] += 1
                self.cond.notify_all()

    def wanted(self, subjects: Subjects) -> "collections.Counter[str]":
        """How many events on ``subjects`` handlers here would be called for, per subject;
        none when asked from a handler (waiting there would hold up the deliveries)."""
        if getattr(self.in_handler, "active", False):
            return collections.Counter()
        return collections.Counter(s.casefold() for s in check_subjects(subjects) if self._handlers.targets(s))

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


def _shared_subscriber(login: Login) -> "_Shared":
    with _lock:
        subscriber = _subscribers.get(login)
        if subscriber is None:
            subscriber = _subscribers[login] = _Shared(*login)
            subscriber.start()
        return subscriber


def register(subjects: Subjects, callback: Optional[Callback] = None, *, match: bool = False,
             user: Optional[str] = None, password: Optional[str] = None) -> Any:
    """Call ``callback(event)`` for every event on these subjects (or, with ``match=True``,
    regex patterns), from the shared subscriber's threads. Returns ``callback``; without it,
    a decorator. Subscribed at the service when this returns; raises what subscribing raised."""
    if callback is None:
        def decorate(fn: Callback) -> Callback:
            register(subjects, fn, match=match, user=user, password=password)
            return fn
        return decorate
    subscriber = _shared_subscriber((user, password))
    if match:
        return subscriber.on_match(subjects, callback)
    return subscriber.on(subjects, callback)


def unregister(callback: Callback, subjects: Optional[Subjects] = None) -> bool:
    """Detach ``callback`` from these subjects, or from all (see ``Subscriber.remove_handler``),
    whichever shared subscriber holds it."""
    with _lock:
        subscribers = list(_subscribers.values())
    return any([subscriber.remove_handler(callback, subjects) for subscriber in subscribers])


def emit(subjects: Subjects, msg: Any = None, *, timeout: float = DEFAULT_CLIENT_TIMEOUT,
         user: Optional[str] = None, password: Optional[str] = None) -> None:
    """Publish ``msg`` on these subjects through the shared publisher (of ``user``); raises
    what the service raised. Returns once the service accepted the event and, when functions
    registered here (as the same user) want it, once they were called (or as many events on
    those subjects; at most ``timeout`` seconds; not waited for when called from a registered
    function)."""
    login = (user, password)
    with _lock:
        publisher = _publishers.get(login)
        if publisher is None:
            publisher = _publishers[login] = Publisher(user=user, password=password)
        subscriber = _subscribers.get(login)
    wanted = subscriber.wanted(subjects) if subscriber is not None else None
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
