"""The client classes: ``Publisher`` and ``Subscriber``.

They know the service only by its remote methods. Both find the service by name
(``Pyro.EventService`` in the name server, found the usual Pyro5 way) or by ``esURI``,
present the passphrase (``ident``, else ``EVENTSERVICE_IDENT``) as their handshake, and
find the service again after it went away (through :class:`~eventservice.link.ServiceLink`).
When no service can be reached they raise :class:`~eventservice.errors.ServiceNotFoundError`,
whose text says what to do next.
"""

from __future__ import annotations

import inspect
import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from Pyro5.api import expose
from Pyro5.client import Proxy

from . import typed, wire
from .auth import Authority
from .config import (DEFAULT_CLIENT_TIMEOUT, DEFAULT_RECONNECT_CHECK, DEFAULT_REQUEST_TIMEOUT, FAST_SERIALIZER,
                     ident_from_env)
from .daemon import GuardedDaemon
from .event import Event
from .handlers import ErrorCallback, Handler, HandlerTable, log_handler_error
from .link import RECONNECT_ERRORS, DisconnectCallback, ReconnectCallback, ServiceLink, Subjects, call_back, check_subjects
from .patterns import compile_pattern
from .publisher_core import PublisherCore

log = logging.getLogger(__name__)

CLOSE_JOIN_TIMEOUT = 2.0  # seconds close() waits for each of a Subscriber's threads to end


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
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._core = PublisherCore(ident, esURI, batch, on_disconnect=lambda e: call_back(self.on_disconnect, e),
                                   on_reconnect=lambda u: call_back(self.on_reconnect, u))
        self.ident = self._core.ident

    def publish(self, subjects: Subjects, msg: Any) -> None:
        """Publish ``msg`` on each subject in ``subjects`` (a str or list/tuple of str)."""
        self._core.publish(*self._core.prepare(subjects, msg))

    def request(self, subject: str, msg: Any = None, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send a request on ``subject`` and return the first answer of a responder (a
        subscriber whose ``respond`` returns something).
        :class:`~eventservice.errors.NoResponderError` (a ``TimeoutError``, naming the
        subject) when none answers within ``timeout`` seconds. Not batched: it waits."""
        return self._core.request(subject, msg, timeout)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every queued event was accepted; raise the first error any met."""
        self._core.flush(timeout)

    def close(self) -> None:
        """Flush (with ``batch=True``) and release the connection."""
        self._core.close()

    @property
    def connected(self) -> bool:
        """False from a call that found the service gone until one reaches it again."""
        return self._core.connected

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


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
        at once: it is used up, and the next ``listen()`` serves again)."""
        try:
            self.daemon.requestLoop(lambda: not self._abort.is_set())
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
            call_back(self.on_reconnect, link.uri or "")
        link.reset()

    def _went_away(self, error: BaseException) -> None:
        if self._connected and not self._closed.is_set():
            self._connected = False
            call_back(self.on_disconnect, error)



def _extras(group: Optional[str], filter: Any) -> Tuple[Any, ...]:
    """The optional arguments of the service's subscribe methods, only as far as given
    (an Event Service that predates them still takes a plain subscription)."""
    if filter is not None:
        return (group, filter)
    if group is not None:
        return (group,)
    return ()


def _check_handler(handler: Any) -> None:
    if not callable(handler):
        raise TypeError(f"a handler must be callable, not {type(handler).__name__}")
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None)):
        raise TypeError("a coroutine function cannot be a handler of the threaded Subscriber: "
                        "use eventservice.aio.AsyncSubscriber")
