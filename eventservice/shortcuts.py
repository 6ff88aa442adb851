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
"hello" before a script ends). Both clients find the
service the usual way (name server, ``EVENTSERVICE_IDENT`` for the passphrase) and are closed
at interpreter exit, or by :func:`shutdown`. Thread-safe.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
from typing import Any, Callable, Optional

from .clients import Publisher, Subjects, Subscriber
from .link import check_subjects
from .config import DEFAULT_CLIENT_TIMEOUT
from .event import Event

log = logging.getLogger(__name__)

_lock = threading.RLock()
_subscriber: Optional["_Shared"] = None
_publisher: Optional[Publisher] = None

Callback = Callable[[Event], Any]


class _Shared(Subscriber):
    """The shared subscriber: counts, per subject, the events its handlers were called for,
    so that :func:`emit` can wait for them."""

    def __init__(self) -> None:
        super().__init__()
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


def _shared_subscriber() -> Subscriber:
    global _subscriber
    with _lock:
        if _subscriber is None:
            _subscriber = _Shared()
            _subscriber.start()
        return _subscriber


def register(subjects: Subjects, callback: Optional[Callback] = None, *, match: bool = False) -> Any:
    """Call ``callback(event)`` for every event on these subjects (or, with ``match=True``,
    regex patterns), from the shared subscriber's threads. Returns ``callback``; without it,
    a decorator. Subscribed at the service when this returns; raises what subscribing raised."""
    if callback is None:
        def decorate(fn: Callback) -> Callback:
            register(subjects, fn, match=match)
            return fn
        return decorate
    subscriber = _shared_subscriber()
    if match:
        return subscriber.on_match(subjects, callback)
    return subscriber.on(subjects, callback)


def unregister(callback: Callback, subjects: Optional[Subjects] = None) -> bool:
    """Detach ``callback`` from these subjects, or from all (see ``Subscriber.remove_handler``)."""
    with _lock:
        subscriber = _subscriber
    return subscriber is not None and subscriber.remove_handler(callback, subjects)


def emit(subjects: Subjects, msg: Any = None, *, timeout: float = DEFAULT_CLIENT_TIMEOUT) -> None:
    """Publish ``msg`` on these subjects through the shared publisher; raises what the service
    raised. Returns once the service accepted the event and, when functions registered here
    want it, once they were called (or as many events on those subjects; at most ``timeout``
    seconds; not waited for when called from a registered function)."""
    global _publisher
    with _lock:
        if _publisher is None:
            _publisher = Publisher()
        publisher, subscriber = _publisher, _subscriber
    wanted = subscriber.wanted(subjects) if subscriber is not None else None
    if subscriber is None or not wanted:
        publisher.publish(subjects, msg)
        return
    before = subscriber.counted()
    publisher.publish(subjects, msg)
    subscriber.wait_for(wanted, before, timeout)


def shutdown() -> None:
    """Close the shared clients (registered callbacks are detached); later calls make new ones."""
    global _subscriber, _publisher
    with _lock:
        subscriber, publisher = _subscriber, _publisher
        _subscriber = _publisher = None
    try:
        if subscriber is not None:
            subscriber.close()
    finally:
        if publisher is not None:
            publisher.close()


atexit.register(shutdown)
