"""Plain handlers: callables attached to a Subscriber, each with subscriptions of its own.

The :class:`HandlerTable` answers "which handlers get this event" with the service's own
semantics (exact subjects case-insensitive, patterns with ``re.IGNORECASE`` and
``re.match``, content filters, via :class:`~eventservice.matching.SubscriptionIndex` and
:class:`~eventservice.routing.Router`), each handler once however many of its subscriptions
match, in the order the handlers were first attached. No
sockets: it serves dispatch only; what the service holds (the union of what the subscriber
and its handlers want, sent once) is the subscriber core's set
(:class:`~eventservice.subscriber_core.SubscriptionSet`).

Thread-safety: every method may be called from any thread; ``targets`` takes no lock on a
cache hit.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

from . import typed
from .event import Event
from .filters import compile_filter
from .matching import SubscriptionIndex
from .patterns import Pattern
from .routing import PLAIN, Options, Route, Router

log = logging.getLogger(__name__)

Handler = Callable[[Event], Any]
# called with (the exception, the event, the handler that raised it)
ErrorCallback = Callable[[BaseException, Event, Any], Any]

MAX_CACHED_SUBJECTS = 10_000  # distinct subjects whose handler list is remembered


def log_handler_error(exc: BaseException, event: Event, handler: Any) -> None:
    """The default error callback: logs the exception with its traceback."""
    log.error("handler %s raised for %s", _name(handler), event, exc_info=(type(exc), exc, exc.__traceback__))


class _NoAnswer:
    def __repr__(self) -> str:
        return "NO_ANSWER"


NO_ANSWER: Any = _NoAnswer()  # what a subscriber's answer to a request is when it has none


def first_answer(responders: Sequence[Any], event: Event) -> Any:
    """The answer of the first of ``responders`` (the responder handlers that want
    ``event``; what it raises is raised), or NO_ANSWER when there is none."""
    return responders[0](event) if responders else NO_ANSWER


def is_coroutine_function(fn: Any) -> bool:
    """True for a coroutine function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _name(handler: Any) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)


def handler_key(handler: Any) -> Hashable:
    """The key a handler is known by: itself, or its id when it cannot be hashed."""
    try:
        hash(handler)
        key: Hashable = handler
        return key
    except TypeError:
        return ("id", id(handler))


def holder_key(handler: Any, respond: bool = False) -> Hashable:
    """What holds a handler's subscriptions in the subscriber core: its key, or for a
    responder handler a key of its own (one function may be both)."""
    key = handler_key(handler)
    return ("respond", key) if respond else key


class HandlerTable:
    """The handlers of one Subscriber and the subscriptions each holds."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._index = SubscriptionIndex(max_subscriptions=1 << 62)
        self._handlers: Dict[Hashable, Tuple[int, Any]] = {}  # key -> (order, handler)
        self._order = itertools.count()
        self._router = Router()
        # subject -> (its handlers, (key, handler) pairs, its route when filters apply)
        self._cache: Dict[str, Tuple[Tuple[Any, ...], Tuple[Tuple[Hashable, Any], ...], Optional[Route]]] = {}

    def __len__(self) -> int:
        return len(self._handlers)

    def __bool__(self) -> bool:
        return bool(self._handlers)

    def add(self, handler: Any, subjects: Iterable[str] = (), patterns: Iterable[Pattern] = (),
            filter: Any = None) -> Tuple[List[str], List[str]]:
        """Give ``handler`` these exact subjects and compiled patterns (besides those it has),
        with a content ``filter`` (see :mod:`eventservice.filters`; ``ValueError`` for a bad
        one, changing nothing). Returns (subjects, pattern sources) it did not hold before,
        for :meth:`remove` to undo."""
        key = handler_key(handler)
        subjects, patterns = list(subjects), list(patterns)
        options = PLAIN if filter is None else Options(None, compile_filter(filter), filter)
        with self._lock:
            held_subjects, held_patterns = self._index.subscriptions_of(key)
            new_subjects = sorted({s.casefold() for s in subjects} - set(held_subjects))
            new_patterns = sorted({p.source for p in patterns} - set(held_patterns))
            if key not in self._handlers:
                self._handlers[key] = (next(self._order), handler)
            if subjects:
                self._index.add_subjects(key, subjects, options)
            if patterns:
                self._index.add_patterns(key, patterns, options)
            self._forget(key)
            self._cache = {}
        return new_subjects, new_patterns

    def remove(self, handler: Any, names: Optional[Iterable[str]] = None) -> bool:
        """Remove ``handler``'s subscriptions given by ``names`` (exact ones case-insensitive,
        patterns by the same string), or all of them; a handler left with none is detached.
        True if it held any of them."""
        key = handler_key(handler)
        with self._lock:
            if key not in self._handlers:
                return False
            before = self._index.subscriptions_of(key)
            if names is None:
                self._index.remove_subscriber(key)
            else:
                self._index.remove(key, list(names))
            after = self._index.subscriptions_of(key)
            self._forget(key)
            self._cache = {}
        return before != after

    def remove_names(self, names: Iterable[str]) -> None:
        """Remove these subjects and patterns from every handler."""
        names = list(names)
        with self._lock:
            for key in list(self._handlers):
                self._index.remove(key, names)
                self._forget(key)
            self._cache = {}

    def clear(self) -> None:
        """Detach every handler."""
        with self._lock:
            for key in list(self._handlers):
                self._index.remove_subscriber(key)
            self._handlers.clear()
            self._cache = {}

    def _forget(self, key: Hashable) -> None:
        """Detach the handler of ``key`` if it holds no subscription (lock held)."""
        if not self._index.has(key):
            self._handlers.pop(key, None)

    def holds(self, handler: Any) -> bool:
        """True if ``handler`` is attached."""
        return handler_key(handler) in self._handlers

    def handlers(self) -> List[Any]:
        """The attached handlers, in the order they were first attached."""
        with self._lock:
            return [h for _, h in sorted(self._handlers.values(), key=lambda item: item[0])]

    def targets(self, subject: str, msg: Any) -> Tuple[Any, ...]:
        """The handlers that get an event with ``msg`` on ``subject``: each once, in
        attachment order, those with filters only when one of theirs passes (on the message
        as it travelled: a typed one as its dict, as the service saw it)."""
        found = self._cache.get(subject)
        if found is None:
            with self._lock:
                route = self._index.route(subject)
                entries = sorted((*self._handlers[k], k) for k in route.keys if k in self._handlers)
                keyed = tuple((key, handler) for _, handler, key in entries)
                found = (tuple(handler for _, handler in keyed), keyed, None if route.simple else route)
                if len(self._cache) >= MAX_CACHED_SUBJECTS:
                    self._cache = {}
                self._cache[subject] = found
        handlers, keyed, filtered = found
        if filtered is None:
            return handlers
        keys = self._router.targets(filtered, _as_sent(msg))
        return tuple(handler for key, handler in keyed if key in keys)


def _as_sent(msg: Any) -> Any:
    """``msg`` as it travelled (typed instances as their dicts), for filters."""
    try:
        return typed.encode(msg)
    except (TypeError, ValueError):
        return msg
