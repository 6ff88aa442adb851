"""Delivery: a bounded queue per subscriber, drained by the senders of :mod:`eventservice.lanes`.

Order: each subscriber's queue is served by at most one sender at a time, in FIFO order,
so events reach a subscriber in the order they were posted. A sender drains a queue into
one two-way call per batch (the project's ``Subscriber`` takes packed batches through
``deliverPacked``; a plain subscriber gets a Pyro5 batch of ``event()`` calls), then puts
the subscriber at the back of its lane's line, so a busy subscriber cannot starve others.

Slow subscribers: one whose call takes longer than a few tens of milliseconds is marked
slow and served from then on by the slow lane, whose few threads it shares with the other
slow ones; the fast lane keeps its threads for everybody else. With ``slow_policy
"remove"``, a slow subscriber whose queue stayed full for ``block_timeout`` is removed.

Overflow: when a queue holds ``queue_size`` events, ``overflow="drop"`` drops the new
event for that subscriber and counts it; ``overflow="block"`` makes the posting thread
wait up to ``block_timeout`` seconds for room, then drop and count. Once a queue has
stayed full that long, further events for it are dropped at once until a sender takes
from it again, so a frozen subscriber costs a publisher one wait.

Failures: a subscriber that cannot be reached (refused, reset, closed, unknown object,
handshake refused) is reported to ``on_gone`` and its queue discarded: the events it got as
a work-queue group's member go to another live member of the group (``reroute``), the
others are counted as dropped. One whose connection closes between calls (its process ended, even by a kill) is
found out within a second (:mod:`eventservice.hangups`): the service connects to a new
subscriber before its first event, and watches that connection while it is idle. A call
that times out (a frozen subscriber) drops that batch and counts it; the subscriber keeps
its queue and subscriptions, but before its next call it is sent a heartbeat and removed
if it does not answer that either (when heartbeats are on). An exception raised by the
subscriber's own ``event()`` counts as delivered and is logged.

Serializers: a subscriber is called back in the serializer its callback proxy names
(eventservice's ``Subscriber`` names msgpack and takes packed batches); one that named none
is called in serpent, Pyro5's default, which carries every value exactly. Marshal is
never used.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, Hashable, List, Optional, Tuple

from Pyro5 import errors
from Pyro5.api import BatchProxy
from Pyro5.client import Proxy

from . import auth, wire
from .config import FALLBACK_SERIALIZER, FAST_SERIALIZER, Settings
from .event import Event
from .hangups import CLOSED, QUIET, Hangups, peer_state
from .lanes import QUICK_CALLS_TO_RETURN, Lanes

Item = wire.Item  # an event inside the service: (subject, msg, time), built once per event
# an event in a subscriber's queue: the event; when several subscribers take it, its bytes
# packed once (wire.pack_event), shared by all their queues; the work-queue group it was given
# to this subscriber for, if any
Queued = Tuple[str, Any, float, Optional[bytes], Optional[str]]
Reroute = Callable[[List[Queued]], int]  # gives group events to other members; returns how many found one

log = logging.getLogger(__name__)

BATCH_METHOD = "deliverEvents"  # exposed by eventservice.Subscriber: takes [(subject, msg, time), ...]
PACKED_METHOD = "deliverPacked"  # the same list packed by eventservice.wire
HEARTBEAT_METHOD = "heartbeat"  # exposed by eventservice.Subscriber: takes the service's instance id
INITIAL_BATCH = 16  # events in the first call to a subscriber, at most
FIRST_CONTACT_TIMEOUT = 0.2  # seconds a new subscriber may take to accept the service's connection
HUNG_UP = "disconnected: it closed its connection to es (or its process ended)"
FAST_CALL = 0.05  # seconds: a call this quick lets the batch grow
SLOW_CALL = 0.5  # seconds: a call this slow makes the batch shrink
PACKED_BYTES = 4 * 1024 * 1024  # a packed batch larger than this is split (if it has more than one event)

# how a subscriber is called: found out on the first call
MODE_BATCH = "batch"  # deliverPacked(bytes) / deliverEvents(list of tuples)
MODE_EVENT = "event"  # event(Event), in a Pyro5 batch
MODE_DICT = "dict"  # event(dict), for clients that cannot decode an Event


class Mailbox:
    """The queue and connection of one subscriber. All fields are guarded by ``lock``.
    ``credentials``: what the service proves to the subscriber's daemon when it asks."""

    def __init__(self, key: str, proxy: Proxy, settings: Settings, credentials: auth.Credentials,
                 name: Optional[str] = None) -> None:
        self.key = key
        self.credentials = credentials
        self.name = name  # the name its client gave, if any
        self.uri = proxy._pyroUri
        self.serializer = proxy._pyroSerializer or FALLBACK_SERIALIZER  # its callback proxy's choice, or serpent
        self.settings = settings
        self.events: Deque[Queued] = collections.deque()
        self.lock = threading.Lock()
        self.not_full = threading.Condition(self.lock)
        self.scheduled = False  # in a line or being served
        self.stalled = False  # stayed full for block_timeout: drop at once until a delivery succeeds
        self.closed = False
        self.retiring = False  # no subscriptions left: goes away once its queue is empty
        self.slow = False  # served by the slow lane (see eventservice.lanes)
        self.removing = False  # being removed for being slow (slow_policy "remove")
        self.quick_calls = 0  # quick calls in a row while slow
        self.mode: Optional[str] = None
        self.packs = False  # it takes packed batches (deliverPacked)
        self.batch_limit = INITIAL_BATCH  # events per call: grows while calls are quick, shrinks when slow
        self.proxy: Optional[Proxy] = None  # used only by the sender serving this mailbox
        self.last_contact = time.monotonic()  # of the last call it answered
        self.suspect = False  # its last call timed out: not live until it answers again
        self.ping_due = False  # a heartbeat is to be sent
        self.watched = False  # its idle connection is watched for the subscriber closing it
        self.posted = 0
        self.delivered = 0
        self.dropped = 0

    def counters(self) -> Dict[str, Any]:
        with self.lock:
            return {"queued": len(self.events), "posted": self.posted, "delivered": self.delivered,
                    "dropped": self.dropped, "mode": self.mode, "slow": self.slow, "serializer": self.serializer,
                    "name": self.name}


# Dispatcher is longer than the ~250 lines a class gets here: posting, serving, calling and
# watching idle connections share the mailboxes' locks and states (scheduled, stalled,
# suspect, closed, watched) in ways that are easier to check in one place; the threads
# themselves are in lanes.py and hangups.py.
class Dispatcher:
    """Owns the mailboxes and the senders. ``post`` is called by publishing threads.

    Liveness: with ``settings.heartbeat`` > 0, a subscriber that answered no call for that
    many seconds is sent a heartbeat (the project's Subscriber learns the service's id from
    it; for others it is a fresh connection and handshake), which it must answer within the
    same time, or it is removed like an unreachable one. ``on_gone(key, reason)`` is called
    for every subscriber found dead (or slow, with ``slow_policy="remove"``)."""

    def __init__(self, settings: Settings, on_gone: Callable[[str, str], None], instance_id: str = "",
                 on_closed: Optional[Callable[[str], None]] = None, reroute: Optional[Reroute] = None) -> None:
        self.settings = settings
        self.on_gone = on_gone
        self.on_closed = on_closed  # told the key of every mailbox that goes (retired or discarded)
        self.reroute = reroute  # group events whose member is gone go to another member
        self.instance_id = instance_id
        self._mailboxes: Dict[Hashable, Mailbox] = {}
        self._lock = threading.Lock()
        self.delivered = 0
        self.dropped = 0
        self._stopping = threading.Event()
        self.lanes = Lanes(self._serve, settings.delivery_threads, settings.slow_threads)
        self.hangups = Hangups(self._hung_up, self._watch_idle)
        if settings.heartbeat > 0:
            threading.Thread(target=self._watch_liveness, name="es-liveness", daemon=True).start()

    # -- mailboxes ---------------------------------------------------------------------------
    def ensure(self, key: str, proxy: Proxy, credentials: Optional[auth.Credentials] = None,
               name: Optional[str] = None) -> None:
        """Give subscriber ``key`` a mailbox, if it has none; calls to it prove
        ``credentials`` when it asks (default: the service's passphrase); ``name`` is its
        client's, if given."""
        with self._lock:
            mailbox = self._mailboxes.get(key)
            if mailbox is None:
                mailbox = self._mailboxes[key] = Mailbox(key, proxy, self.settings,
                                                         credentials or auth.Credentials(self.settings.ident), name)
                with mailbox.lock:  # its first contact (then its connection is watched), by the slow
                    mailbox.scheduled = True  # lane: many new subscribers at once do not grow the fast one
                    self.lanes.schedule(mailbox, slow=True)
            else:
                with mailbox.lock:
                    mailbox.retiring = False
                    mailbox.name = name or mailbox.name

    def has(self, key: Hashable) -> bool:
        return key in self._mailboxes

    def name_of(self, key: Hashable) -> Optional[str]:
        """The name subscriber ``key``'s client gave, or None."""
        mailbox = self._mailboxes.get(key)
        return None if mailbox is None else mailbox.name

    def where(self, key: Hashable) -> Optional[Tuple[Any, Optional[str], auth.Credentials]]:
        """(URI, serializer, credentials) of subscriber ``key``, or None."""
        mailbox = self._mailboxes.get(key)
        return None if mailbox is None else (mailbox.uri, mailbox.serializer, mailbox.credentials)

    def is_live(self, key: Hashable) -> bool:
        """False for a subscriber that is frozen or slow as far as we know: its queue stayed
        full, its last call timed out, or its calls are slow."""
        mailbox = self._mailboxes.get(key)
        return mailbox is not None and not mailbox.stalled and not mailbox.suspect and not mailbox.slow

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
        self._closed(mailbox.key)

    def _closed(self, key: Hashable) -> None:
        if self.on_closed is not None:
            self.on_closed(key)  # type: ignore[arg-type]

    def discard(self, key: Hashable) -> List[Queued]:
        """Close the mailbox of ``key``; returns what it still held, for :meth:`settle`."""
        with self._lock:
            mailbox = self._mailboxes.pop(key, None)
        if mailbox is None:
            return []
        with mailbox.lock:
            mailbox.closed = True
            lost = list(mailbox.events)
            mailbox.events.clear()
            mailbox.not_full.notify_all()
            busy = mailbox.scheduled
        if not busy:
            self._release(mailbox)
        self._closed(key)
        return lost

    def settle(self, items: List[Queued]) -> None:
        """Events a gone subscriber held: group events go to another live member of their
        group; the others, and those whose group has no member left, count as dropped."""
        self._count(0, self._rehome(items))

    def _rehome(self, items: List[Queued]) -> int:
        """Give the group events among ``items`` to other members; returns how many of
        ``items`` are lost (not counted)."""
        orphans = [item for item in items if item[4] is not None]
        moved = self.reroute(orphans) if orphans and self.reroute is not None else 0
        return len(items) - moved

    def __len__(self) -> int:
        return len(self._mailboxes)

    # -- posting -----------------------------------------------------------------------------
    def post(self, key: Hashable, items: List[Queued]) -> None:
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
        if dropped and mailbox.slow and settings.slow_policy == "remove" and not mailbox.removing:
            mailbox.removing = True
            threading.Thread(target=self.on_gone, args=(key, "slow: its queue was full (es --slow-policy remove)"),
                             name="es-remove-slow", daemon=True).start()

    def _schedule(self, mailbox: Mailbox) -> None:
        """Put ``mailbox`` (lock held, not empty) in its lane's line, unless it is there."""
        if not mailbox.scheduled:
            mailbox.scheduled = True
            self._unwatch(mailbox)
            self.lanes.schedule(mailbox)

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
    def _serve(self, mailbox: Mailbox) -> None:
        """One turn of a sender at ``mailbox`` (called by the lanes)."""
        try:
            self._serve_turn(mailbox)
        except Exception:  # a bug here must not kill the sender, nor lose the mailbox
            log.exception("delivery to %s failed unexpectedly", mailbox.key)
            with mailbox.lock:
                mailbox.scheduled = False

    def _serve_turn(self, mailbox: Mailbox) -> None:
        with mailbox.lock:
            count = min(len(mailbox.events), mailbox.batch_limit)
            batch = [mailbox.events.popleft() for _ in range(count)]
            mailbox.not_full.notify_all()
            # a heartbeat when due and idle, and before anything else once a call timed out
            ping = (mailbox.ping_due and not batch) or (mailbox.suspect and self.settings.heartbeat > 0)
            mailbox.ping_due = False
        if ping and not mailbox.closed:
            self._heartbeat(mailbox)
        elif not batch and mailbox.mode is None and not mailbox.closed:
            self._first_contact(mailbox)
        if batch and mailbox.closed:  # removed meanwhile (by that heartbeat, say): these are lost
            self._count(0, self._rehome(batch))
        elif batch:
            started = time.monotonic()
            delivered, dropped = self._send(mailbox, batch)
            took = time.monotonic() - started
            self._adapt(mailbox, took, len(batch))
            with mailbox.lock:
                mailbox.delivered += delivered
                mailbox.dropped += dropped
                if delivered:
                    mailbox.stalled = False  # it takes events again: publishers may wait for it again
                if mailbox.slow:
                    mailbox.quick_calls = mailbox.quick_calls + 1 if took < self.lanes.threshold else 0
                    if mailbox.quick_calls >= QUICK_CALLS_TO_RETURN:
                        mailbox.slow, mailbox.quick_calls = False, 0
                        log.info("subscriber %s is quick again: back in the fast lane", mailbox.key)
            self._count(delivered, dropped)
        with mailbox.lock:
            if mailbox.events and not mailbox.closed:
                self.lanes.schedule(mailbox)
                return
            mailbox.scheduled = False
            retired = mailbox.retiring
            closed = mailbox.closed
        if retired:
            self._discard_retired(mailbox)
        elif closed:
            self._release(mailbox)

    def _adapt(self, mailbox: Mailbox, seconds: float, sent: int) -> None:
        if seconds < FAST_CALL and sent >= mailbox.batch_limit:
            mailbox.batch_limit = min(mailbox.batch_limit * 2, self.settings.max_batch)
        elif seconds > SLOW_CALL and mailbox.batch_limit > 1:
            mailbox.batch_limit //= 2

    def _send(self, mailbox: Mailbox, batch: List[Queued]) -> "tuple[int, int]":
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
            return 0, self._rehome(batch)
        except Exception as exc:
            if not hasattr(exc, "_pyroTraceback"):
                raise
            log.warning("subscriber %s refused %d events: %s", mailbox.key, len(batch), exc)
            return 0, len(batch)

    def _gone(self, mailbox: Mailbox, reason: str) -> None:
        log.info("subscriber %s is %s: removed", mailbox.key, reason)
        self.on_gone(mailbox.key, reason)
        self._release(mailbox)

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

    def _first_contact(self, mailbox: Mailbox) -> None:
        """Connect to a new subscriber before its first event, so that its connection is
        watched; one that does not accept it quickly (not listening yet) is left for its
        first event, one that cannot be reached is gone."""
        try:
            self._proxy(mailbox, timeout=FIRST_CONTACT_TIMEOUT)
        except errors.TimeoutError as exc:
            log.debug("no first contact with subscriber %s: %s", mailbox.key, exc)
            self._release(mailbox)
        except (errors.PyroError, OSError) as exc:
            self._gone(mailbox, f"unreachable: {exc}")

    # -- idle connections --------------------------------------------------------------------
    def _watch_idle(self) -> None:
        """Watch the connections of the subscribers idle now (in the hangups thread)."""
        with self._lock:
            mailboxes = list(self._mailboxes.values())
        for mailbox in mailboxes:
            if mailbox.watched or mailbox.scheduled or mailbox.closed or mailbox.proxy is None:
                continue  # a look without the lock: most are skipped here
            with mailbox.lock:
                if not (mailbox.watched or mailbox.scheduled or mailbox.closed):
                    self._watch(mailbox)

    def _watch(self, mailbox: Mailbox) -> None:
        """Watch the connection of ``mailbox`` (lock held, idle) for the subscriber closing it."""
        connection = mailbox.proxy._pyroConnection if mailbox.proxy is not None else None
        if connection is not None:
            mailbox.watched = True
            self.hangups.watch(mailbox, connection.sock)

    def _unwatch(self, mailbox: Mailbox) -> None:
        if mailbox.watched:
            mailbox.watched = False
            self.hangups.unwatch(mailbox)

    def _hung_up(self, mailbox: Mailbox) -> None:
        """The idle connection of ``mailbox`` became readable (see :mod:`eventservice.hangups`)."""
        with mailbox.lock:
            if not mailbox.watched or mailbox.scheduled or mailbox.closed or mailbox.proxy is None:
                return  # in use or gone meanwhile
            mailbox.watched = False
            connection = mailbox.proxy._pyroConnection
            state = peer_state(connection.sock) if connection is not None else CLOSED
            if state == QUIET:
                self._watch(mailbox)
                return
        if state == CLOSED:
            self._gone(mailbox, HUNG_UP)
        else:
            log.info("subscriber %s sent what nobody asked for: connecting anew", mailbox.key)
            self._release(mailbox)

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
                    self._unwatch(mailbox)
                    mailbox.last_contact = now  # one heartbeat per interval
                self.lanes.schedule(mailbox)

    def _proxy(self, mailbox: Mailbox, timeout: Optional[float] = None) -> Proxy:
        """The mailbox's proxy, bound; calls on it time out after ``timeout`` seconds
        (default: the delivery timeout). It proves the passphrase, or the password of the
        subscriber's user, if the subscriber asks."""
        proxy = mailbox.proxy
        if proxy is None:
            secret, user = mailbox.credentials
            proxy = auth.proxy(mailbox.uri, secret, serializer=mailbox.serializer, require=False, user=user)
            mailbox.proxy = proxy
        else:
            proxy._pyroClaimOwnership()
        proxy._pyroTimeout = timeout or self.settings.delivery_timeout or None
        if mailbox.mode is None:
            proxy._pyroBind()
            mailbox.mode = MODE_BATCH if BATCH_METHOD in proxy._pyroMethods else MODE_EVENT
            # packed bytes pay only where they cross as bytes (msgpack), not as serpent's base64
            mailbox.packs = PACKED_METHOD in proxy._pyroMethods and mailbox.serializer == FAST_SERIALIZER
        return proxy

    def _release(self, mailbox: Mailbox) -> None:
        self._unwatch(mailbox)
        proxy, mailbox.proxy = mailbox.proxy, None
        if proxy is not None:
            try:
                proxy._pyroClaimOwnership()
                proxy._pyroRelease()
            except Exception:
                pass

    def _call(self, mailbox: Mailbox, proxy: Proxy, batch: List[Queued]) -> int:
        """One call (or a few, after a subscriber's own error) carrying ``batch``."""
        if mailbox.mode == MODE_BATCH:
            for run, packed in _packed_runs(batch) if mailbox.packs else [(batch, None)]:
                if packed is not None:
                    getattr(proxy, PACKED_METHOD)(packed)
                    continue
                # messages msgpack cannot carry: these as arguments, in serpent
                chosen, proxy._pyroSerializer = proxy._pyroSerializer, FALLBACK_SERIALIZER
                try:
                    getattr(proxy, BATCH_METHOD)([item[:3] for item in run])
                finally:
                    proxy._pyroSerializer = chosen
            return len(batch)
        pending = batch
        while pending:
            calls = BatchProxy(proxy)
            for event in self._event_args(mailbox, pending):
                calls.event(event)
            done = 0
            try:
                for _ in calls():
                    done += 1
                return len(batch)
            except Exception as exc:
                remote = hasattr(exc, "_pyroTraceback")
                if isinstance(exc, errors.SerializeError) and mailbox.mode == MODE_EVENT \
                        and wire.EVENT_CLASS_TAG in str(exc):
                    log.debug("subscriber %s cannot decode Event: sending dicts", mailbox.key)
                    mailbox.mode = MODE_DICT
                elif isinstance(exc, (errors.SerializeError, TypeError, ValueError)) and not remote \
                        and proxy._pyroSerializer != FALLBACK_SERIALIZER:
                    # a message msgpack cannot carry: serpent for this subscriber from now on
                    proxy._pyroSerializer = mailbox.serializer = FALLBACK_SERIALIZER
                elif isinstance(exc, errors.SerializeError):
                    # it answered with something we cannot decode (its own exception type)
                    log.info("subscriber %s answered undecodably: %s", mailbox.key, exc)
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
    def _event_args(mailbox: Mailbox, pending: List[Queued]) -> List[Any]:
        """The arguments of a plain subscriber's ``event()`` calls."""
        if mailbox.mode == MODE_DICT:
            return [wire.event_dict(*item[:3]) for item in pending]
        return [Event(*item[:3]) for item in pending]

    def _count(self, delivered: int, dropped: int) -> None:
        with self._lock:
            self.delivered += delivered
            self.dropped += dropped

    # -- questions and shutdown --------------------------------------------------------------
    def counters(self) -> Dict[str, int]:
        with self._lock:
            mailboxes = list(self._mailboxes.values())
            result = {"delivered": self.delivered, "dropped": self.dropped}
        result["slow_subscribers"] = sum(1 for m in mailboxes if m.slow)
        return result

    def per_subscriber(self) -> Dict[str, Dict[str, Any]]:
        with self._lock:
            mailboxes = list(self._mailboxes.values())
        return {str(m.key): m.counters() for m in mailboxes}

    def close(self, timeout: float = 2.0) -> None:
        """Stop the senders (queued events are not delivered)."""
        self._stopping.set()
        self.hangups.close()
        self.lanes.close(timeout)


def _packed_runs(batch: List[Queued]) -> List[Tuple[List[Queued], Optional[bytes]]]:
    """``batch`` as consecutive runs, in order: (events, packed bytes) for events msgpack
    can carry, (events, None) for the others, so that one odd message does not change how
    the rest of the batch travels; a packed run over PACKED_BYTES is split. Events packed
    at hand-off are joined as they are."""
    parts = [item[3] for item in batch]
    packed = wire.pack_parts(parts) if None not in parts else wire.pack([item[:3] for item in batch])  # type: ignore[arg-type]
    if packed is not None:
        if len(packed) > PACKED_BYTES and len(batch) > 1:
            half = len(batch) // 2
            return _packed_runs(batch[:half]) + _packed_runs(batch[half:])
        return [(batch, packed)]
    runs: List[Tuple[List[Queued], bool]] = []
    for item in batch:
        fits = item[3] is not None or wire.pack([item[:3]]) is not None
        if runs and runs[-1][1] == fits:
            runs[-1][0].append(item)
        else:
            runs.append(([item], fits))
    out: List[Tuple[List[Queued], Optional[bytes]]] = []
    for items, fits in runs:
        out.extend(_packed_runs(items) if fits else [(items, None)])
    return out
