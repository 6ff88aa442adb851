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
"""

from __future__ import annotations

import atexit
import threading
from typing import Any, Callable, Optional

from .clients import Publisher, Subjects, Subscriber
from .event import Event

_lock = threading.RLock()
_subscriber: Optional[Subscriber] = None
_publisher: Optional[Publisher] = None

Callback = Callable[[Event], Any]


def _shared_subscriber() -> Subscriber:
    global _subscriber
    with _lock:
        if _subscriber is None:
            _subscriber = Subscriber()
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


def emit(subjects: Subjects, msg: Any = None) -> None:
    """Publish ``msg`` on these subjects through the shared publisher; returns once the
    service accepted the event and raises what it raised."""
    global _publisher
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
    try:
        if subscriber is not None:
            subscriber.close()
    finally:
        if publisher is not None:
            publisher.close()


atexit.register(shutdown)
