"""The backbone's engine-independent part: :class:`Backbone`, one ``es``'s link to the
event space (threads, the asyncio loop, forwarding, interest, state and counters). Engines
subclass it (:mod:`eventservice.backbone.nats`, :mod:`eventservice.backbone.redis`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import time
import uuid
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from .. import wire
from ..config import DEFAULT_BACKBONE_TIMEOUT as DEFAULT_TIMEOUT
from ..errors import BackboneError
from .messages import Batch, Packer, Unpacker
from .urls import describe, mask_url, secrets_of

log = logging.getLogger("eventservice.backbone")

MAX_PENDING_EVENTS = 100_000  # events waiting to be forwarded; beyond that they fail at once
MAX_INBOUND_MESSAGES = 20_000  # engine messages waiting for local delivery; beyond that dropped
MAX_ROUTED_SUBJECTS = 10_000  # exact subjects subscribed one by one; more: take the whole space
CLOSE_DEADLINE = 3.0  # seconds close() may take
MAX_CACHED_SUBJECTS = 100_000  # subjects whose engine subject is remembered

Item = wire.Item
Deliver = Callable[[List[Item]], None]


# Backbone is longer than the ~250 lines a class gets here: it is one link's state machine
# (connected, down, back), and its forwarding pump, interest and state changes share one lock,
# one loop and the same counters; the engine messages themselves are in messages.py.
class Backbone:
    """One ``es``'s link to the engine. Engines subclass it and provide the coroutines
    ``_connect``, ``_send``, ``_apply_interest`` and ``_disconnect`` (run on the loop), and
    call ``_inbound(bytes)``, ``_went_down(reason)`` and ``_came_back(where)`` from it."""

    engine = "?"
    wildcard = "?"  # the engine subject that matches the whole space

    def __init__(self, urls: Sequence[str], name: str, routing: bool = True, key: Optional[str] = None) -> None:
        self.urls = list(urls)
        self._key = wire.envelope_key(key)
        self.name = name
        self.routing = routing
        self.url = ",".join(mask_url(u) for u in self.urls)  # masked: the form that is shown
        self.origin = uuid.uuid4().hex
        self._secrets = secrets_of(self.urls)
        self._deliver: Optional[Deliver] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._inbound_thread: Optional[threading.Thread] = None
        self._inbound_queue: "queue.Queue[Optional[bytes]]" = queue.Queue(MAX_INBOUND_MESSAGES)
        self._lock = threading.Lock()
        self._out: List[Batch] = []  # batches waiting for the loop, guarded by _lock
        self._out_count = 0
        self._out_scheduled = False
        self._out_event: Optional[asyncio.Event] = None
        self._interest: Tuple[FrozenSet[str], bool] = (frozenset(), False)
        self._interest_scheduled = False
        self._wanted_cache: Optional[Tuple[Any, FrozenSet[str]]] = None
        self._interest_task: "Optional[asyncio.Task[None]]" = None
        self._pump_task: "Optional[asyncio.Task[None]]" = None
        self._channels: Dict[str, str] = {}  # subject as spelled -> engine subject
        self.packer = Packer(self.origin, self._key, self.channel_of, self._max_payload, self.url)
        self.unpacker = Unpacker(self.origin, self._key, self.url)  # used by the inbound thread only
        self._up = False  # connected: forward() queues; else it counts the events as failed
        self._closing = False
        self.state = "new"
        self.where = ""  # the server connected to, masked
        self.last_error = ""
        self._down_since: Optional[float] = None
        self._failed_at_down = 0
        # counters
        self.sent = 0  # events handed to the engine
        self.received = 0  # events from other es delivered here
        self.failed = 0  # events that could not be forwarded
        self.reconnects = 0
        self.outages = 0
        self.messages_sent = 0
        self.inbound_dropped = 0  # engine messages dropped because local delivery lagged

    # -- public ------------------------------------------------------------------------------
    def start(self, deliver: Deliver, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect; from then on events from the space go to ``deliver``. Raises
        :class:`BackboneError` (one line) when the engine cannot be reached within
        ``timeout`` seconds or refuses the credentials."""
        if timeout <= 0:
            raise ValueError("the backbone timeout must be more than 0 seconds")
        self._deliver = deliver
        self.state = "connecting"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="es-backbone", daemon=True)
        self._thread.start()
        self._inbound_thread = threading.Thread(target=self._inbound_loop, name="es-backbone-in", daemon=True)
        self._inbound_thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(timeout), self._loop)
        try:
            future.result(timeout + 15)
        except BackboneError:
            self.close()
            raise
        except BaseException as exc:
            future.cancel()
            self.close()
            raise BackboneError(f"backbone {self.url}: {self.scrub(describe(exc))}") from None

    def forward(self, items: List[Item], user: Optional[str] = None) -> None:
        """Send events accepted here (published by ``user``, with users) to the other ``es``
        of the space. Never blocks."""
        n = len(items)
        if not n:
            return
        with self._lock:
            if not self._up or self._out_count + n > MAX_PENDING_EVENTS:
                self.failed += n
                return
            self._out.append((user, items))
            self._out_count += n
            if self._out_scheduled:
                return
            self._out_scheduled = True
        self._call_soon(self._wake_pump)

    def set_interest(self, exact_subjects: FrozenSet[str], any_patterns: bool) -> None:
        """What the subscribers here want: the casefolded exact subjects, and whether any of
        them holds a pattern. Cheap; the engine is told from the loop."""
        with self._lock:
            self._interest = (frozenset(exact_subjects), bool(any_patterns))
            if self._interest_scheduled or self._loop is None:
                return
            self._interest_scheduled = True
        self._call_soon(self._schedule_interest)

    def stats(self) -> Dict[str, Any]:
        """Plain data: state, URL (masked), counters."""
        exact, patterns = self._interest
        with self._lock:
            failed, pending = self.failed, self._out_count
        return {
            "engine": self.engine, "url": self.url, "name": self.name, "origin": self.origin, "state": self.state,
            "connected": self._up, "server": self.where, "sent": self.sent, "received": self.received,
            "failed": failed, "reconnects": self.reconnects, "outages": self.outages, "pending": pending,
            "messages_sent": self.messages_sent, "messages_received": self.unpacker.messages_received,
            "duplicates": self.unpacker.duplicates, "inbound_dropped": self.inbound_dropped,
            "invalid": self.unpacker.invalid, "forged": self.unpacker.forged, "signed": self._key is not None,
            "routing": self.routing, "whole_space": self._whole_space(exact, patterns),
            "routed_subjects": 0 if self._whole_space(exact, patterns) else len(exact),
            "last_error": self.last_error,
        }

    def close(self) -> None:
        """Send what is queued (briefly), disconnect, stop the threads."""
        if self._closing:
            return
        self._closing = True
        with self._lock:
            self._up = False
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(CLOSE_DEADLINE)
            except BaseException:
                pass
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
            self._thread.join(CLOSE_DEADLINE)
        self.state = "closed"
        if self._inbound_thread is not None:
            try:
                self._inbound_queue.put_nowait(None)
            except queue.Full:
                pass
            self._inbound_thread.join(1.0)

    def scrub(self, text: str) -> str:
        """``text`` without any password or token of the URLs."""
        text = mask_url(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- routing -----------------------------------------------------------------------------
    def channel_of(self, subject: str) -> str:
        """The engine subject an event on ``subject`` travels on."""
        channel = self._channels.get(subject)
        if channel is None:
            if len(self._channels) >= MAX_CACHED_SUBJECTS:
                self._channels.clear()
            channel = self._channels[subject] = self._channel(_subject_hash(subject.casefold()))
            return channel
        return channel

    def _channel(self, digest: str) -> str:
        raise NotImplementedError

    def _whole_space(self, exact: FrozenSet[str], patterns: bool) -> bool:
        return not self.routing or patterns or len(exact) > MAX_ROUTED_SUBJECTS

    def _wanted(self) -> FrozenSet[str]:
        interest = self._interest
        cached = self._wanted_cache
        if cached is not None and cached[0] is interest:
            return cached[1]
        exact, patterns = interest
        if self._whole_space(exact, patterns):
            wanted = frozenset([self.wildcard])
        else:
            wanted = frozenset(self._channel(_subject_hash(s)) for s in exact)
        self._wanted_cache = (interest, wanted)
        return wanted

    # -- the loop ----------------------------------------------------------------------------
    def _run_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
            except BaseException:
                pass
            loop.close()

    def _call_soon(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # loop closed
            pass

    async def _start(self, timeout: float) -> None:
        self._out_event = asyncio.Event()
        await self._connect(timeout)
        self.state = "connected"
        with self._lock:
            self._up = True
        self._pump_task = asyncio.ensure_future(self._pump())
        self._interest_task = asyncio.ensure_future(self._interest_changed())
        await self._interest_task

    async def _stop(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
        try:
            await asyncio.wait_for(self._send_queued(), CLOSE_DEADLINE / 3)
        except BaseException:
            pass
        try:
            await asyncio.wait_for(self._disconnect(), CLOSE_DEADLINE / 3)
        except BaseException:
            pass

    def _wake_pump(self) -> None:
        if self._out_event is not None:
            self._out_event.set()

    async def _pump(self) -> None:
        event = self._out_event
        assert event is not None
        while True:
            await event.wait()
            event.clear()
            await self._send_queued()

    async def _send_queued(self) -> None:
        with self._lock:
            batches, self._out = self._out, []
            total, self._out_count = self._out_count, 0
            self._out_scheduled = False
        if not total:
            return
        messages = self.packer.pack(batches)
        sent, done = await self._send(messages) if messages else (0, 0)
        self.sent += sent
        self.messages_sent += done
        if sent < total:
            with self._lock:
                self.failed += total - sent

    def _schedule_interest(self) -> None:
        with self._lock:
            self._interest_scheduled = False
        if self.state not in ("connected", "disconnected"):
            return  # applied when connected
        if self._interest_task is None or self._interest_task.done():
            self._interest_task = asyncio.ensure_future(self._interest_changed())

    async def _interest_changed(self) -> None:
        while True:
            wanted = self._wanted()
            try:
                await self._apply_interest(wanted)
            except Exception as exc:
                log.debug("backbone %s: could not change subscriptions: %s", self.url, self.scrub(describe(exc)))
            if wanted == self._wanted():
                return

    # -- engine messages ---------------------------------------------------------------------
    def _max_payload(self) -> int:
        """The largest engine message the engine takes (engines say it once connected)."""
        return 1024 * 1024

    def _inbound(self, data: bytes) -> None:
        """Called on the loop for every engine message."""
        try:
            self._inbound_queue.put_nowait(data)
        except queue.Full:
            self.inbound_dropped += 1

    def _inbound_loop(self) -> None:
        get = self._inbound_queue.get
        get_nowait = self._inbound_queue.get_nowait
        take = self.unpacker.take
        while True:
            data = get()
            if data is None:
                return
            items = take(data)
            # take what else is waiting: one delivery for many engine messages
            for _ in range(256):
                try:
                    data = get_nowait()
                except queue.Empty:
                    break
                if data is None:
                    self._hand_over(items)
                    return
                more = take(data)
                if more:
                    items = more if not items else items + more
            self._hand_over(items)

    def _hand_over(self, items: Optional[List[Item]]) -> None:
        if not items or self._deliver is None:
            return
        self.received += len(items)
        try:
            self._deliver(items)
        except Exception as exc:
            log.debug("backbone %s: local delivery failed: %s", self.url, exc)

    # -- state -------------------------------------------------------------------------------
    def _went_down(self, reason: str) -> None:
        """The engine cannot be reached (called on the loop). Logged once per outage."""
        reason = self.scrub(reason)
        self.last_error = reason
        if self._closing or self.state == "connecting":
            return
        with self._lock:
            if not self._up:
                return
            self._up = False
            self._failed_at_down = self.failed
        self.state = "disconnected"
        self.outages += 1
        self._down_since = time.monotonic()
        log.warning("backbone %s: connection lost (%s); serving local clients, events are not forwarded "
                    "until it is back", self.url, reason)

    def _came_back(self, where: str) -> None:
        """The engine answers again (called on the loop). Logged once per outage."""
        self.where = self.scrub(where)
        if self._closing:
            return
        with self._lock:
            if self._up:
                return
            self._up = True
            lost = self.failed - self._failed_at_down
        self.state = "connected"
        self.reconnects += 1
        took = time.monotonic() - (self._down_since or time.monotonic())
        log.warning("backbone %s: connected again to %s after %.1f s; events not forwarded meanwhile: %d",
                    self.url, self.where, took, lost)

    # -- for engines -------------------------------------------------------------------------
    async def _connect(self, timeout: float) -> None:
        raise NotImplementedError

    async def _send(self, messages: List[Tuple[str, bytes, int]]) -> Tuple[int, int]:
        """Publish ``messages`` (engine subject, payload, number of events) in order;
        return how many events, and how many messages, were handed to the engine."""
        raise NotImplementedError

    async def _apply_interest(self, wanted: FrozenSet[str]) -> None:
        """Subscribe to exactly the engine subjects in ``wanted`` (new ones first, then
        drop the old ones, so nothing is missed meanwhile)."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError


def _subject_hash(casefolded: str) -> str:
    return hashlib.blake2b(casefolded.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
