"""The client classes: ``Publisher`` and ``Subscriber``.

They know the service only by its remote methods. Both find the service by name
(``Pyro.EventService`` in the name server, found the usual Pyro5 way) or by ``esURI``,
present the passphrase (``ident``, else ``EVENTSERVICE_IDENT``) as their handshake, and
find the service again after it went away.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import weakref
from typing import Any, Callable, Deque, Iterable, List, Optional, Set, Tuple, Union

from Pyro5 import errors
from Pyro5.api import expose
from Pyro5.client import Proxy

from . import wire
from .config import (DEFAULT_CLIENT_TIMEOUT, DEFAULT_RECONNECT_CHECK, EVENTSERVICE_NAME, FALLBACK_SERIALIZER,
                     FAST_SERIALIZER, ident_from_env)
from .daemon import GuardedDaemon
from .event import Event
from .naming import find_ns

log = logging.getLogger(__name__)

Subjects = Union[str, Iterable[str]]
MAX_PENDING = 100_000  # events a batching Publisher holds before publish() waits
MAX_BATCH = 5_000  # events per publishBatch call
RECONNECT_ERRORS = (errors.CommunicationError, errors.NamingError, OSError)


def not_marshallable(exc: BaseException) -> bool:
    """True if ``exc`` is marshal refusing a value here (not an error the far side raised)."""
    return isinstance(exc, (ValueError, TypeError)) and not hasattr(exc, "_pyroTraceback")


def check_subjects(subjects: Any, what: str = "subject") -> List[str]:
    """``subjects`` as a list of str; TypeError otherwise (checked before sending)."""
    items = [subjects] if isinstance(subjects, str) else subjects
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{what} must be a str or a list/tuple of str, not {type(subjects).__name__}")
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what} must be a str, not {type(item).__name__}")
    return list(items)


class ServiceLink:
    """One proxy of the Event Service, shared by threads under a lock, made again after
    a failure: by ``esURI`` if given, else by name. With ``persistent=False`` the
    connection is closed after each call, so that an idle client (a Subscriber between
    subscriptions) holds no connection, and no thread, in the service."""

    def __init__(self, ident: Optional[str], esURI: Any = None, timeout: float = DEFAULT_CLIENT_TIMEOUT,
                 persistent: bool = True) -> None:
        self.ident = ident
        self.esURI = esURI
        self.timeout = timeout
        self.persistent = persistent
        self.lock = threading.RLock()
        self._proxy: Optional[Proxy] = None

    def _connect(self) -> Proxy:
        uri = self.esURI
        if uri is None:
            ns = find_ns()
            if ns is None:
                raise errors.NamingError("no name server answered (set PYRO_NS_HOST/PYRO_NS_PORT, or give esURI)")
            try:
                uri = ns.lookup(EVENTSERVICE_NAME)
            finally:
                ns._pyroRelease()
        proxy = Proxy(uri)
        proxy._pyroHandshake = self.ident
        proxy._pyroTimeout = self.timeout
        proxy._pyroSerializer = FAST_SERIALIZER
        proxy._pyroBind()
        return proxy

    def _invoke(self, method: str, args: Tuple[Any, ...]) -> Any:
        proxy = self._proxy
        try:
            return getattr(proxy, method)(*args)
        except (ValueError, TypeError) as exc:
            if not not_marshallable(exc):
                raise
        proxy._pyroSerializer = FALLBACK_SERIALIZER  # a value marshal cannot carry: this call in serpent
        try:
            return getattr(proxy, method)(*args)
        finally:
            proxy._pyroSerializer = FAST_SERIALIZER

    def call(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the service. A call that fails on a connection made earlier
        (the service restarted or moved) is tried once more on a new one, found anew;
        a call that timed out is not repeated."""
        with self.lock:
            fresh = self._proxy is None
            while True:
                if self._proxy is None:
                    self._proxy = self._connect()
                else:
                    self._proxy._pyroClaimOwnership()
                try:
                    return self._invoke(method, args)
                except errors.TimeoutError:
                    self.reset()  # the service may have acted on it: never sent twice
                    raise
                except RECONNECT_ERRORS:
                    self.reset()
                    if fresh:
                        raise
                    fresh = True  # a connection made earlier went stale: once more, anew
                finally:
                    if not self.persistent and self._proxy is not None:
                        self._proxy._pyroRelease()

    def reset(self) -> None:
        """Drop the connection; the next call makes a new one."""
        with self.lock:
            proxy, self._proxy = self._proxy, None
            if proxy is not None:
                try:
                    proxy._pyroClaimOwnership()
                    proxy._pyroRelease()
                except Exception:
                    pass


class Publisher:
    """Publishes events on subjects.

    By default ``publish`` returns once the service accepted the event and raises what the
    service raised. With ``batch=True`` it checks the subjects, queues the event and returns
    at once; a background thread sends queued events in order, many per call. ``flush()``
    waits until every queued event was accepted and raises the first error any met;
    ``close()``, the end of a ``with`` block and interpreter exit flush.
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, batch: bool = False) -> None:
        self.ident = ident_from_env(ident)
        self._link = ServiceLink(self.ident, esURI)
        self._batcher: Optional[_Batcher] = _Batcher(self._link) if batch else None
        self._closed = False
        if self._batcher is not None:
            _at_exit.add(self)

    def publish(self, subjects: Subjects, msg: Any) -> None:
        """Publish ``msg`` on each subject in ``subjects`` (a str or list/tuple of str)."""
        if self._closed:
            raise RuntimeError("publisher is closed")
        subjects = [subjects] if type(subjects) is str else check_subjects(subjects)
        if self._batcher is not None:
            self._batcher.add(subjects, msg)
        else:
            self._link.call("publish", subjects, msg)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every queued event was accepted; raise the first error any met."""
        if self._batcher is not None:
            self._batcher.flush(timeout)

    def close(self) -> None:
        """Flush (with ``batch=True``) and release the connection."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._batcher is not None:
                _at_exit.discard(self)
                self._batcher.close()
        finally:
            self._link.reset()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _Batcher:
    """The background sender of a batching Publisher."""

    def __init__(self, link: ServiceLink) -> None:
        self.link = link
        self.pending: Deque[Tuple[List[str], Any]] = collections.deque()
        self.cond = threading.Condition(threading.Lock())
        self.idle = False  # the sender waits for events
        self.in_flight = 0
        self.error: Optional[BaseException] = None
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="es-publisher-batch", daemon=True)
        self.thread.start()

    def add(self, subjects: List[str], msg: Any) -> None:
        with self.cond:
            while len(self.pending) >= MAX_PENDING and self.thread.is_alive():
                self.cond.wait(0.5)
            self.pending.append((subjects, msg))
            if self.idle:
                self.idle = False
                self.cond.notify_all()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closing:
                    self.idle = True
                    self.cond.wait()
                if not self.pending:
                    return
                count = min(len(self.pending), MAX_BATCH)
                batch = [self.pending.popleft() for _ in range(count)]
                self.in_flight = count
                self.cond.notify_all()
            try:
                self._send(batch)
            finally:
                with self.cond:
                    self.in_flight = 0
                    self.cond.notify_all()

    def _send(self, batch: List[Tuple[List[str], Any]]) -> None:
        """Send one batch. When the service refuses it (all or nothing: one bad event),
        send its events one by one, so that only the bad ones are refused."""
        try:
            packed = wire.pack(batch)
            if packed is not None:
                self.link.call("publishPacked", packed)
            else:
                self.link.call("publishBatch", batch)
            return
        except Exception as exc:
            if not hasattr(exc, "_pyroTraceback") or len(batch) == 1:
                self._failed(len(batch), exc)
                return
        for subjects, msg in batch:
            try:
                self.link.call("publish", subjects, msg)
            except Exception as exc:
                self._failed(1, exc)

    def _failed(self, count: int, exc: BaseException) -> None:
        log.warning("%d batched events were not accepted: %s", count, exc)
        with self.cond:
            if self.error is None:
                self.error = exc

    def flush(self, timeout: Optional[float] = None) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: not self.pending and not self.in_flight, timeout):
                raise TimeoutError(f"{len(self.pending) + self.in_flight} events not yet accepted")
            error, self.error = self.error, None
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self.cond:
                self.closing = True
                self.cond.notify_all()
            self.thread.join()


class _AtExit:
    """Flushes batching publishers still open when the interpreter exits."""

    def __init__(self) -> None:
        self.publishers: "weakref.WeakSet[Publisher]" = weakref.WeakSet()
        atexit.register(self.close_all)

    def add(self, publisher: Publisher) -> None:
        self.publishers.add(publisher)

    def discard(self, publisher: Publisher) -> None:
        self.publishers.discard(publisher)

    def close_all(self) -> None:
        for publisher in list(self.publishers):
            try:
                publisher.close()
            except Exception as exc:
                log.error("events lost at exit: %s", exc)


_at_exit = _AtExit()


@expose
class Receiver:
    """The object the service calls back; hands events to its Subscriber's ``event()``."""

    def __init__(self, subscriber: "Subscriber") -> None:
        self._subscriber = subscriber

    def event(self, event: Any) -> None:
        if isinstance(event, dict):
            event = Event(event["subject"], event["msg"], event["time"])
        self._subscriber._dispatch(event)

    def deliverEvents(self, items: List[Tuple[str, Any, float]]) -> None:
        """Events as (subject, msg, time) tuples, in order."""
        dispatch = self._subscriber._dispatch
        for subject, msg, when in items:
            dispatch(Event(subject, msg, when))

    def deliverPacked(self, data: bytes) -> None:
        """Events packed by :func:`eventservice.wire.pack`, in order."""
        self.deliverEvents(wire.unpack(data))


class Subscriber:
    """Receives events on subjects and patterns; override ``event(self, event)``.

    It serves a Pyro5 daemon of its own (requiring the passphrase too, when one is set);
    ``listen()`` serves callbacks until ``abort()``, ``start()`` does that in a background
    thread. Events arrive in the order each publisher published them; with
    ``setThreading(False)`` ``event()`` is never called by two threads at once. A watcher
    thread checks the service every few seconds and subscribes again with everything this
    subscriber had when the service restarted or was replaced.
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None) -> None:
        self.ident = ident_from_env(ident)
        self._link = ServiceLink(self.ident, esURI, persistent=False)
        self.daemon = GuardedDaemon(ident=self.ident)
        self._receiver = Receiver(self)
        uri = self.daemon.register(self._receiver)
        self._callback = Proxy(uri)
        self._callback._pyroHandshake = self.ident
        self._callback._pyroSerializer = FAST_SERIALIZER  # the format the service calls back in
        self._subjects: Set[str] = set()
        self._patterns: Set[str] = set()
        self._state_lock = threading.Lock()
        self._event_lock = threading.Lock()
        self._threaded = True
        self._abort = threading.Event()
        self._listener: Optional[threading.Thread] = None
        self._service_id: Optional[str] = None
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="es-subscriber-watch", daemon=True)
        self._watcher.start()

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, subjects: Subjects) -> None:
        """Receive events on these exact subjects (case-insensitive)."""
        subjects = check_subjects(subjects)
        self._remember(self._link.call("subscribe", subjects, self._callback))
        with self._state_lock:
            self._subjects.update(subjects)

    def subscribeMatch(self, patterns: Subjects) -> None:
        """Receive events whose subject matches one of these regex patterns."""
        patterns = check_subjects(patterns, "pattern")
        self._remember(self._link.call("subscribeMatch", patterns, self._callback))
        with self._state_lock:
            self._patterns.update(patterns)

    def unsubscribe(self, subjects: Subjects) -> None:
        """Stop receiving on these subjects or patterns."""
        subjects = check_subjects(subjects, "subject or pattern")
        self._link.call("unsubscribe", subjects, self._callback)
        with self._state_lock:
            folded = {s.casefold() for s in subjects}
            self._subjects = {s for s in self._subjects if s.casefold() not in folded}
            self._patterns.difference_update(subjects)

    def _remember(self, _result: Any) -> None:
        if self._service_id is None:
            try:
                self._service_id = self._link.call("ping")
            except RECONNECT_ERRORS:
                pass

    # -- listening ---------------------------------------------------------------------------
    def event(self, event: Event) -> None:
        """Called for each event; override it. The default prints the event."""
        print(event, flush=True)

    def setThreading(self, threaded: bool) -> None:
        """False: ``event()`` is called by one thread at a time."""
        self._threaded = bool(threaded)

    def _dispatch(self, event: Event) -> None:
        try:
            if self._threaded:
                self.event(event)
            else:
                with self._event_lock:
                    self.event(event)
        except Exception:
            log.exception("event() raised for %s", event)

    def listen(self) -> None:
        """Serve callbacks until :meth:`abort`."""
        self._abort.clear()
        self.daemon.requestLoop(lambda: not self._abort.is_set())

    def start(self) -> threading.Thread:
        """Listen in a background thread; returns it."""
        self._listener = threading.Thread(target=self.listen, name="es-subscriber-listen", daemon=True)
        self._listener.start()
        return self._listener

    def abort(self) -> None:
        """Make ``listen()`` return."""
        self._abort.set()
        try:
            self.daemon.transportServer.wakeup()
        except Exception:
            pass

    def close(self) -> None:
        """Unsubscribe everything (when the service answers), stop listening, close the daemon."""
        with self._state_lock:
            held = sorted(self._subjects | self._patterns)
            self._subjects.clear()
            self._patterns.clear()
        self.abort()
        self._closed.set()
        if held:
            try:
                self._link.call("unsubscribe", held, self._callback)
            except RECONNECT_ERRORS as exc:
                log.debug("could not unsubscribe on close: %s", exc)
        if self._listener is not None:
            self._listener.join(5)
        self.daemon.close()
        self._link.reset()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- finding the service again ---------------------------------------------------------
    def _watch(self) -> None:
        link = ServiceLink(self.ident, self._link.esURI, persistent=False)
        while not self._closed.wait(DEFAULT_RECONNECT_CHECK):
            with self._state_lock:
                subjects, patterns = sorted(self._subjects), sorted(self._patterns)
            if not (subjects or patterns):
                continue
            try:
                current = link.call("ping")
                if self._service_id is None:
                    self._service_id = current
                if current == self._service_id:
                    continue
                if subjects:
                    link.call("subscribe", subjects, self._callback)
                if patterns:
                    link.call("subscribeMatch", patterns, self._callback)
                self._service_id = current
                log.info("event service %s is new: subscribed again", current)
            except RECONNECT_ERRORS as exc:
                log.debug("event service not reachable: %s", exc)
        link.reset()
