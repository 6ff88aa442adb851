"""What both subscriber faces stand on: :class:`SubscriberCore`, under
:class:`~eventservice.Subscriber` (threads) and :class:`~eventservice.aio.AsyncSubscriber`
(asyncio).

The core owns the link to the service, the callback daemon and the :class:`Receiver` the
service calls back, the watcher thread that subscribes again after the service restarted,
and one :class:`SubscriptionSet`: every subscription held at the service, with its group and
filter and who holds it (the subscriber itself, a handler, an async subscription). What the
service is asked for, what is unsubscribed when the last holder lets go, and what is made
again after a restart all come from that one set.

A face gives the core two functions, called in the daemon's threads: ``deliver(events)``
with each batch of events in order, and ``answer(event)`` for a request (returning the
answer, or :data:`~eventservice.handlers.NO_ANSWER` to leave it to others).
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, Iterable, List, NamedTuple, Optional, Set, Tuple

from Pyro5.api import expose
from Pyro5.client import Proxy

from . import typed, wire
from .auth import Authority, Credentials, OneUser
from .config import DEFAULT_CLIENT_TIMEOUT, DEFAULT_RECONNECT_CHECK, FAST_SERIALIZER, client_name
from .daemon import GuardedDaemon
from .errors import PermissionDenied, type_name
from .event import Event
from .handlers import NO_ANSWER
from .link import RECONNECT_ERRORS, DisconnectCallback, ReconnectCallback, ServiceLink, call_back

log = logging.getLogger(__name__)

CLOSE_JOIN_TIMEOUT = 2.0  # seconds close() waits for each of a subscriber's threads to end
SUBJECT, PATTERN = "subject", "pattern"  # the kinds of subscription
OWN = "own"  # the holder of what the subscriber itself subscribed (handlers and subscriptions are objects)
Options = Tuple[Optional[str], Any]  # (group, filter) of a subscription
PLAIN: Options = (None, None)
Deliver = Callable[[List[Event]], None]
Answer = Callable[[Event], Any]


class Call(NamedTuple):
    """One subscribe call: ``method`` (subscribe or subscribeMatch), names, optional arguments."""
    method: str
    names: List[str]
    extras: Tuple[Any, ...]


class Wanted(NamedTuple):
    """What a handler or a subscription of a face asks for: ``names`` of ``kind``, a content
    ``filter`` and a work-queue ``group`` (None: none), and whether it answers requests."""
    kind: str
    names: List[str]
    filter: Any = None
    group: Optional[str] = None
    respond: bool = False

    @property
    def options(self) -> Optional[Options]:
        """Its options at the service; None (whatever the other holders chose) without
        filter and group."""
        return None if self.filter is None and self.group is None else (self.group, self.filter)


def _extras(options: Options) -> Tuple[Any, ...]:
    """The optional arguments of the service's subscribe methods, only as far as given
    (an Event Service that predates them still takes a plain subscription)."""
    group, filter = options
    if filter is not None:
        return (group, filter)
    if group is not None:
        return (group,)
    return ()


def _calls(held: Iterable[Tuple[str, str, Options]]) -> List[Call]:
    """Calls that subscribe (kind, name, options) triples: exact subjects first, one call per
    kind and options, names sorted."""
    grouped: Dict[Tuple[str, str], Call] = {}
    for kind, name, options in sorted(held, key=lambda item: (item[0] != SUBJECT, item[1])):
        extras = _extras(options)
        method = "subscribe" if kind == SUBJECT else "subscribeMatch"
        grouped.setdefault((method, repr(extras)), Call(method, [], extras)).names.append(name)
    return list(grouped.values())


def combine(wanted: Iterable[Optional[Options]]) -> Options:
    """The options of the one subscription at the service that serves holders wanting
    ``wanted`` (None: whatever the others chose): the group they share, and no filter when
    one of them wants every event, else any of their filters. ValueError for holders of
    different groups."""
    explicit = [options for options in wanted if options is not None]
    if not explicit:
        return PLAIN
    groups = {group for group, _ in explicit}
    if len(groups) > 1:
        raise ValueError(f"a subscriber holds a subject or pattern in one group at most, not in "
                         f"{sorted(groups, key=str)}")
    group = groups.pop()
    filters: List[Any] = []
    for _, filter in explicit:
        if filter is None:
            return group, None
        if filter not in filters:
            filters.append(filter)
    return group, filters[0] if len(filters) == 1 else ["or", *filters]


@dataclass
class Held:
    """One subscription at the service: ``name`` as first given (a pattern's source), who
    holds it with which options (None: whatever the others chose), and the options the
    service has, those combined (:func:`combine`)."""
    name: str
    holders: Dict[Hashable, Optional[Options]] = field(default_factory=dict)
    options: Options = PLAIN


class SubscriptionSet:
    """Every subscription one subscriber holds at the service: exact subjects by their
    casefolded name, patterns by their source, each with its holders and their options.
    No sockets; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Dict[Tuple[str, str], Held] = {}

    @staticmethod
    def _key(kind: str, name: str) -> Tuple[str, str]:
        return kind, name.casefold() if kind == SUBJECT else name

    def __bool__(self) -> bool:
        return bool(self._held)

    def plan(self, holder: Hashable, kind: str, names: List[str], options: Optional[Options]) -> List[Call]:
        """The calls that subscribe ``names`` once ``holder`` holds them with ``options``
        (None: whatever the others chose). ValueError when that would put one subscription
        in two groups."""
        with self._lock:
            found = []
            for name in names:
                entry = self._held.get(self._key(kind, name))
                wanted = dict(entry.holders) if entry is not None else {}
                wanted[holder] = options
                found.append((kind, name, combine(wanted.values())))
        return _calls(found)

    def add(self, holder: Hashable, kind: str, names: Iterable[str], options: Optional[Options]) -> None:
        """``holder`` holds ``names`` (of ``kind``) with ``options`` (see :meth:`plan`)."""
        with self._lock:
            for name in names:
                entry = self._held.setdefault(self._key(kind, name), Held(name))
                entry.holders[holder] = options
                entry.options = combine(entry.holders.values())

    def remove(self, holder: Hashable, names: Optional[Iterable[str]] = None) -> Tuple[List[str], List[Call]]:
        """``holder`` lets go of ``names`` (exact ones case-insensitive, patterns by their
        source), or of all it holds. Returns the strings to unsubscribe (those nobody holds
        any more) and the calls that subscribe again what is still held under one of them
        (the service's unsubscribe takes a string as an exact subject and as a pattern) or
        whose options changed with the holder gone."""
        with self._lock:
            if names is None:
                keys = [key for key, entry in self._held.items() if holder in entry.holders]
            else:
                keys = [self._key(kind, name) for name in names for kind in (SUBJECT, PATTERN)]
            gone: Dict[str, Set[str]] = {SUBJECT: set(), PATTERN: set()}
            changed = set()
            for key in keys:
                entry = self._held.get(key)
                if entry is None or holder not in entry.holders:
                    continue
                del entry.holders[holder]
                if not entry.holders:
                    del self._held[key]
                    gone[key[0]].add(entry.name)
                    continue
                options = combine(entry.holders.values())
                if options != entry.options:
                    entry.options = options
                    changed.add(key)
            strings = sorted(gone[SUBJECT]) + sorted(gone[PATTERN])
            folded = {s.casefold() for s in strings}
            again = [(kind, entry.name, entry.options) for (kind, key), entry in self._held.items()
                     if (key in folded if kind == SUBJECT else key in strings) or (kind, key) in changed]
        return strings, _calls(again)

    def drop(self, names: Iterable[str]) -> None:
        """Forget ``names`` as exact subjects (case-insensitive) and as patterns, whoever holds them."""
        with self._lock:
            for name in names:
                for kind in (SUBJECT, PATTERN):
                    self._held.pop(self._key(kind, name), None)

    def clear(self) -> List[str]:
        """Forget everything; returns the strings that unsubscribe it all."""
        with self._lock:
            held, self._held = self._held, {}
        return sorted({entry.name for entry in held.values()})

    def calls(self) -> List[Call]:
        """The calls that subscribe everything held, each with its options."""
        with self._lock:
            return _calls((kind, entry.name, entry.options) for (kind, _), entry in self._held.items())


def callback_authority(credentials: Credentials) -> Authority:
    """Who may call a subscriber's daemon: whoever proves the passphrase, or (for a user)
    that user's password; anybody when there is neither."""
    secret, user = credentials
    if user is not None and secret is not None:
        return Authority(accounts=OneUser(user, secret))
    return Authority(secret if user is None else None)


class CallbackDaemon(GuardedDaemon):
    """A subscriber's daemon: remembers the connections it serves and their threads, so
    that ``close()`` ends them too (Pyro5 alone leaves a worker blocked on each connection
    until the other side closes it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._served: Dict[Any, threading.Thread] = {}
        self._served_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def on_connect(self, conn: Any, denied_reason: Optional[str] = None) -> bool:
        ok: bool = super().on_connect(conn, denied_reason)
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
    """The object the service calls back: hands events to ``deliver``, a batch at a time,
    and requests to ``answer``."""

    def __init__(self, deliver: Deliver, answer: Answer) -> None:
        self._deliver = deliver
        self._answer = answer

    def event(self, event: Any) -> None:
        if isinstance(event, dict):
            event = Event(event["subject"], event["msg"], event["time"])
        decode = typed.decoder()
        if decode is not None:
            event = Event(event.subject, decode(event.msg), event.time)
        self._deliver([event])

    def deliverEvents(self, items: List[Tuple[str, Any, float]]) -> None:
        """Events as (subject, msg, time) tuples, in order."""
        decode = typed.decoder()
        if decode is None:
            events = [Event(subject, msg, when) for subject, msg, when in items]
        else:
            events = [Event(subject, decode(msg), when) for subject, msg, when in items]
        self._deliver(events)

    def deliverPacked(self, data: bytes) -> None:
        """Events packed by :func:`eventservice.wire.pack`, in order."""
        self.deliverEvents(wire.unpack(data))

    def respondPacked(self, data: bytes) -> bytes:
        """A request packed by :func:`eventservice.wire.pack_request`: the reply, packed by
        :func:`eventservice.wire.pack_reply`. The face's answer (None included), the error
        it raised, or a pass when it returned :data:`~eventservice.handlers.NO_ANSWER` (it
        is no responder for this request: the service sends it as an ordinary event)."""
        subject, msg, when = wire.unpack_request(data)
        try:
            answer = self._answer(Event(subject, typed.decode(msg), when))
            if answer is NO_ANSWER:
                return wire.pack_reply(wire.PASSED)
            return wire.pack_reply(wire.ANSWERED, typed.encode(answer))
        except Exception as exc:
            log.info("answering a request on %s raised %s: %s", subject, type(exc).__name__, exc)
            return wire.pack_reply(wire.FAILED, (type_name(exc), str(exc)))

    def heartbeat(self, service_id: str) -> bool:
        """The service checks that this subscriber is alive."""
        return True


class SubscriberCore:
    """One subscriber's link, callback daemon, receiver, watcher and subscription set.

    Subscription changes (:meth:`subscribe`, :meth:`release`, :meth:`unsubscribe`) are made
    one at a time, service call included; a face that changes a table of its own along with
    the set holds :attr:`changes` around both. They raise what the service or the link
    raised (``ServiceNotFoundError`` when no service can be reached); a refused
    subscription is not held.

    The watcher thread checks the service every ``DEFAULT_RECONNECT_CHECK`` seconds while
    anything is held; when it finds the service gone it calls ``on_disconnect(error)``,
    when a service answers again and everything held was subscribed there
    ``on_reconnect(uri)`` (alternating, starting with ``on_disconnect``; what they raise is
    logged)."""

    def __init__(self, credentials: Credentials, esURI: Any, *, name: Optional[str] = None, deliver: Deliver,
                 answer: Answer, on_disconnect: DisconnectCallback, on_reconnect: ReconnectCallback) -> None:
        self.credentials = credentials
        self.name = client_name(name)
        self._on_disconnect = on_disconnect
        self._on_reconnect = on_reconnect
        self._link = ServiceLink(credentials, esURI, persistent=False, hello={"name": self.name})
        self.daemon = CallbackDaemon(authority=callback_authority(credentials))
        self._callback = Proxy(self.daemon.register(Receiver(deliver, answer)))  # it carries no secret
        self._callback._pyroHandshake = None
        self._callback._pyroSerializer = FAST_SERIALIZER  # the format the service calls back in
        self._set = SubscriptionSet()
        self.changes = threading.RLock()  # one subscription change at a time, service call included
        self._abort = threading.Event()
        self._listener: Optional[threading.Thread] = None
        self._service_id: Optional[str] = None
        self._connected = True
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="es-subscriber-watch", daemon=True)
        self._watcher.start()

    @property
    def uri(self) -> str:
        """The callback URI the service knows this subscriber by."""
        return str(self._callback._pyroUri)

    @property
    def connected(self) -> bool:
        """False from the watcher finding the service gone until it subscribed again."""
        return self._connected

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, holder: Hashable, kind: str, names: List[str], options: Optional[Options] = None) -> None:
        """Subscribe ``names`` (of ``kind``: SUBJECT or PATTERN) for ``holder``, with
        ``options`` (group, filter), or (None) with those the other holders chose; the
        service holds each name once, with its holders' options combined (:func:`combine`)."""
        with self.changes:
            for call in self._set.plan(holder, kind, names, options):
                self._link.call(call.method, call.names, self._callback, *call.extras)
            self._set.add(holder, kind, names, options)
            self._learn_service_id()

    def release(self, holder: Hashable, names: Optional[List[str]] = None) -> None:
        """``holder`` lets go of ``names`` (exact subjects case-insensitive, patterns by the
        same string), or of everything it holds; what nobody holds any more is unsubscribed
        at the service."""
        with self.changes:
            gone, again = self._set.remove(holder, names)
            if gone:
                self._link.call("unsubscribe", gone, self._callback)
            for call in again:
                self._link.call(call.method, call.names, self._callback, *call.extras)

    def unsubscribe(self, names: List[str]) -> None:
        """Unsubscribe ``names`` (exact subjects and patterns) for every holder."""
        with self.changes:
            self._link.call("unsubscribe", names, self._callback)
            self._set.drop(names)

    def _learn_service_id(self) -> None:
        if self._service_id is None:
            try:
                self._service_id = self._link.call("ping")
            except RECONNECT_ERRORS:
                pass

    # -- listening ---------------------------------------------------------------------------
    def listen(self) -> bool:
        """Serve callbacks until :meth:`abort` (an abort that came before this call ends it
        at once: it is used up, and the next ``listen()`` serves again). True if ended by
        :meth:`abort`; False if Pyro5's loop ended otherwise (it ends quietly on Ctrl-C)."""
        try:
            self.daemon.requestLoop(lambda: not self._abort.is_set())
            return self._abort.is_set()
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
        """Forget every subscription and unsubscribe it (when the service answers), stop
        listening, close the daemon and its connections, and end the threads."""
        with self.changes:
            held = self._set.clear()
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

    # -- finding the service again ---------------------------------------------------------
    def _watch(self) -> None:
        link = ServiceLink(self.credentials, self._link.esURI, persistent=False, hello=self._link.hello)
        while not self._closed.wait(DEFAULT_RECONNECT_CHECK):
            if not self._set:
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
                for call in self._set.calls():
                    try:
                        link.call(call.method, call.names, self._callback, *call.extras)
                    except PermissionDenied as exc:  # its users file changed meanwhile: the rest still counts
                        log.warning("could not subscribe again: %s", exc)
            except RECONNECT_ERRORS as exc:
                log.debug("event service not reachable: %s", exc)
                continue
            if self._closed.is_set():
                break
            self._service_id = current
            log.info("event service %s answers: subscribed again", current)
            self._connected = True
            call_back(self._on_reconnect, link.uri or "")
        link.reset()

    def _went_away(self, error: BaseException) -> None:
        if self._connected and not self._closed.is_set():
            self._connected = False
            call_back(self._on_disconnect, error)
