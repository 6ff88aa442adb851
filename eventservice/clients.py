"""The client classes: ``Publisher`` and ``Subscriber``.

They know the service only by its remote methods. Both find the service by name
(``Pyro.EventService`` in the name server, found the usual Pyro5 way) or by ``esURI``,
present the passphrase (``ident``, else ``EVENTSERVICE_IDENT``) as their handshake, and
find the service again after it went away.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import inspect
import logging
import select
import signal
import socket
import ssl
import threading
import time
import weakref
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from Pyro5 import errors
from Pyro5.api import expose
from Pyro5.client import Proxy

from . import auth, typed, wire
from .auth import Authority
from .config import (DEFAULT_CLIENT_TIMEOUT, DEFAULT_RECONNECT_CHECK, DEFAULT_REQUEST_TIMEOUT, EVENTSERVICE_NAME,
                     FALLBACK_SERIALIZER, FAST_SERIALIZER, ident_from_env)
from .daemon import GuardedDaemon
from .event import Event
from .handlers import ErrorCallback, Handler, HandlerTable, log_handler_error
from .naming import find_ns
from .patterns import compile_pattern

log = logging.getLogger(__name__)

Subjects = Union[str, Iterable[str]]
MAX_PENDING = 100_000  # events a batching Publisher holds before publish() waits
MAX_BATCH = 5_000  # events per publishBatch call
RECONNECT_ERRORS = (errors.CommunicationError, errors.NamingError, OSError)
CLOSE_JOIN_TIMEOUT = 2.0  # seconds close() waits for each of a Subscriber's threads to end

# connection callbacks: told the error that showed the service gone / the URI of the service back
DisconnectCallback = Callable[[BaseException], Any]
ReconnectCallback = Callable[[str], Any]


def is_remote(exc: BaseException) -> bool:
    """True if ``exc`` was raised by the far side (the service answered with it)."""
    return hasattr(exc, "_pyroTraceback")


def _is_stale(proxy: Proxy) -> bool:
    """True if the service closed this proxy's connection (seen without sending anything).
    Not checked for TLS, whose records may arrive between calls."""
    conn = proxy._pyroConnection
    sock = getattr(conn, "sock", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)  # between calls, readable means closed (or out of step): either way, anew


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
    subscriptions) holds no connection, and no thread, in the service.

    ``on_lost(error)`` is called when a call finds the service gone (once, until it is
    back), ``on_back(uri)`` when a new connection is made after that; both in the calling
    thread, after the lock is released; what they raise is logged."""

    def __init__(self, ident: Optional[str], esURI: Any = None, timeout: float = DEFAULT_CLIENT_TIMEOUT,
                 persistent: bool = True, on_lost: Optional[Callable[[BaseException], Any]] = None,
                 on_back: Optional[Callable[[str], Any]] = None) -> None:
        self.ident = ident
        self.esURI = esURI
        self.timeout = timeout
        self.persistent = persistent
        self.on_lost = on_lost
        self.on_back = on_back
        self.lost = False  # a call found the service gone and no new connection was made since
        self.connected_once = False  # "lost" is told only about a service that was reached before
        self.lock = threading.RLock()
        self._proxy: Optional[Proxy] = None

    @property
    def uri(self) -> Optional[str]:
        """The URI of the service this link last connected to, if any."""
        proxy = self._proxy
        return None if proxy is None else str(proxy._pyroUri)

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
        proxy = auth.proxy(uri, self.ident, serializer=FAST_SERIALIZER, timeout=self.timeout)
        proxy._pyroBind()
        return proxy

    def call(self, method: str, *args: Any, serializer: Optional[str] = None) -> Any:
        """Call ``method`` on the service (in ``serializer``, default msgpack) and return
        its answer, or raise what it raised. A call is sent once: a connection the service
        closed meanwhile is noticed before sending and made anew; once sent, a failure is
        raised, never repeated (the service may have acted on it)."""
        news: List[Tuple[str, Any]] = []
        try:
            with self.lock:
                if self._proxy is not None and self._proxy._pyroConnection is None:
                    self.reset()  # closed after its last call (persistent=False): found anew
                elif self._proxy is not None and _is_stale(self._proxy):
                    self.reset()  # the service closed it (went away, restarted): found anew
                    self._lose(errors.ConnectionClosedError("the Event Service closed the connection"), news)
                if self._proxy is None:
                    self._proxy = self._connect()
                    self.connected_once = True
                    if self.lost:
                        self.lost = False
                        news.append(("back", str(self._proxy._pyroUri)))
                else:
                    self._proxy._pyroClaimOwnership()
                proxy = self._proxy
                proxy._pyroTimeout = self.timeout
                proxy._pyroSerializer = serializer or FAST_SERIALIZER
                try:
                    return getattr(proxy, method)(*args)
                except Exception as exc:
                    if is_remote(exc):
                        raise  # an answer from the service
                    self.reset()
                    if isinstance(exc, RECONNECT_ERRORS):
                        self._lose(exc, news)
                    raise
                finally:
                    if not self.persistent and self._proxy is not None:
                        self._proxy._pyroRelease()
        except RECONNECT_ERRORS as exc:
            if not is_remote(exc):
                with self.lock:
                    self._lose(exc, news)  # finding the service failed
            raise
        finally:
            for kind, detail in news:
                _call_back(self.on_lost if kind == "lost" else self.on_back, detail)

    def _lose(self, exc: BaseException, news: List[Tuple[str, Any]]) -> None:
        if not self.lost and self.connected_once:
            self.lost = True
            news.append(("lost", exc))

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

    Messages may hold instances of classes registered with
    :func:`eventservice.register_type`; an instance of a class nobody registered raises
    ``TypeError`` in ``publish`` before anything is sent.

    Connection callbacks (keyword arguments or attributes of the same names):
    ``on_disconnect(error)`` when a call finds the service gone, ``on_reconnect(uri)`` when a
    later call reached a service again; called once each per outage, in the thread that made
    the call (the caller's, or with ``batch=True`` the sender's); what they raise is logged.
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, batch: bool = False, *,
                 on_disconnect: Optional[DisconnectCallback] = None,
                 on_reconnect: Optional[ReconnectCallback] = None) -> None:
        self.ident = ident_from_env(ident)
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._link = ServiceLink(self.ident, esURI, on_lost=self._lost, on_back=self._back)
        self._batcher: Optional[_Batcher] = _Batcher(self._link) if batch else None
        self._requests: Optional[ServiceLink] = None  # made by the first request()
        self._closed = False
        if self._batcher is not None:
            _at_exit.add(self)

    def publish(self, subjects: Subjects, msg: Any) -> None:
        """Publish ``msg`` on each subject in ``subjects`` (a str or list/tuple of str)."""
        if self._closed:
            raise RuntimeError("publisher is closed")
        subjects = [subjects] if type(subjects) is str else check_subjects(subjects)
        msg = typed.encode(msg)
        if self._batcher is not None:
            self._batcher.add(subjects, msg)
            return
        packed = wire.pack_publish([(subjects, msg)])
        if packed is not None:
            self._link.call("publishPacked", packed)
        else:  # a value msgpack cannot carry
            self._link.call("publish", subjects, msg, serializer=FALLBACK_SERIALIZER)

    def request(self, subject: str, msg: Any = None, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send a request on ``subject`` and return the first answer of a responder (a
        subscriber whose ``respond`` returns something). ``TimeoutError`` naming the
        subject when none answers within ``timeout`` seconds. Not batched: it waits."""
        if self._closed:
            raise RuntimeError("publisher is closed")
        if not isinstance(subject, str):
            raise TypeError(f"subject must be a str, not {type(subject).__name__}")
        link = self._requests
        if link is None:  # a connection of their own: a long request holds up no publishing
            link = self._requests = ServiceLink(self.ident, self._link.esURI)
        with link.lock:
            link.timeout = timeout + DEFAULT_CLIENT_TIMEOUT  # the service answers by then
            return typed.decode(link.call("request", subject, typed.encode(msg), timeout,
                                          serializer=FALLBACK_SERIALIZER))

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
            if self._requests is not None:
                self._requests.reset()

    @property
    def connected(self) -> bool:
        """False from a call that found the service gone until one reaches it again."""
        return not self._link.lost

    def _lost(self, error: BaseException) -> None:
        if self.on_disconnect is not None:
            self.on_disconnect(error)

    def _back(self, uri: str) -> None:
        if self.on_reconnect is not None:
            self.on_reconnect(uri)

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
            packed = wire.pack_publish(batch)
            if packed is not None:
                self.link.call("publishPacked", packed)
            else:  # a value msgpack cannot carry
                self.link.call("publishBatch", batch, serializer=FALLBACK_SERIALIZER)
            return
        except Exception as exc:
            if not is_remote(exc) or len(batch) == 1:
                self._failed(len(batch), exc)
                return
        for subjects, msg in batch:
            try:
                self.link.call("publish", subjects, msg, serializer=FALLBACK_SERIALIZER)
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


class _SubscriberDaemon(GuardedDaemon):
    """A Subscriber's daemon: remembers the connections it serves and their threads, so
    that ``close()`` ends them too (Pyro5 alone leaves a worker blocked on each connection
    until the other side closes it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._served: Dict[Any, threading.Thread] = {}
        self._served_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _handshake(self, conn: Any, denied_reason: Optional[str] = None) -> bool:
        ok = super()._handshake(conn, denied_reason)
        if ok and denied_reason is None:
            with self._served_lock:
                self._served[conn] = threading.current_thread()
        return ok

    def clientDisconnect(self, conn: Any) -> None:
        super().clientDisconnect(conn)
        with self._served_lock:
            self._served.pop(conn, None)

    def close(self) -> None:
        with self._served_lock:
            served = list(self._served.items())
        for conn, _ in served:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
        super().close()
        me = threading.current_thread()
        for _, thread in served:
            if thread is not me and thread.is_alive():
                thread.join(CLOSE_JOIN_TIMEOUT)


@expose
class Receiver:
    """The object the service calls back; hands events to its Subscriber, a batch at a time."""

    def __init__(self, subscriber: "Subscriber") -> None:
        self._subscriber = subscriber

    def event(self, event: Any) -> None:
        if isinstance(event, dict):
            event = Event(event["subject"], event["msg"], event["time"])
        decode = typed.decoder()
        if decode is not None:
            event = Event(event.subject, decode(event.msg), event.time)
        self._subscriber._deliver([event])

    def deliverEvents(self, items: List[Tuple[str, Any, float]]) -> None:
        """Events as (subject, msg, time) tuples, in order."""
        decode = typed.decoder()
        if decode is None:
            events = [Event(subject, msg, when) for subject, msg, when in items]
        else:
            events = [Event(subject, decode(msg), when) for subject, msg, when in items]
        self._subscriber._deliver(events)

    def deliverPacked(self, data: bytes) -> None:
        """Events packed by :func:`eventservice.wire.pack`, in order."""
        self.deliverEvents(wire.unpack(data))

    def respond(self, request: Dict[str, Any]) -> Any:
        """A request (subject, msg, time as a dict): the Subscriber's answer, or None."""
        event = Event(request["subject"], typed.decode(request["msg"]), request["time"])
        return typed.encode(self._subscriber._answer(event))

    def heartbeat(self, service_id: str) -> bool:
        """The service checks that this subscriber is alive."""
        self._subscriber._heard_from(service_id)
        return True


class Subscriber:
    """Receives events on subjects and patterns; override ``event(self, event)``, or attach
    plain handlers with :meth:`on` and :meth:`on_match`.

    It serves a Pyro5 daemon of its own (requiring the passphrase too, when one is set);
    ``listen()`` serves callbacks until ``abort()``, ``start()`` does that in a background
    thread. Events arrive in the order each publisher published them; with
    ``setThreading(False)`` ``event()`` (and so every handler) is never called by two threads
    at once. A watcher thread checks the service every few seconds and subscribes again with
    everything this subscriber had when the service restarted or was replaced.

    Keyword arguments (also attributes of the same names):

    - ``on_error(exc, event, handler)``: told when a handler raised; the default logs it with
      its traceback. The other handlers and the listener go on either way.
    - ``on_disconnect(error)``: told when the watcher finds the service gone (unreachable, or
      restarted: a new run under the name or ``esURI``).
    - ``on_reconnect(uri)``: told when a service answers again and every subscription of this
      subscriber (its own and its handlers') was made again there.

    Connection callbacks alternate, starting with ``on_disconnect``, and run in the watcher
    thread; what they raise is logged.
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, *,
                 on_error: Optional[ErrorCallback] = None,
                 on_disconnect: Optional[DisconnectCallback] = None,
                 on_reconnect: Optional[ReconnectCallback] = None) -> None:
        self.ident = ident_from_env(ident)
        self.on_error: ErrorCallback = on_error or log_handler_error
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._link = ServiceLink(self.ident, esURI, persistent=False)
        self.daemon = _SubscriberDaemon(authority=Authority(self.ident))
        self._receiver = Receiver(self)
        uri = self.daemon.register(self._receiver)
        self._callback = Proxy(uri)  # what the service is given: it carries no secret
        self._callback._pyroHandshake = None
        self._callback._pyroSerializer = FAST_SERIALIZER  # the format the service calls back in
        self._subjects: Set[str] = set()  # subscribed by subscribe(), as spelled
        self._patterns: Set[str] = set()  # subscribed by subscribeMatch()
        # ("subject", casefolded) or ("pattern", source) -> (group, filter), for those with any
        self._options: Dict[Tuple[str, str], Tuple[Optional[str], Any]] = {}
        self._last_heartbeat: Optional[Tuple[str, float]] = None  # (service id, monotonic time)
        self._handlers = HandlerTable()  # plain handlers and their own subscriptions
        self._state_lock = threading.Lock()
        self._change_lock = threading.RLock()  # one subscription change at a time, service call included
        self._event_lock = threading.Lock()
        self._threaded = True
        self._abort = threading.Event()
        self._listener: Optional[threading.Thread] = None
        self._service_id: Optional[str] = None
        self._connected = True
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="es-subscriber-watch", daemon=True)
        self._watcher.start()

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, subjects: Subjects, group: Optional[str] = None, filter: Any = None) -> None:
        """Receive events on these exact subjects (case-insensitive). With ``group``, the
        subscribers of that work-queue group share the events (each goes to one of them);
        with ``filter`` (plain data, see :mod:`eventservice.filters`) only events whose
        message passes are sent. Both are kept when subscribing again after a restart."""
        subjects = check_subjects(subjects)
        with self._change_lock:
            self._remember(self._link.call("subscribe", subjects, self._callback, *_extras(group, filter)))
            with self._state_lock:
                self._subjects.update(subjects)
                self._remember_options("subject", subjects, group, filter)

    def subscribeMatch(self, patterns: Subjects, group: Optional[str] = None, filter: Any = None) -> None:
        """Receive events whose subject matches one of these regex patterns; ``group`` and
        ``filter`` as for :meth:`subscribe`."""
        patterns = check_subjects(patterns, "pattern")
        with self._change_lock:
            self._remember(self._link.call("subscribeMatch", patterns, self._callback, *_extras(group, filter)))
            with self._state_lock:
                self._patterns.update(patterns)
                self._remember_options("pattern", patterns, group, filter)

    def _remember_options(self, kind: str, names: List[str], group: Optional[str], filter: Any) -> None:
        for name in names:
            key = (kind, name.casefold() if kind == "subject" else name)
            if group is None and filter is None:
                self._options.pop(key, None)
            else:
                self._options[key] = (group, filter)

    def _subscribe_all(self, link: "ServiceLink", subjects: List[str], patterns: List[str]) -> None:
        """Subscribe again to everything held, each with its group and filter."""
        with self._state_lock:
            options_of = dict(self._options)
        for method, kind, names in (("subscribe", "subject", subjects), ("subscribeMatch", "pattern", patterns)):
            by_options: Dict[str, Tuple[Tuple[Any, ...], List[str]]] = {}
            for name in names:
                options = options_of.get((kind, name.casefold() if kind == "subject" else name))
                extras = _extras(*options) if options else ()
                by_options.setdefault(repr(extras), (extras, []))[1].append(name)
            for extras, grouped in by_options.values():
                link.call(method, grouped, self._callback, *extras)

    def respond(self, event: Event) -> Any:
        """Answer a request (see :meth:`Publisher.request`); override it. The default
        returns the first answer (not None) of the handlers that want the event, or None:
        no answer from this subscriber."""
        for handler in self._handlers.targets(event.subject):
            try:
                answer = handler(event)
            except Exception as exc:
                self._handler_failed(exc, event, handler)
                continue
            if answer is not None:
                return answer
        return None

    def _answer(self, event: Event) -> Any:
        if self._threaded:
            return self.respond(event)
        with self._event_lock:
            return self.respond(event)

    def _heard_from(self, service_id: str) -> None:
        self._last_heartbeat = (service_id, time.monotonic())

    def unsubscribe(self, subjects: Subjects) -> None:
        """Stop receiving on these subjects or patterns: for this subscriber and every
        handler holding them."""
        subjects = check_subjects(subjects, "subject or pattern")
        with self._change_lock:
            self._link.call("unsubscribe", subjects, self._callback)
            with self._state_lock:
                folded = {s.casefold() for s in subjects}
                self._subjects = {s for s in self._subjects if s.casefold() not in folded}
                self._patterns.difference_update(subjects)
                for name in subjects:
                    self._options.pop(("subject", name.casefold()), None)
                    self._options.pop(("pattern", name), None)
            self._handlers.remove_names(subjects)

    def _remember(self, _result: Any) -> None:
        if self._service_id is None:
            try:
                self._service_id = self._link.call("ping")
            except RECONNECT_ERRORS:
                pass

    def _held(self) -> Tuple[List[str], List[str]]:
        """(exact subjects, patterns) this subscriber and its handlers hold at the service."""
        with self._state_lock:
            subjects = {s.casefold(): s for s in self._subjects}
            patterns = set(self._patterns)
        handler_subjects, handler_patterns = self._handlers.held()
        for subject in handler_subjects:
            subjects.setdefault(subject, subject)
        return sorted(subjects.values()), sorted(patterns | handler_patterns)

    # -- plain handlers ----------------------------------------------------------------------
    def on(self, subjects: Subjects, handler: Optional[Handler] = None) -> Any:
        """Call ``handler(event)`` for every event on these exact subjects (case-insensitive).

        Subscribes at the service (before returning) and returns ``handler``. Without
        ``handler``, returns a decorator that does the same: ``@sub.on("news")``. A handler
        may be attached any number of times, to exact subjects and patterns; it is called
        once per event that matches any of its subscriptions, however many do, and the
        service sends the event once however many handlers want it. Handlers run in the
        daemon's threads, in the order they were first attached; one that raises goes to
        ``on_error`` and the others still run. They are called by the default ``event()``:
        an overriding ``event()`` calls :meth:`call_handlers` to keep them."""
        subjects = check_subjects(subjects)
        if handler is None:
            return self._decorator(self.on, subjects)
        _check_handler(handler)
        return self._attach(handler, "subscribe", subjects, subjects=subjects)

    def on_match(self, patterns: Subjects, handler: Optional[Handler] = None) -> Any:
        """Like :meth:`on`, for regex patterns (``re.IGNORECASE``, ``re.match``), matched here
        with the service's semantics. ``ValueError`` for an invalid pattern, before sending."""
        patterns = check_subjects(patterns, "pattern")
        if handler is None:
            return self._decorator(self.on_match, patterns)
        _check_handler(handler)
        compiled = [compile_pattern(p) for p in patterns]
        return self._attach(handler, "subscribeMatch", patterns, patterns=compiled)

    def _attach(self, handler: Handler, method: str, names: List[str], **held: Any) -> Handler:
        """Attach ``handler`` to subjects or compiled patterns (``held``) and subscribe
        ``names`` at the service with ``method``; undone here if the service refuses."""
        with self._change_lock:
            added_subjects, added_patterns = self._handlers.add(handler, **held)
            try:
                self._remember(self._link.call(method, names, self._callback))
            except BaseException:
                self._handlers.remove(handler, added_subjects + added_patterns)
                raise
        return handler

    @staticmethod
    def _decorator(attach: Callable[[List[str], Handler], Any], names: List[str]) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            attach(names, handler)
            return handler
        return decorate

    def remove_handler(self, handler: Handler, subjects: Optional[Subjects] = None) -> bool:
        """Detach ``handler`` from these subjects and patterns (by the strings they were given
        with; exact ones case-insensitive), or from all; a handler left with none is
        detached. Unsubscribes at the service what nobody here holds any more. True if
        the handler held any of them; an unknown handler is ignored (False)."""
        names = None if subjects is None else check_subjects(subjects, "subject or pattern")
        with self._change_lock:
            before = self._held()
            if not self._handlers.remove(handler, names):
                return False
            self._release(before)
        return True

    def handlers(self) -> List[Handler]:
        """The attached handlers, in the order they were first attached."""
        return self._handlers.handlers()

    def _release(self, before: Tuple[List[str], List[str]]) -> None:
        """Unsubscribe at the service what was held ``before`` and is held no more (change lock held)."""
        subjects, patterns = self._held()
        gone_subjects = {s.casefold() for s in before[0]} - {s.casefold() for s in subjects}
        gone = [s for s in before[0] if s.casefold() in gone_subjects] + sorted(set(before[1]) - set(patterns))
        if not gone:
            return
        self._link.call("unsubscribe", gone, self._callback)
        # the service's unsubscribe takes a string as an exact subject and as a pattern:
        # subscribe again what is still held under a string that went
        gone_folded = {g.casefold() for g in gone}
        again_subjects = [s for s in subjects if s.casefold() in gone_folded]
        again_patterns = [p for p in patterns if p in gone]
        if again_subjects:
            self._link.call("subscribe", again_subjects, self._callback)
        if again_patterns:
            self._link.call("subscribeMatch", again_patterns, self._callback)

    def call_handlers(self, event: Event) -> int:
        """Call every handler whose subscriptions match ``event``, each once, in attachment
        order; a handler that raises goes to ``on_error``. Returns how many were called."""
        targets = self._handlers.targets(event.subject)
        for handler in targets:
            try:
                handler(event)
            except Exception as exc:
                self._handler_failed(exc, event, handler)
        return len(targets)

    def _handler_failed(self, exc: BaseException, event: Event, handler: Any) -> None:
        try:
            self.on_error(exc, event, handler)
        except Exception:
            log.exception("the error callback raised, for handler %r and %s", handler, event)

    # -- listening ---------------------------------------------------------------------------
    def event(self, event: Event) -> None:
        """Called for each event, in a thread of the subscriber's daemon; override it. The
        default calls the handlers that want the event (:meth:`call_handlers`) and, when
        this subscriber has no handlers, prints the event."""
        if self._handlers:
            self.call_handlers(event)
        else:
            print(event, flush=True)

    def setThreading(self, threaded: bool) -> None:
        """False: ``event()`` is called by one thread at a time."""
        self._threaded = bool(threaded)

    def _deliver(self, events: List[Event]) -> None:
        """One batch of events from the service, in order (a daemon thread)."""
        for event in events:
            self._dispatch(event)

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
        """Serve callbacks until :meth:`abort` (an abort that came before this call ends it
        at once: it is used up, and the next ``listen()`` serves again). Ended by Ctrl-C
        (``KeyboardInterrupt``) or, in the main thread, SIGTERM (``SystemExit(143)``), it
        unsubscribes everything and closes (:meth:`close`) before the exception goes on."""
        try:
            with _sigterm_exits():
                self.daemon.requestLoop(lambda: not self._abort.is_set())
            if not self._abort.is_set():  # Pyro5's loop ends quietly on Ctrl-C
                raise KeyboardInterrupt
        except (KeyboardInterrupt, SystemExit):
            self.close()
            raise
        finally:
            self._abort.clear()

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
        """Unsubscribe everything (when the service answers), stop listening, close the
        daemon and its connections, and end this subscriber's threads."""
        with self._change_lock:
            subjects, patterns = self._held()
            held = sorted(set(subjects) | set(patterns))
            with self._state_lock:
                self._subjects.clear()
                self._patterns.clear()
            self._handlers.clear()
        self.abort()
        self._closed.set()
        if held:
            try:
                self._link.call("unsubscribe", held, self._callback)
            except RECONNECT_ERRORS as exc:
                log.debug("could not unsubscribe on close: %s", exc)
        me = threading.current_thread()
        if self._listener is not None and self._listener is not me:
            self._listener.join(5)
        self.daemon.close()
        self._link.reset()
        if self._watcher is not me:
            self._watcher.join(DEFAULT_CLIENT_TIMEOUT + CLOSE_JOIN_TIMEOUT)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- finding the service again ---------------------------------------------------------
    @property
    def connected(self) -> bool:
        """False from the watcher finding the service gone until it subscribed again."""
        return self._connected

    def _watch(self) -> None:
        link = ServiceLink(self.ident, self._link.esURI, persistent=False)
        while not self._closed.wait(DEFAULT_RECONNECT_CHECK):
            subjects, patterns = self._held()
            if not (subjects or patterns):
                continue
            try:
                current = link.call("ping")
            except RECONNECT_ERRORS as exc:
                log.debug("event service not reachable: %s", exc)
                self._went_away(exc)
                continue
            if self._service_id is None:
                self._service_id = current
            if current == self._service_id and self._connected:
                continue
            if current != self._service_id:
                self._went_away(ConnectionError(f"the event service was restarted or replaced "
                                                f"(run {self._service_id} is now {current})"))
            try:
                self._subscribe_all(link, subjects, patterns)
            except RECONNECT_ERRORS as exc:
                log.debug("event service not reachable: %s", exc)
                continue
            if self._closed.is_set():
                break
            self._service_id = current
            log.info("event service %s answers: subscribed again", current)
            self._connected = True
            _call_back(self.on_reconnect, link.uri or "")
        link.reset()

    def _went_away(self, error: BaseException) -> None:
        if self._connected and not self._closed.is_set():
            self._connected = False
            _call_back(self.on_disconnect, error)



@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """In the main thread, while SIGTERM would kill the process outright: make it raise
    ``SystemExit(143)`` instead, so that a listening Subscriber can unsubscribe first."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _extras(group: Optional[str], filter: Any) -> Tuple[Any, ...]:
    """The optional arguments of the service's subscribe methods, only as far as given
    (an Event Service that predates them still takes a plain subscription)."""
    if filter is not None:
        return (group, filter)
    if group is not None:
        return (group,)
    return ()


def _call_back(callback: Optional[Callable[[Any], Any]], detail: Any) -> None:
    """Call a connection callback, if any, with ``detail``; what it raises is logged."""
    if callback is None:
        return
    try:
        callback(detail)
    except Exception:
        log.exception("connection callback %r raised", callback)


def _check_handler(handler: Any) -> None:
    if not callable(handler):
        raise TypeError(f"a handler must be callable, not {type(handler).__name__}")
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None)):
        raise TypeError("a coroutine function cannot be a handler of the threaded Subscriber: "
                        "use eventservice.aio.AsyncSubscriber")
