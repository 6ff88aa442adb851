"""Delivery: a bounded queue per subscriber, drained by a small shared pool of senders.

Order: each subscriber's queue is served by at most one sender at a time, in FIFO order,
so events reach a subscriber in the order they were posted. Senders drain a queue into
one two-way call per batch (the project's ``Subscriber`` exposes ``deliverEvents``; a
plain subscriber gets a Pyro5 batch of ``event()`` calls), then put the subscriber at the
back of the line, so a busy subscriber cannot starve the others.

Overflow: when a queue holds ``queue_size`` events, ``overflow="drop"`` drops the new
event for that subscriber and counts it; ``overflow="block"`` makes the posting thread
wait up to ``block_timeout`` seconds for room, then drop and count. Once a queue has
stayed full that long, further events for it are dropped at once until a sender takes
from it again, so a frozen subscriber costs a publisher one wait.

Failures: a subscriber that cannot be reached (refused, reset, closed, unknown object,
handshake refused) is reported to ``on_gone`` and its queue discarded (counted as
dropped). A call that times out (a frozen subscriber) drops that batch and counts it; the
subscriber keeps its queue and subscriptions, but before its next call it is sent a
heartbeat and removed if it does not answer that either (when heartbeats are on). An
exception raised by the subscriber's own ``event()`` counts as delivered and is logged.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any, Callable, Deque, Dict, Hashable, Iterator, List, Optional, Tuple

from Pyro5 import core, errors, protocol
from Pyro5.client import Proxy

from . import wire
from .config import FALLBACK_SERIALIZER, FAST_SERIALIZER, Settings
from .event import EVENT_CLASS_TAG, Event

# An event inside the service is a plain tuple (subject, msg, time): the form the
# project's Subscriber is sent, built once per event however many subscribers get it.
Item = Tuple[str, Any, float]

log = logging.getLogger(__name__)

BATCH_METHOD = "deliverEvents"  # exposed by eventservice.Subscriber: takes [(subject, msg, time), ...]
PACKED_METHOD = "deliverPacked"  # the same list packed by eventservice.wire
HEARTBEAT_METHOD = "heartbeat"  # exposed by eventservice.Subscriber: takes the service's instance id
INITIAL_BATCH = 16  # events in the first call to a subscriber, at most
FAST_CALL = 0.05  # seconds: a call this quick lets the batch grow
SLOW_CALL = 0.5  # seconds: a call this slow makes the batch shrink

# how a subscriber is called: found out on the first call
MODE_BATCH = "batch"  # deliverEvents(list of tuples)
MODE_EVENT = "event"  # event(Event), in a Pyro5 batch
MODE_DICT = "dict"  # event(dict), for clients that cannot decode an Event


class Mailbox:
    """The queue and connection of one subscriber. All fields are guarded by ``lock``."""

    def __init__(self, key: str, proxy: Proxy, settings: Settings) -> None:
        self.key = key
        self.uri = proxy._pyroUri
        self.serializer = proxy._pyroSerializer
        self.settings = settings
        self.events: Deque[Item] = collections.deque()
        self.lock = threading.Lock()
        self.not_full = threading.Condition(self.lock)
        self.scheduled = False  # in the ready line or being served
        self.stalled = False  # stayed full for block_timeout: drop at once until a delivery succeeds
        self.closed = False
        self.retiring = False  # no subscriptions left: goes away once its queue is empty
        self.mode: Optional[str] = None
        self.packs = False  # it takes packed batches (deliverPacked)
        self.marshals = proxy._pyroSerializer is None  # chose no serializer: called back in marshal
        self.batch_limit = INITIAL_BATCH  # events per call: grows while calls are quick, shrinks when slow
        self.proxy: Optional[Proxy] = None  # used only by the sender serving this mailbox
        self.last_contact = time.monotonic()  # of the last call it answered
        self.suspect = False  # its last call timed out: not live until it answers again
        self.ping_due = False  # a heartbeat is to be sent
        self.posted = 0
        self.delivered = 0
        self.dropped = 0

    def counters(self) -> Dict[str, Any]:
        with self.lock:
            return {"queued": len(self.events), "posted": self.posted, "delivered": self.delivered,
                    "dropped": self.dropped, "mode": self.mode}


class Dispatcher:
    """Owns the mailboxes and the senders. ``post`` is called by publishing threads.

    Liveness: with ``settings.heartbeat`` > 0, a subscriber that answered no call for that
    many seconds is sent a heartbeat (the project's Subscriber learns the service's id from
    it; for others it is a fresh connection and handshake), which it must answer within the
    same time, or it is removed like an unreachable one. ``on_gone(key, reason)`` is called
    for every subscriber found dead."""

    def __init__(self, settings: Settings, on_gone: Callable[[str, str], None], instance_id: str = "") -> None:
        self.settings = settings
        self.on_gone = on_gone
        self.instance_id = instance_id
        self._mailboxes: Dict[Hashable, Mailbox] = {}
        self._ready: "queue.SimpleQueue[Optional[Mailbox]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.delivered = 0
        self.dropped = 0
        self._senders = [threading.Thread(target=self._serve_forever, name=f"es-sender-{n}", daemon=True)
                         for n in range(settings.delivery_threads)]
        for sender in self._senders:
            sender.start()
        self._stopping = threading.Event()
        if settings.heartbeat > 0:
            threading.Thread(target=self._watch_liveness, name="es-liveness", daemon=True).start()

    # -- mailboxes ---------------------------------------------------------------------------
    def ensure(self, key: str, proxy: Proxy) -> None:
        """Give subscriber ``key`` a mailbox, if it has none."""
        with self._lock:
            mailbox = self._mailboxes.get(key)
            if mailbox is None:
                self._mailboxes[key] = Mailbox(key, proxy, self.settings)
            else:
                with mailbox.lock:
                    mailbox.retiring = False

    def has(self, key: Hashable) -> bool:
        return key in self._mailboxes

    def where(self, key: Hashable) -> Optional[Tuple[Any, Optional[str]]]:
        """(URI, serializer) of subscriber ``key``, or None."""
        mailbox = self._mailboxes.get(key)
        return None if mailbox is None else (mailbox.uri, mailbox.serializer)

    def is_live(self, key: Hashable) -> bool:
        """False for a subscriber that is frozen as far as we know: its queue stayed full,
        or its last call timed out."""
        mailbox = self._mailboxes.get(key)
        return mailbox is not None and not mailbox.stalled and not mailbox.suspect

    def retire(self, key: Hashable) -> None:
        """``key`` has no subscriptions left: its mailbox goes once what it holds is sent."""
        with self._lock:
            mailbox = self._mailboxes.get(key)
            if mailbox is None:
                return
            with mailbox.lock:
                mailbox.retiring = True
                busy = mailbox.scheduled
        if not busy:
            self._discard_retired(mailbox)

    def _discard_retired(self, mailbox: Mailbox) -> None:
        with self._lock:
            if self._mailboxes.get(mailbox.key) is not mailbox or not mailbox.retiring:
                return
            del self._mailboxes[mailbox.key]
        with mailbox.lock:
            mailbox.closed = True
        self._release(mailbox)

    def discard(self, key: Hashable) -> None:
        """Close the mailbox of ``key``; what it still held counts as dropped."""
        with self._lock:
            mailbox = self._mailboxes.pop(key, None)
        if mailbox is not None:
            with mailbox.lock:
                mailbox.closed = True
                lost = len(mailbox.events)
                mailbox.events.clear()
                mailbox.dropped += lost
                mailbox.not_full.notify_all()
            self._count(0, lost)

    def __len__(self) -> int:
        return len(self._mailboxes)

    # -- posting -----------------------------------------------------------------------------
    def post(self, key: Hashable, items: List[Item]) -> None:
        """Queue ``items``, in order, for subscriber ``key`` (an unknown key is skipped).
        May wait for room, as the overflow policy says."""
        mailbox = self._mailboxes.get(key)
        if mailbox is None:
            return
        settings = self.settings
        dropped = 0
        with mailbox.lock:
            if mailbox.closed:
                return
            mailbox.posted += len(items)
            events = mailbox.events
            if len(events) + len(items) <= settings.queue_size:
                events.extend(items)
            else:
                for item in items:
                    if len(events) >= settings.queue_size:
                        self._schedule(mailbox)  # only a sender makes room: it must know of this queue
                        room = settings.overflow == "block" and not mailbox.stalled and self._wait_for_room(mailbox)
                        if not room or mailbox.closed:
                            dropped += 1
                            continue
                    events.append(item)
                mailbox.dropped += dropped
            if events:
                self._schedule(mailbox)
        if dropped:
            self._count(0, dropped)

    def _schedule(self, mailbox: Mailbox) -> None:
        """Put ``mailbox`` (lock held, not empty) in the senders' line, unless it is there."""
        if not mailbox.scheduled:
            mailbox.scheduled = True
            self._ready.put(mailbox)

    def _wait_for_room(self, mailbox: Mailbox) -> bool:
        """Wait (lock held) until the queue has room; False if it stayed full."""
        deadline = time.monotonic() + self.settings.block_timeout
        while len(mailbox.events) >= self.settings.queue_size and not mailbox.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                mailbox.stalled = True
                log.warning("subscriber %s stayed full for %.1fs: dropping its events until it takes one",
                            mailbox.key, self.settings.block_timeout)
                return False
            mailbox.not_full.wait(remaining)
        return True

    # -- sending -----------------------------------------------------------------------------
    def _serve_forever(self) -> None:
        while True:
            mailbox = self._ready.get()
            if mailbox is None:
                return
            try:
                self._serve(mailbox)
            except Exception:  # a bug here must not kill the sender
                log.exception("delivery to %s failed unexpectedly", mailbox.key)
                with mailbox.lock:
                    mailbox.scheduled = False

    def _serve(self, mailbox: Mailbox) -> None:
        with mailbox.lock:
            count = min(len(mailbox.events), mailbox.batch_limit)
            batch = [mailbox.events.popleft() for _ in range(count)]
            mailbox.not_full.notify_all()
            # a heartbeat when due and idle, and before anything else once a call timed out
            ping = (mailbox.ping_due and not batch) or (mailbox.suspect and self.settings.heartbeat > 0)
            mailbox.ping_due = False
        if ping and not mailbox.closed:
            self._heartbeat(mailbox)
        if batch and mailbox.closed:  # removed meanwhile (by that heartbeat, say): these are lost
            self._count(0, len(batch))
        elif batch:
            started = time.monotonic()
            delivered, dropped = self._send(mailbox, batch)
            self._adapt(mailbox, time.monotonic() - started, len(batch))
            with mailbox.lock:
                mailbox.delivered += delivered
                mailbox.dropped += dropped
                if delivered:
                    mailbox.stalled = False  # it takes events again: publishers may wait for it again
            self._count(delivered, dropped)
        with mailbox.lock:
            if mailbox.events and not mailbox.closed:
                self._ready.put(mailbox)
                return
            mailbox.scheduled = False
            retired = mailbox.retiring
        if retired:
            self._discard_retired(mailbox)

    def _adapt(self, mailbox: Mailbox, seconds: float, sent: int) -> None:
        if seconds < FAST_CALL and sent >= mailbox.batch_limit:
            mailbox.batch_limit = min(mailbox.batch_limit * 2, self.settings.max_batch)
        elif seconds > SLOW_CALL and mailbox.batch_limit > 1:
            mailbox.batch_limit //= 2

    def _send(self, mailbox: Mailbox, batch: List[Item]) -> "tuple[int, int]":
        """Deliver ``batch``; returns (delivered, dropped)."""
        try:
            proxy = self._proxy(mailbox)
            delivered = self._call(mailbox, proxy, batch)
            mailbox.last_contact, mailbox.suspect = time.monotonic(), False
            return delivered, 0
        except errors.TimeoutError:
            log.warning("subscriber %s did not answer within %.1fs: %d events dropped",
                        mailbox.key, self.settings.delivery_timeout, len(batch))
            mailbox.suspect = True
            self._release(mailbox)
            return 0, len(batch)
        except (errors.CommunicationError, errors.DaemonError, errors.SecurityError, OSError) as exc:
            self._gone(mailbox, f"unreachable: {exc}")
            return 0, len(batch)
        except Exception as exc:
            if not hasattr(exc, "_pyroTraceback"):
                raise
            log.warning("subscriber %s refused %d events: %s", mailbox.key, len(batch), exc)
            return 0, len(batch)

    def _gone(self, mailbox: Mailbox, reason: str) -> None:
        log.info("subscriber %s is %s: removed", mailbox.key, reason)
        self._release(mailbox)
        self.on_gone(mailbox.key, reason)

    def _heartbeat(self, mailbox: Mailbox) -> None:
        """Check that an idle subscriber still answers; remove it if it does not."""
        try:
            proxy = self._proxy(mailbox, timeout=self.settings.heartbeat)
            if mailbox.mode == MODE_BATCH and HEARTBEAT_METHOD in proxy._pyroMethods:
                getattr(proxy, HEARTBEAT_METHOD)(self.instance_id)
            else:
                proxy._pyroRelease()
                proxy._pyroBind()
            mailbox.last_contact, mailbox.suspect = time.monotonic(), False
        except errors.TimeoutError:
            self._gone(mailbox, f"not answering (no answer to a heartbeat within {self.settings.heartbeat:g}s)")
        except (errors.PyroError, OSError) as exc:
            self._gone(mailbox, f"unreachable: {exc}")

    def _watch_liveness(self) -> None:
        interval = self.settings.heartbeat
        while not self._stopping.wait(interval / 2):
            now = time.monotonic()
            with self._lock:
                mailboxes = list(self._mailboxes.values())
            for mailbox in mailboxes:
                if now - mailbox.last_contact < interval:
                    continue
                with mailbox.lock:
                    if mailbox.scheduled or mailbox.closed:
                        continue
                    mailbox.ping_due = mailbox.scheduled = True
                    mailbox.last_contact = now  # one heartbeat per interval
                self._ready.put(mailbox)

    def _proxy(self, mailbox: Mailbox, timeout: Optional[float] = None) -> Proxy:
        """The mailbox's proxy, bound; calls on it time out after ``timeout`` seconds
        (default: the delivery timeout)."""
        proxy = mailbox.proxy
        if proxy is None:
            proxy = Proxy(mailbox.uri)
            proxy._pyroSerializer = mailbox.serializer
            proxy._pyroHandshake = self.settings.ident
            mailbox.proxy = proxy
        else:
            proxy._pyroClaimOwnership()
        proxy._pyroTimeout = timeout or self.settings.delivery_timeout or None
        if mailbox.mode is None:
            proxy._pyroBind()
            mailbox.mode = MODE_BATCH if BATCH_METHOD in proxy._pyroMethods else MODE_EVENT
            # packed bytes pay only where they cross as bytes (marshal), not as serpent's base64
            mailbox.packs = PACKED_METHOD in proxy._pyroMethods and mailbox.serializer == FAST_SERIALIZER
        return proxy

    def _release(self, mailbox: Mailbox) -> None:
        proxy, mailbox.proxy = mailbox.proxy, None
        if proxy is not None:
            try:
                proxy._pyroClaimOwnership()
                proxy._pyroRelease()
            except Exception:
                pass

    def _call(self, mailbox: Mailbox, proxy: Proxy, batch: List[Item]) -> int:
        """One call (or a few, after a subscriber's own error) carrying ``batch``."""
        if mailbox.mode == MODE_BATCH:
            for run, packed in _packed_runs(batch) if mailbox.packs else [(batch, None)]:
                if packed is not None:
                    getattr(proxy, PACKED_METHOD)(packed)
                    continue
                # messages marshal cannot carry: these as arguments, in serpent
                chosen, proxy._pyroSerializer = proxy._pyroSerializer, FALLBACK_SERIALIZER
                try:
                    getattr(proxy, BATCH_METHOD)(run)
                finally:
                    proxy._pyroSerializer = chosen
            return len(batch)
        pending = batch
        while pending:
            calls = [("event", (event,), {}) for event in self._event_args(mailbox, proxy, pending)]
            done = 0
            try:
                for _ in _invoke_batch(proxy, calls):
                    done += 1
                return len(batch)
            except Exception as exc:
                remote = hasattr(exc, "_pyroTraceback")
                if isinstance(exc, (ValueError, TypeError)) and not remote and mailbox.marshals:
                    # a message marshal cannot carry: serpent from now on
                    mailbox.marshals = False
                    proxy._pyroSerializer = mailbox.serializer
                elif isinstance(exc, errors.SerializeError) and mailbox.mode == MODE_EVENT \
                        and EVENT_CLASS_TAG in str(exc):
                    log.debug("subscriber %s cannot decode Event: sending dicts", mailbox.key)
                    mailbox.mode = MODE_DICT
                elif isinstance(exc, errors.SerializeError):
                    # it answered with something we cannot decode (its own exception type)
                    log.info("subscriber %s answered undecodably: %s", mailbox.key, exc)
                    return len(batch)
                elif remote and proxy._pyroSerializer == FAST_SERIALIZER and mailbox.marshals:
                    # event() raised, and Pyro5 could not marshal the batch's results (an
                    # exception among them): how far it got is unknown. Serpent from now on;
                    # events of this batch after the failing one may be lost.
                    log.warning("subscriber %s raised in event() (%s); events after it in a batch of %d "
                                "may be lost; calling it back in serpent from now on", mailbox.key, exc, len(pending))
                    mailbox.marshals = False
                    proxy._pyroSerializer = mailbox.serializer
                    return len(batch)
                elif remote and not isinstance(exc, (errors.DaemonError, errors.SecurityError)):
                    # the subscriber's event() raised on event number `done`: that one was
                    # delivered; the batch stopped there, so send the rest again
                    log.info("subscriber %s raised in event(): %s", mailbox.key, exc)
                    pending = pending[done + 1:]
                else:
                    raise
        return len(batch)

    @staticmethod
    def _event_args(mailbox: Mailbox, proxy: Proxy, pending: List[Item]) -> List[Any]:
        """The arguments of a plain subscriber's ``event()`` calls. A subscriber that did not
        choose a serializer for its callbacks is called in marshal, which it decodes several
        times faster than serpent; as marshal converts only top-level values, an Event then
        goes as its tagged dict, which Pyro5 turns back into an Event on the far side."""
        as_dict = mailbox.mode == MODE_DICT
        if mailbox.marshals:
            proxy._pyroSerializer = FAST_SERIALIZER
            if as_dict:
                return [{"subject": subject, "msg": msg, "time": when} for subject, msg, when in pending]
            return [{"__class__": EVENT_CLASS_TAG, "subject": subject, "msg": msg, "time": when}
                    for subject, msg, when in pending]
        if as_dict:
            return [{"subject": subject, "msg": msg, "time": when} for subject, msg, when in pending]
        return [Event(subject, msg, when) for subject, msg, when in pending]

    def _count(self, delivered: int, dropped: int) -> None:
        with self._lock:
            self.delivered += delivered
            self.dropped += dropped

    # -- questions and shutdown --------------------------------------------------------------
    def counters(self) -> Dict[str, int]:
        with self._lock:
            return {"delivered": self.delivered, "dropped": self.dropped}

    def per_subscriber(self) -> Dict[str, Dict[str, Any]]:
        with self._lock:
            mailboxes = list(self._mailboxes.values())
        return {str(m.key): m.counters() for m in mailboxes}

    def close(self, timeout: float = 2.0) -> None:
        """Stop the senders (queued events are not delivered)."""
        self._stopping.set()
        for _ in self._senders:
            self._ready.put(None)
        deadline = time.monotonic() + timeout
        for sender in self._senders:
            sender.join(max(0.0, deadline - time.monotonic()))


def _invoke_batch(proxy: Proxy, calls: List[Tuple[str, Tuple[Any, ...], Dict[str, Any]]]) -> Iterator[Any]:
    """What Pyro5's ``BatchProxy`` does (one message, the calls run in order, the first
    exception ends the batch), without its flaw: it passes no keyword dict, which Pyro5's
    marshal serializer cannot take."""
    for result in proxy._pyroInvoke("<batch>", calls, {}, protocol.FLAGS_BATCH):
        if isinstance(result, core._ExceptionWrapper):
            result.raiseIt()
        yield result


def _packed_runs(batch: List[Item]) -> List[Tuple[List[Item], Optional[bytes]]]:
    """``batch`` as consecutive runs, in order: (events, packed bytes) for events marshal
    can carry, (events, None) for the others, so that one odd message does not change how
    the rest of the batch travels."""
    packed = wire.pack(batch)
    if packed is not None:
        return [(batch, packed)]
    runs: List[Tuple[List[Item], bool]] = []
    for item in batch:
        fits = wire.pack([item]) is not None
        if runs and runs[-1][1] == fits:
            runs[-1][0].append(item)
        else:
            runs.append(([item], fits))
    return [(items, wire.pack(items) if fits else None) for items, fits in runs]
