"""What both publisher faces stand on: :class:`PublisherCore` (the connection, the batching
sender, requests) under :class:`~eventservice.Publisher` and
:class:`~eventservice.aio.AsyncPublisher`.

A face checks and encodes what it publishes with :meth:`PublisherCore.prepare` (in the
caller's thread: type errors are raised before anything is sent or queued), then hands the
prepared event to :meth:`~PublisherCore.publish` (which may block: it waits for the service,
or with batching for room in the queue) or, without blocking, to
:meth:`~PublisherCore.offer` (batching only).
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import weakref
from typing import Any, Deque, Dict, List, Optional, Tuple

from . import typed, wire
from .auth import Credentials
from .config import DEFAULT_CLIENT_TIMEOUT, FALLBACK_SERIALIZER, client_name
from .errors import NoResponderError, RemoteError
from .link import RECONNECT_ERRORS, DisconnectCallback, ReconnectCallback, ServiceLink, check_subjects, is_remote

log = logging.getLogger(__name__)

MAX_PENDING = 100_000  # events a batching publisher holds before publish() waits
MAX_BATCH = 5_000  # events per publishBatch call
NO_RESPONDER = "no responder for subject"  # how the service's TimeoutError begins when nobody could be asked

Batch = List[Tuple[List[str], Any]]  # (subjects, encoded message) in order


class PublisherCore:
    """One publisher's connection to the service (proving ``credentials``), its batching
    sender (with ``batch=True``) and its connection for requests (made by the first
    request). Thread-safe. Its connections say its ``name``; with ``announce`` the first
    asks the service to announce it (see :mod:`eventservice.presence`).

    ``on_disconnect(error)`` and ``on_reconnect(uri)`` are called as
    :class:`~eventservice.link.ServiceLink` says (in the thread of the call that noticed it,
    once each per outage); what they raise is logged."""

    def __init__(self, credentials: Credentials, esURI: Any, batch: bool, *, name: Optional[str] = None,
                 announce: bool = False, on_disconnect: DisconnectCallback, on_reconnect: ReconnectCallback) -> None:
        self.credentials = credentials
        self.name = client_name(name)
        self.announce = announce
        hello: Dict[str, Any] = {"name": self.name, "announce": True} if announce else {"name": self.name}
        self._link = ServiceLink(credentials, esURI, on_lost=on_disconnect, on_back=on_reconnect, hello=hello)
        self._batcher: Optional[Batcher] = Batcher(self._link) if batch else None
        self._requests: Optional[ServiceLink] = None
        self.closed = False
        if self._batcher is not None:
            _at_exit.add(self)

    def connect(self) -> None:
        """Connect now (an announced publisher shows up at once); when no service answers,
        the next call tries again."""
        try:
            self._link.call("ping")
        except RECONNECT_ERRORS as exc:
            log.info("no event service yet (%s): connecting at the next call", exc)

    @property
    def batching(self) -> bool:
        """True if publish() queues events for the background sender."""
        return self._batcher is not None

    @property
    def connected(self) -> bool:
        """False from a call that found the service gone until one reaches it again."""
        return not self._link.lost

    def prepare(self, subjects: Any, msg: Any) -> Tuple[List[str], Any]:
        """(subjects as a list, the message encoded): ``RuntimeError`` once closed,
        ``TypeError`` for a subject that is not a str or an unregistered class."""
        if self.closed:
            raise RuntimeError("publisher is closed")
        subjects = [subjects] if type(subjects) is str else check_subjects(subjects)
        return subjects, typed.encode(msg)

    def publish(self, subjects: List[str], msg: Any) -> None:
        """Publish a prepared event: returns once the service accepted it (raising what the
        service raised) or, batching, once it is queued (waiting while the queue is full)."""
        if self._batcher is not None:
            self._batcher.add(subjects, msg)
            return
        packed = wire.pack_publish([(subjects, msg)])
        if packed is not None:
            self._link.call("publishPacked", packed)
        else:  # a value msgpack cannot carry
            self._link.call("publish", subjects, msg, serializer=FALLBACK_SERIALIZER)

    def offer(self, subjects: List[str], msg: Any) -> bool:
        """Batching only: queue a prepared event if there is room now (True), without waiting."""
        assert self._batcher is not None, "offer() is for a batching publisher"
        return self._batcher.offer(subjects, msg)

    def request(self, subject: str, msg: Any, timeout: float) -> Any:
        """The first answer of a responder to a request on ``subject`` (see
        :meth:`eventservice.Publisher.request`); ``NoResponderError`` when none answers,
        ``RemoteError`` when the responder raised."""
        if self.closed:
            raise RuntimeError("publisher is closed")
        if not isinstance(subject, str):
            raise TypeError(f"subject must be a str, not {type(subject).__name__}")
        link = self._requests
        if link is None:  # a connection of their own: a long request holds up no publishing
            link = self._requests = ServiceLink(self.credentials, self._link.esURI, hello={"name": self.name})
        packed = wire.pack_request(subject, typed.encode(msg), timeout)
        with link.lock:
            link.timeout = timeout + DEFAULT_CLIENT_TIMEOUT  # the service answers by then
            try:
                kind, answer = wire.unpack_reply(link.call("requestPacked", packed))
            except TimeoutError as exc:
                if not is_remote(exc):
                    raise
                asked = None if str(exc).startswith(NO_RESPONDER) else timeout
                raise NoResponderError(str(exc), subject=subject, timeout=asked) from exc
        if kind == wire.FAILED:
            raise RemoteError(*answer)
        return typed.decode(answer)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every queued event was accepted; raise the first error any met."""
        if self._batcher is not None:
            self._batcher.flush(timeout)

    def close(self) -> None:
        """Flush (batching) and release the connections; later calls raise RuntimeError."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._batcher is not None:
                _at_exit.discard(self)
                self._batcher.close()
        finally:
            self._link.reset()
            if self._requests is not None:
                self._requests.reset()


class Batcher:
    """The background sender of a batching publisher: sends queued events in order, up to
    MAX_BATCH per call, in its own thread."""

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
        """Queue an event, waiting while MAX_PENDING are queued."""
        with self.cond:
            while len(self.pending) >= MAX_PENDING and self.thread.is_alive():
                self.cond.wait(0.5)
            self._append(subjects, msg)

    def offer(self, subjects: List[str], msg: Any) -> bool:
        """Queue an event if fewer than MAX_PENDING are queued (True); never waits."""
        with self.cond:
            if len(self.pending) >= MAX_PENDING:
                return False
            self._append(subjects, msg)
            return True

    def _append(self, subjects: List[str], msg: Any) -> None:
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

    def _send(self, batch: Batch) -> None:
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
        """Wait until the queue is empty and nothing is in flight; raise the first error
        met since the last flush (``TimeoutError`` after ``timeout`` seconds)."""
        with self.cond:
            if not self.cond.wait_for(lambda: not self.pending and not self.in_flight, timeout):
                raise TimeoutError(f"{len(self.pending) + self.in_flight} events not yet accepted")
            error, self.error = self.error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Flush, then end the sender thread."""
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
        self.publishers: "weakref.WeakSet[PublisherCore]" = weakref.WeakSet()
        atexit.register(self.close_all)

    def add(self, publisher: PublisherCore) -> None:
        self.publishers.add(publisher)

    def discard(self, publisher: PublisherCore) -> None:
        self.publishers.discard(publisher)

    def close_all(self) -> None:
        for publisher in list(self.publishers):
            try:
                publisher.close()
            except Exception as exc:
                log.error("events lost at exit: %s", exc)


_at_exit = _AtExit()
