"""Backbones: the messaging engines that join several ``es`` into one event space.

An ``es`` started with ``--backbone URL`` opens a :class:`Backbone` (:func:`open_backbone`),
hands it every event its own publishers published (:meth:`Backbone.forward`), tells it what
its subscribers want (:meth:`Backbone.set_interest`), and receives from it the events other
``es`` of the space published (the ``deliver`` callable given to :meth:`Backbone.start`).
The engines are NATS (``nats://``, ``tls://``; :mod:`eventservice.backbone.nats`, needs
nats-py) and Redis pub/sub (``redis://``, ``rediss://``; :mod:`eventservice.backbone.redis`,
needs redis-py). Their client libraries are optional extras, imported only here, lazily.

Threads: the engine's asyncio client runs on an event loop in a thread of its own
("es-backbone"). ``forward`` only appends to a bounded buffer and wakes the loop, so it never
blocks a publisher; while the engine is down, or when the buffer is full, events are counted
as failed at once. Events from the engine are decoded and handed to ``deliver`` by another
thread ("es-backbone-in"), so a slow local subscriber never stalls the engine's connection.

Wire format, one engine message: an envelope of :mod:`eventservice.wire` (msgpack, or
serpent when a message needs it; never marshal) holding ``origin``, ``seq`` and ``items``, a
list of ``(subject, msg, time)`` events in the order they were published, all on one subject
(case-insensitive); ``origin`` is the id of the sending ``es``'s backbone, ``seq`` counts that
origin's engine messages. With a key (``es --backbone-key``), envelopes are signed with
HMAC-SHA256 and a receiver drops, and counts as ``forged``, any envelope without the right
signature, before decoding it; without a key, anyone who can publish on the engine can
publish into the event space. Undecodable messages are dropped and counted as ``invalid``.
A receiver drops its own messages, and any message whose ``seq`` is not above the last one
it took from that origin: engines deliver one connection's messages in order, so that is
exactly a duplicate (a message that matched two of its subscriptions while its interest
changed).

Interest routing: an event on subject S travels on the engine subject
``<name>.ev.<h>`` (NATS) or channel ``<name>:ev:<h>`` (Redis), where ``h`` is a hash of
``S.casefold()`` (subjects may hold any character; engine subjects cannot). An ``es``
subscribes only to the engine subjects of the exact subjects its subscribers hold, or, when
any of them holds a pattern (or more than :data:`MAX_ROUTED_SUBJECTS` subjects), to the whole
space ``<name>.ev.>`` / ``<name>:ev:*``. Each event is published once; the engine carries it
only to the ``es`` that want it. Consecutive events on one subject travel in one message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import re
import threading
import time
import uuid
from itertools import groupby
from operator import itemgetter
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple
from urllib.parse import unquote, urlsplit

from .. import wire
from ..config import BACKBONE_URL_ENV as URL_ENV, DEFAULT_BACKBONE_NAME as DEFAULT_NAME, \
    DEFAULT_BACKBONE_TIMEOUT as DEFAULT_TIMEOUT, PRESENCE_PREFIX
from ..errors import BackboneError

log = logging.getLogger(__name__)

NATS_SCHEMES = ("nats", "tls")
REDIS_SCHEMES = ("redis", "rediss")
EXTRAS = {"nats": ("nats-py", "nats"), "redis": ("redis-py", "redis")}  # engine -> (library, extra)

MAX_PENDING_EVENTS = 100_000  # events waiting to be forwarded; beyond that they fail at once
MAX_INBOUND_MESSAGES = 20_000  # engine messages waiting for local delivery; beyond that dropped
MAX_EVENTS_PER_MESSAGE = 1_000  # events in one engine message, at most
TARGET_MESSAGE_BYTES = 512 * 1024  # an engine message larger than this is split (if it has > 1 event)
MAX_ROUTED_SUBJECTS = 10_000  # exact subjects subscribed one by one; more: take the whole space
CLOSE_DEADLINE = 3.0  # seconds close() may take
MAX_CACHED_SUBJECTS = 100_000  # subjects whose engine subject is remembered


Item = Tuple[str, Any, float]
Deliver = Callable[[List[Item]], None]

_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")


def split_urls(values: Sequence[str]) -> List[str]:
    """The URLs in ``values``, each of which may hold several separated by commas."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def mask_url(url: str) -> str:
    """``url`` with its password (or a NATS token) replaced by ``***``."""
    def masked(match: "re.Match[str]") -> str:
        scheme, userinfo = match.group("scheme"), match.group("userinfo")
        user, colon, _password = userinfo.partition(":")
        if colon:
            return f"{scheme}{user}:***@"
        if scheme.lower().rstrip(":/") in NATS_SCHEMES and userinfo:
            return f"{scheme}***@"  # nats://TOKEN@host: the user part is a token
        return match.group(0)
    return _USERINFO.sub(masked, url)


def engine_of(url: str) -> str:
    """"nats" or "redis" for ``url``; ValueError for any other scheme."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in NATS_SCHEMES:
        return "nats"
    if scheme in REDIS_SCHEMES:
        return "redis"
    raise ValueError(f"backbone URL {mask_url(url)!r}: the scheme must be one of "
                     f"{', '.join(s + '://' for s in NATS_SCHEMES + REDIS_SCHEMES)}")


def check_name(name: str) -> str:
    """The event space's name: letters, digits, ``_`` and ``-``, in dot-separated parts."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 100:
        raise ValueError(f"backbone name {name!r}: use letters, digits, '_' and '-' (parts may be "
                         "separated by single dots), at most 100 characters")
    return name


def open_backbone(urls: Sequence[str], name: str = DEFAULT_NAME, routing: bool = True,
                  key: Optional[str] = None) -> "Backbone":
    """A :class:`Backbone` for ``urls`` (several NATS URLs are the seed servers of one
    cluster; Redis takes one URL) and the event space ``name``; not yet connected: call
    :meth:`Backbone.start`. ``routing=False`` makes it take every event of the space (for
    measurements); ``key`` signs and checks envelopes. Raises ValueError for bad URLs or names, and :class:`BackboneError`
    naming the extra to install when the engine's client library is missing."""
    urls = split_urls(urls)
    if not urls:
        raise ValueError("no backbone URL given")
    check_name(name)
    engines = {engine_of(url) for url in urls}
    if len(engines) > 1:
        raise ValueError("backbone URLs must all be NATS (nats://, tls://) or all Redis (redis://, rediss://)")
    engine = engines.pop()
    for url in urls:
        parts = urlsplit(url)
        try:
            parts.port
        except ValueError as exc:
            raise ValueError(f"backbone URL {mask_url(url)!r}: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"backbone URL {mask_url(url)!r} names no host")
    if engine == "redis" and len(urls) > 1:
        raise ValueError("a Redis backbone takes one URL")
    library, extra = EXTRAS[engine]
    try:
        if engine == "nats":
            from .nats import NatsBackbone as cls
        else:
            from .redis import RedisBackbone as cls  # type: ignore[assignment]
    except ImportError as exc:
        raise BackboneError(f"the {engine.upper() if engine == 'nats' else 'Redis'} backbone needs {library}, "
                            f"which cannot be imported ({exc}): pip install \"eventservice[{extra}]\"") from None
    return cls(urls, name, routing, key)


def describe(exc: BaseException) -> str:
    """One line saying what ``exc`` was."""
    text = " ".join(str(exc).split())
    if not text or text in ("None",):
        return type(exc).__name__
    return text


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
        self._secrets = _secrets_of(self.urls)
        self._deliver: Optional[Deliver] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._inbound_thread: Optional[threading.Thread] = None
        self._inbound_queue: "queue.Queue[Optional[bytes]]" = queue.Queue(MAX_INBOUND_MESSAGES)
        self._lock = threading.Lock()
        self._out: List[List[Item]] = []  # batches waiting for the loop, guarded by _lock
        self._out_count = 0
        self._out_scheduled = False
        self._out_event: Optional[asyncio.Event] = None
        self._interest: Tuple[FrozenSet[str], bool] = (frozenset(), False)
        self._interest_scheduled = False
        self._wanted_cache: Optional[Tuple[Any, FrozenSet[str]]] = None
        self._interest_task: Optional[asyncio.Task] = None
        self._pump_task: Optional[asyncio.Task] = None
        self._channels: Dict[str, str] = {}  # subject as spelled -> engine subject
        self._seq = 0
        self._last_seq: Dict[str, int] = {}  # origin -> last seq taken (inbound thread only)
        self._up = False  # connected: forward() queues; else it counts the events as failed
        self._closing = False
        self.state = "new"
        self.where = ""  # the server connected to, masked
        self.last_error = ""
        self._down_since: Optional[float] = None
        self._failed_at_down = 0
        self._too_large_logged = False
        # counters
        self.sent = 0  # events handed to the engine
        self.received = 0  # events from other es delivered here
        self.failed = 0  # events that could not be forwarded
        self.reconnects = 0
        self.outages = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.duplicates = 0  # engine messages dropped as already taken
        self.inbound_dropped = 0  # engine messages dropped because local delivery lagged
        self.invalid = 0  # engine messages that could not be decoded
        self.forged = 0  # engine messages without the right signature (with a key)

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

    def forward(self, items: List[Item]) -> None:
        """Send events accepted here to the other ``es`` of the space. Never blocks."""
        n = len(items)
        if not n:
            return
        with self._lock:
            if not self._up or self._out_count + n > MAX_PENDING_EVENTS:
                self.failed += n
                return
            self._out.append(items)
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
            "messages_sent": self.messages_sent, "messages_received": self.messages_received,
            "duplicates": self.duplicates, "inbound_dropped": self.inbound_dropped, "invalid": self.invalid,
            "forged": self.forged, "signed": self._key is not None,
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
        messages = self._pack(batches)
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
    def _pack(self, batches: List[List[Item]]) -> List[Tuple[str, bytes, int]]:
        """Engine messages for ``batches``, in order: consecutive events on one subject
        share a message."""
        messages: List[Tuple[str, bytes, int]] = []
        channel_of = self.channel_of
        run: List[Item] = []
        run_channel = None
        for items in batches:
            for subject, group in groupby(items, _first):  # runs of one spelling, in C
                channel = channel_of(subject)
                if channel != run_channel:
                    if run:
                        self._pack_chunks(run_channel, run, messages)  # type: ignore[arg-type]
                    run_channel, run = channel, list(group)
                else:
                    run.extend(group)
        if run:
            self._pack_chunks(run_channel, run, messages)  # type: ignore[arg-type]
        return messages

    def _pack_chunks(self, channel: str, run: List[Item], out: List[Tuple[str, bytes, int]]) -> None:
        for start in range(0, len(run), MAX_EVENTS_PER_MESSAGE):
            self._pack_run(channel, run[start:start + MAX_EVENTS_PER_MESSAGE], out)

    def _pack_run(self, channel: str, run: List[Item], out: List[Tuple[str, bytes, int]]) -> None:
        self._seq += 1
        payload = self._encode(self._seq, run, alone=len(run) == 1)
        if payload is None and len(run) > 1:
            # msgpack cannot carry some message here: only events whose own message it cannot
            # carry travel in serpent (which turns bytes into dicts, as Pyro5 does)
            half = len(run) // 2
            self._pack_run(channel, run[:half], out)
            self._pack_run(channel, run[half:], out)
            return
        limit = self._max_payload()
        if payload is not None and (len(payload) <= min(TARGET_MESSAGE_BYTES, limit) or
                                    (len(run) == 1 and len(payload) <= limit)):
            out.append((channel, payload, len(run)))
            return
        if len(run) > 1:
            half = len(run) // 2
            self._pack_run(channel, run[:half], out)
            self._pack_run(channel, run[half:], out)
            return
        # one event that cannot travel: counted as failed by the caller (not in ``out``)
        if not self._too_large_logged:
            self._too_large_logged = True
            why = "its message cannot be encoded" if payload is None else \
                f"{len(payload)} bytes is more than the engine takes ({limit})"
            log.warning("backbone %s: an event on %r could not be forwarded: %s (logged once; counted as failed)",
                        self.url, run[0][0], why)

    def _encode(self, seq: int, run: List[Item], alone: bool = True) -> Optional[bytes]:
        """The engine message for ``run``: msgpack, else (for one event ``alone``) serpent;
        None when neither can."""
        if not alone and wire.pack(run) is None:
            return None
        return wire.pack_envelope(self.origin, seq, run, self._key)

    def _max_payload(self) -> int:
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
        while True:
            data = get()
            if data is None:
                return
            items = self._decode(data)
            # take what else is waiting: one delivery for many engine messages
            for _ in range(256):
                try:
                    data = get_nowait()
                except queue.Empty:
                    break
                if data is None:
                    self._hand_over(items)
                    return
                more = self._decode(data)
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

    def _decode(self, data: bytes) -> Optional[List[Item]]:
        try:
            origin, seq, _meta, items = wire.unpack_envelope(data, self._key)
        except wire.ForgedError as exc:
            self.forged += 1
            if self.forged == 1 or self.forged % 1000 == 0:
                log.warning("backbone %s: dropped %d forged message(s): %s", self.url, self.forged, exc)
            return None
        except Exception:
            self.invalid += 1
            return None
        if origin == self.origin:
            return None
        last = self._last_seq.get(origin)
        if last is not None and seq <= last:
            self.duplicates += 1
            return None
        if last is None and len(self._last_seq) >= 10_000:
            self._last_seq.clear()
        self._last_seq[origin] = seq
        self.messages_received += 1
        # the common case, checked by C loops: tuples of three, a few distinct subjects
        if set(map(type, items)) == {tuple} and set(map(len, items)) == {3} and \
                set(map(type, map(_third, items))) <= _TIMES and all(
                    type(subject) is str and subject and not _reserved(subject)
                    for subject in set(map(_first, items))):
            return items
        good: List[Item] = []
        for item in items:
            if type(item) in (tuple, list) and len(item) == 3 and type(item[0]) is str and item[0] \
                    and type(item[2]) in (float, int) and not _reserved(item[0]):
                good.append(item if type(item) is tuple else (item[0], item[1], item[2]))
            else:
                self.invalid += 1  # not an event, or on a subject only the service publishes on
        return good

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


_first = itemgetter(0)
_third = itemgetter(2)
_TIMES = {float, int}


def _reserved(subject: str) -> bool:
    return subject[:1] in "eE" and subject[:len(PRESENCE_PREFIX)].casefold() == PRESENCE_PREFIX


def _subject_hash(casefolded: str) -> str:
    return hashlib.blake2b(casefolded.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def _secrets_of(urls: Sequence[str]) -> List[str]:
    secrets: Set[str] = set()
    for url in urls:
        parts = urlsplit(url)
        if parts.password:
            secrets.update((parts.password, unquote(parts.password)))
        elif parts.username and parts.scheme.lower() in NATS_SCHEMES:
            secrets.update((parts.username, unquote(parts.username)))
    return sorted((s for s in secrets if s), key=len, reverse=True)
