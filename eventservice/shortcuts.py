"""Two-line use for one-off scripts: ``register`` a function, ``emit`` an event.

::

    import eventservice
    eventservice.register("greetings", lambda event: print(event.msg))
    eventservice.emit("greetings", "hello")

``register`` makes (at its first call) one process-wide :class:`~eventservice.Subscriber`
that listens in a background thread, and attaches the function as a handler (see
:meth:`Subscriber.on`); ``emit`` makes one process-wide :class:`~eventservice.Publisher`
and publishes, returning once the service accepted the event. Both clients find the
service the usual way (name server, ``EVENTSERVICE_IDENT`` for the passphrase, or
``EVENTSERVICE_USER`` and ``EVENTSERVICE_PASSWORD`` for a user) and are closed at
interpreter exit, or by :func:`shutdown`. ``user=`` and ``password=`` log in as another
user: one shared client per user. Thread-safe.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .clients import Publisher, Subjects, Subscriber
from .event import Event

_lock = threading.RLock()
Login = Tuple[Optional[str], Optional[str]]  # (user, password) given; (None, None): the environment's
_subscribers: Dict[Login, Subscriber] = {}
_publishers: Dict[Login, Publisher] = {}

Callback = Callable[[Event], Any]


def _shared_subscriber(login: Login) -> Subscriber:
    with _lock:
        subscriber = _subscribers.get(login)
        if subscriber is None:
            subscriber = _subscribers[login] = Subscriber(user=login[0], password=login[1])
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


def emit(subjects: Subjects, msg: Any = None, *, user: Optional[str] = None, password: Optional[str] = None) -> None:
    """Publish ``msg`` on these subjects through the shared publisher (of ``user``); returns
    once the service accepted the event and raises what it raised."""
    with _lock:
        publisher = _publishers.get((user, password))
        if publisher is None:
            publisher = _publishers[(user, password)] = Publisher(user=user, password=password)
    publisher.publish(subjects, msg)


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
