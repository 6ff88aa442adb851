"""The client classes: ``Publisher`` and ``Subscriber``.

They know the service only by its remote methods. Both find the service by name
(``Pyro.EventService`` in the name server, found the usual Pyro5 way) or by ``esURI``,
prove the passphrase (``ident``, else ``EVENTSERVICE_IDENT``) or, for a service with users,
the password of ``user`` (else ``EVENTSERVICE_USER`` and ``EVENTSERVICE_PASSWORD``) at their
handshake, never sending it, and find the service again after it went away. A call the
service refuses by its users' rules raises :class:`~eventservice.errors.PermissionDenied`.
When no service can be reached they raise :class:`~eventservice.errors.ServiceNotFoundError`,
whose text says what to do next.

Both are faces over a core shared with the asyncio clients of :mod:`eventservice.aio`:
:class:`~eventservice.publisher_core.PublisherCore` and
:class:`~eventservice.subscriber_core.SubscriberCore`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Callable, Iterator, List, Optional

from .auth import client_credentials
from .config import DEFAULT_REQUEST_TIMEOUT
from .event import Event
from .handlers import (ErrorCallback, Handler, HandlerTable, first_answer, holder_key, is_coroutine_function,
                       log_handler_error)
from .link import DisconnectCallback, ReconnectCallback, ServiceLink, Subjects, call_back, check_subjects
from .patterns import compile_pattern, glob_pattern
from .publisher_core import PublisherCore
from .subscriber_core import OWN, PATTERN, SUBJECT, SubscriberCore, Wanted

__all__ = ["Publisher", "Subscriber", "ServiceLink", "Subjects"]  # the last two as before, for es and shortcuts

log = logging.getLogger(__name__)


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

    ``user`` and ``password`` log in as a user of a service with users (``es --users``;
    default ``$EVENTSERVICE_USER``, ``$EVENTSERVICE_PASSWORD``); the password is proven,
    never sent. A user with a TLS client certificate needs no password.

    Connection callbacks (keyword arguments or attributes of the same names):
    ``on_disconnect(error)`` when a call finds the service gone, ``on_reconnect(uri)`` when a
    later call reached a service again; called once each per outage, in the thread that made
    the call (the caller's, or with ``batch=True`` the sender's); what they raise is logged.

    ``name`` (default ``PROGRAM@HOST:PID``) is what the service shows of this client. With
    ``announce=True`` it connects at once and the service announces it on
    ``es.presence.publisher.joined``, and on ``.left`` when its connection closes.
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, batch: bool = False, *,
                 user: Optional[str] = None, password: Optional[str] = None,
                 name: Optional[str] = None, announce: bool = False,
                 on_disconnect: Optional[DisconnectCallback] = None,
                 on_reconnect: Optional[ReconnectCallback] = None) -> None:
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        credentials = client_credentials(ident, user, password)
        self._core = PublisherCore(credentials, esURI, batch, name=name, announce=announce,
                                   on_disconnect=lambda e: call_back(self.on_disconnect, e),
                                   on_reconnect=lambda u: call_back(self.on_reconnect, u))
        self.user = credentials.user
        self.ident = None if credentials.user else credentials.secret
        self.name = self._core.name
        if announce:
            self._core.connect()

    def publish(self, subjects: Subjects, msg: Any) -> None:
        """Publish ``msg`` on each subject in ``subjects`` (a str or list/tuple of str)."""
        self._core.publish(*self._core.prepare(subjects, msg))

    def request(self, subject: str, msg: Any = None, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send a request on ``subject`` and return the first answer of a responder (a
        subscriber that overrides ``respond`` or has a responder handler; None is an
        answer too). :class:`~eventservice.errors.RemoteError` (with the ``type_name`` and
        ``message`` of its exception) when the responder raised;
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


class Subscriber:
    """Receives events on subjects and patterns; override ``event(self, event)``, or attach
    plain handlers with :meth:`on` and :meth:`on_match`.

    It serves a Pyro5 daemon of its own (requiring the passphrase too, when one is set, or
    with ``user`` that user's password, so that only the service can push events into it);
    ``listen()`` serves callbacks until ``abort()``, ``start()`` does that in a background
    thread. Events arrive in the order each publisher published them; with
    ``setThreading(False)`` ``event()`` (and so every handler) is never called by two threads
    at once. A watcher thread checks the service every few seconds and subscribes again with
    everything this subscriber had when the service restarted or was replaced.

    Keyword arguments (also attributes of the same names, except ``user`` and ``password``,
    as for :class:`Publisher`):

    - ``name`` (default ``PROGRAM@HOST:PID``): what the service shows of this subscriber, in
      presence events and ``stats(True)``.
    - ``on_error(exc, event, handler)``: told when a handler raised; the default logs it with
      its traceback. The other handlers and the listener go on either way.
    - ``on_disconnect(error)``: told when the watcher finds the service gone (unreachable, or
      restarted: a new run under the name or ``esURI``).
    - ``on_reconnect(uri)``: told when a service answers again and every subscription of this
      subscriber (its own and its handlers') was made again there.

    Connection callbacks alternate, starting with ``on_disconnect``, and run in the watcher
    thread; what they raise is logged.
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, *, name: Optional[str] = None,
                 user: Optional[str] = None, password: Optional[str] = None,
                 on_error: Optional[ErrorCallback] = None,
                 on_disconnect: Optional[DisconnectCallback] = None,
                 on_reconnect: Optional[ReconnectCallback] = None) -> None:
        self.on_error: ErrorCallback = on_error or log_handler_error
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._handlers = HandlerTable()  # plain handlers, for dispatch: the service holds the core's set
        self._responders = HandlerTable()  # responder handlers (on(..., respond=True)), for requests
        self._event_lock = threading.Lock()
        self._threaded = True
        credentials = client_credentials(ident, user, password)
        self._core = SubscriberCore(credentials, esURI, name=name, deliver=self._deliver, answer=self._answer,
                                    on_disconnect=lambda e: call_back(self.on_disconnect, e),
                                    on_reconnect=lambda u: call_back(self.on_reconnect, u))
        self.user = credentials.user
        self.ident = None if credentials.user else credentials.secret
        self.name = self._core.name
        self.daemon = self._core.daemon

    @property
    def uri(self) -> str:
        """The callback URI the service knows this subscriber by: its key in the service's
        ``stats(True)``, the ``subscriber`` of presence events."""
        return self._core.uri

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, subjects: Subjects, group: Optional[str] = None, filter: Any = None, *,
                  glob: bool = False) -> None:
        """Receive events on these exact subjects (case-insensitive). With ``group``, the
        subscribers of that work-queue group share the events (each goes to one of them);
        with ``filter`` (plain data, see :mod:`eventservice.filters`) only events whose
        message passes are sent. Both are kept when subscribing again after a restart.
        With ``glob=True`` the subjects are glob-style patterns (``sensor.*``, ``*``),
        subscribed as the regex patterns :func:`~eventservice.patterns.glob_pattern` makes."""
        if glob:
            self.subscribeMatch(_globs(subjects), group, filter)
            return
        self._core.subscribe(OWN, SUBJECT, check_subjects(subjects), (group, filter))

    def subscribeMatch(self, patterns: Subjects, group: Optional[str] = None, filter: Any = None) -> None:
        """Receive events whose subject matches one of these regex patterns; ``group`` and
        ``filter`` as for :meth:`subscribe`."""
        self._core.subscribe(OWN, PATTERN, check_subjects(patterns, "pattern"), (group, filter))

    def unsubscribe(self, subjects: Subjects, *, glob: bool = False) -> None:
        """Stop receiving on these subjects or patterns (glob-style ones with ``glob=True``):
        for this subscriber and every handler holding them."""
        subjects = _globs(subjects) if glob else check_subjects(subjects, "subject or pattern")
        with self._core.changes:
            self._core.unsubscribe(subjects)
            self._handlers.remove_names(subjects)
            self._responders.remove_names(subjects)

    def respond(self, event: Event) -> Any:
        """Answer a request (see :meth:`Publisher.request`); override it. What it returns
        is the answer (None too); what it raises reaches the requester as
        :class:`~eventservice.errors.RemoteError`. The default asks the first responder
        handler that wants the event (see :meth:`on`); without one, this subscriber is no
        responder for the request, which then arrives as an ordinary event. An override
        leaves a request to others with ``return super().respond(event)``."""
        return first_answer(self._responders.targets(event.subject, event.msg), event)

    def _answer(self, event: Event) -> Any:
        if self._threaded:
            return self.respond(event)
        with self._event_lock:
            return self.respond(event)

    # -- plain handlers ----------------------------------------------------------------------
    def on(self, subjects: Subjects, handler: Optional[Handler] = None, *, filter: Any = None,
           group: Optional[str] = None, respond: bool = False) -> Any:
        """Call ``handler(event)`` for every event on these exact subjects (case-insensitive).

        Subscribes at the service (before returning) and returns ``handler``. Without
        ``handler``, returns a decorator that does the same: ``@sub.on("news")``. A handler
        may be attached any number of times, to exact subjects and patterns; it is called
        once per event that matches any of its subscriptions, however many do, and the
        service sends the event once however many handlers want it. Handlers run in the
        daemon's threads, in the order they were first attached; one that raises goes to
        ``on_error`` and the others still run. They are called by the default ``event()``:
        an overriding ``event()`` calls :meth:`call_handlers` to keep them.

        ``filter`` (plain data, as for :meth:`subscribe`) gives the handler only the events
        whose message passes; the service sends each subject once with its handlers' filters
        combined (any of them; none when one handler takes everything), so one subscriber
        carries many filtered handlers. ``group`` makes this subscriber a member of that
        work-queue group for these subjects (all holders of a subject here share one group).
        Without either, the handler takes the subject as this subscriber holds it already
        (with its group and filter, if any).

        With ``respond=True`` the handler answers requests on these subjects instead (see
        :meth:`respond`): what it returns is the answer, what it raises the requester's
        :class:`~eventservice.errors.RemoteError`; it is not called for ordinary events."""
        subjects = check_subjects(subjects)
        if handler is None:
            return self._decorator(self.on, subjects, filter=filter, group=group, respond=respond)
        return self._attach(handler, Wanted(SUBJECT, subjects, filter, group, respond), subjects=subjects)

    def on_match(self, patterns: Subjects, handler: Optional[Handler] = None, *, filter: Any = None,
                 group: Optional[str] = None, respond: bool = False) -> Any:
        """Like :meth:`on`, for regex patterns (``re.IGNORECASE``, ``re.match``), matched here
        with the service's semantics. ``ValueError`` for an invalid pattern, before sending."""
        patterns = check_subjects(patterns, "pattern")
        if handler is None:
            return self._decorator(self.on_match, patterns, filter=filter, group=group, respond=respond)
        compiled = [compile_pattern(p) for p in patterns]
        return self._attach(handler, Wanted(PATTERN, patterns, filter, group, respond), patterns=compiled)

    def on_glob(self, globs: Subjects, handler: Optional[Handler] = None, *, filter: Any = None,
                group: Optional[str] = None, respond: bool = False) -> Any:
        """Like :meth:`on_match`, for glob-style patterns (``sensor.*``, ``*``: see
        :func:`~eventservice.patterns.glob_pattern`); detach it with :meth:`remove_handler`
        and no subjects, or the patterns it makes."""
        return self.on_match(_globs(globs), handler, filter=filter, group=group, respond=respond)

    def _attach(self, handler: Handler, wanted: "Wanted", **held: Any) -> Handler:
        """Attach ``handler`` (to answer requests with ``wanted.respond``) to subjects or
        compiled patterns (``held``) and subscribe ``wanted.names`` at the service; undone
        here if the service refuses."""
        _check_handler(handler)
        table = self._responders if wanted.respond else self._handlers
        with self._core.changes:
            added_subjects, added_patterns = table.add(handler, filter=wanted.filter, **held)
            try:
                self._core.subscribe(holder_key(handler, wanted.respond), wanted.kind, wanted.names, wanted.options)
            except BaseException:
                table.remove(handler, added_subjects + added_patterns)
                raise
        return handler

    @staticmethod
    def _decorator(attach: Callable[..., Any], names: List[str], **options: Any) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            attach(names, handler, **options)
            return handler
        return decorate

    def remove_handler(self, handler: Handler, subjects: Optional[Subjects] = None) -> bool:
        """Detach ``handler`` from these subjects and patterns (by the strings they were given
        with; exact ones case-insensitive), or from all; a handler left with none is
        detached. Unsubscribes at the service what nobody here holds any more. True if
        the handler held any of them; an unknown handler is ignored (False)."""
        names = None if subjects is None else check_subjects(subjects, "subject or pattern")
        held = False
        with self._core.changes:
            for respond, table in ((False, self._handlers), (True, self._responders)):
                if table.remove(handler, names):
                    held = True
                    self._core.release(holder_key(handler, respond), names)
        return held

    def handlers(self) -> List[Handler]:
        """The attached handlers (not responders), in the order they were first attached."""
        return self._handlers.handlers()

    def call_handlers(self, event: Event) -> int:
        """Call every handler whose subscriptions match ``event``, each once, in attachment
        order; a handler that raises goes to ``on_error``. Returns how many were called."""
        targets = self._handlers.targets(event.subject, event.msg)
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
        this subscriber has no handlers nor responders, prints the event."""
        if self._handlers or self._responders:
            self.call_handlers(event)
        else:
            print(event, flush=True)

    def setThreading(self, threaded: bool) -> None:
        """False: ``event()`` is called by one thread at a time."""
        self._threaded = bool(threaded)

    def _deliver(self, events: List[Event]) -> None:
        """One batch of events from the service, in order (a daemon thread)."""
        for event in events:
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
                aborted = self._core.listen()
            if not aborted:  # Pyro5's loop ends quietly on Ctrl-C
                raise KeyboardInterrupt
        except (KeyboardInterrupt, SystemExit):
            self.close()
            raise

    def start(self) -> threading.Thread:
        """Listen in a background thread; returns it."""
        return self._core.start()

    def abort(self) -> None:
        """Make ``listen()`` return."""
        self._core.abort()

    def close(self) -> None:
        """Unsubscribe everything (when the service answers), stop listening, close the
        daemon and its connections, and end this subscriber's threads."""
        self._handlers.clear()
        self._responders.clear()
        self._core.close()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """False from the watcher finding the service gone until it subscribed again."""
        return self._core.connected


def _globs(globs: Subjects) -> List[str]:
    """Glob-style patterns as the regex patterns they stand for."""
    return [glob_pattern(glob) for glob in check_subjects(globs, "glob")]


def _check_handler(handler: Any) -> None:
    if not callable(handler):
        raise TypeError(f"a handler must be callable, not {type(handler).__name__}")
    if is_coroutine_function(handler):
        raise TypeError("a coroutine function cannot be a handler of the threaded Subscriber: "
                        "use eventservice.aio.AsyncSubscriber")


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
