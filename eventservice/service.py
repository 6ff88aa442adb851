"""The remote object: the Event Service that publishers and subscribers call.

One instance serves every client (register it as an instance, not a class). It checks
input, asks the :class:`~eventservice.matching.SubscriptionIndex` and the
:class:`~eventservice.routing.Router` who gets an event, and hands the event to the
:class:`~eventservice.delivery.Dispatcher`. Bad input raises
``TypeError``/``ValueError`` in the caller and changes nothing, all or nothing for a list.

Beyond Pyro 3's methods: work-queue groups and content filters on subscriptions,
request/reply, presence events on the reserved subjects ``es.presence.*`` (subscribers by
their URI and the name their client gave, publishers that asked to be announced: see
:mod:`eventservice.presence`), and (in the dispatcher) liveness checks of idle subscribers.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
import uuid
from typing import Any, Callable, Dict, FrozenSet, Hashable, List, Optional, Sequence, Tuple

from Pyro5.api import expose
from Pyro5.client import Proxy

from . import wire
from .config import DEFAULT_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT, PRESENCE_PREFIX, VERSION, Settings
from .delivery import Dispatcher, Item, Queued
from .filters import compile_filter
from .matching import SubscriptionIndex
from .patterns import Pattern, compile_pattern
from .presence import Publishers, caller_name
from .replies import Responders
from .routing import PLAIN, Options, Router

log = logging.getLogger(__name__)

Forwarder = Callable[[List[Item]], None]  # receives (subject, msg, time) tuples
MAX_GROUP_LENGTH = 128  # characters of a work-queue group name
_PAIR_TYPES = frozenset((tuple, list))
_first = operator.itemgetter(0)
HAND_OFF_SLICE = 1000  # events queued for all their subscribers before the next ones

# presence subjects
SUBSCRIBER_JOINED = PRESENCE_PREFIX + "subscriber.joined"  # first subscription of a subscriber
SUBSCRIBER_CHANGED = PRESENCE_PREFIX + "subscriber.changed"  # it subscribed or unsubscribed more
SUBSCRIBER_LEFT = PRESENCE_PREFIX + "subscriber.left"  # it unsubscribed from everything
SUBSCRIBER_REMOVED = PRESENCE_PREFIX + "subscriber.removed"  # found dead or unreachable
SERVICE_STARTED = PRESENCE_PREFIX + "service.started"
SERVICE_STOPPED = PRESENCE_PREFIX + "service.stopped"


# EventService is longer than the ~250 lines a class gets here: it is the remote API, one
# method per remote call with its checks; matching, routing, delivery, replies and the backbone
# it hands to are modules of their own.
@expose
class EventService:
    """The Event Service. Remote methods keep the names of Pyro 3's Event Service."""

    def __init__(self, settings: Optional[Settings] = None, forward: Optional[Forwarder] = None) -> None:
        self.settings = settings or Settings()
        self.forward = forward  # receives the events published here, e.g. for a backbone
        self.on_replaced: Optional[Callable[[str], None]] = None  # told when another service took the name
        # told (exact subjects casefolded, any patterns?) after every subscription change
        self.on_interest: Optional[Callable[[FrozenSet[str], bool], None]] = None
        # more sections of stats(), e.g. {"backbone": backbone.stats}
        self.stats_sections: Dict[str, Callable[[], Any]] = {}
        self.instance_id = uuid.uuid4().hex
        self.started = time.time()
        budgets = (self.settings.max_subscriptions, self.settings.max_pattern_cost, self.settings.max_filter_nodes)
        self.index = SubscriptionIndex(*budgets)
        self.presence = SubscriptionIndex(*budgets)  # es.presence.* only
        self.dispatcher = Dispatcher(self.settings, self._subscriber_gone, self.instance_id,
                                     on_closed=self._mailbox_closed, reroute=self._reroute)
        self.responders = Responders(self.settings, self.dispatcher.where, self.dispatcher.post)
        self.publishers = Publishers(self._presence_event)  # its changed() is the daemon's on_hello
        self.router = Router(self.dispatcher.is_live)
        self._changes = threading.Lock()  # serialises subscription changes
        self._counter_lock = threading.Lock()
        self.published = 0
        self.requests = 0
        self.removed = 0

    # -- publishing --------------------------------------------------------------------------
    def publish(self, subjects: Any, message: Any) -> None:
        """Publish ``message`` on each subject (a str or a list/tuple of str); all the
        events get the same time. Returns once every event is queued for its subscribers."""
        self._accept([(self._publishable(subjects), message)])

    def publishBatch(self, events: Any) -> int:
        """Publish many events in one call: ``events`` is a list of ``(subjects, message)``
        pairs, accepted in order, all or none. Returns how many events were accepted."""
        return self._accept(self._checked_batch(events))

    def publishPacked(self, data: Any) -> int:
        """Like :meth:`publishBatch`, with the pairs packed by
        :func:`eventservice.wire.pack_publish` (how ``Publisher`` sends). ValueError or
        TypeError for bytes that are not such a batch, before anything is published."""
        return self._accept(self._checked_batch(wire.unpack_publish(data)))

    def _checked_batch(self, events: Any) -> Sequence[Tuple[Any, Any]]:
        """``events`` checked: (subjects, message) pairs whose subjects are a str or a list
        of str. The common case (one str subject each) is checked by C loops over the batch."""
        if not isinstance(events, (list, tuple)):
            raise TypeError("events must be a list of (subjects, message) pairs")
        if not events:
            return ()
        if set(map(type, events)) <= _PAIR_TYPES and set(map(len, events)) == {2}:
            subjects = list(map(_first, events))
            if set(map(type, subjects)) == {str}:
                lengths = set(map(len, subjects))
                if min(lengths) > 0 and max(lengths) <= self.settings.max_subject_length:
                    self._publishable(list(set(subjects)))  # each distinct subject once
                    return events
        checked = []
        for item in events:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise TypeError("each event must be a (subjects, message) pair")
            checked.append((self._publishable(item[0]), item[1]))
        return checked

    def _accept(self, items: Sequence[Tuple[Any, Any]]) -> int:
        """Stamp the events of checked (subjects, message) pairs with one time, hand them off
        and forward them."""
        now = time.time()
        accepted: List[Item] = []
        if set(map(type, map(_first, items))) == {str}:  # one subject each: the common case
            accepted = [(subject, message, now) for subject, message in items]
        else:
            for subjects, message in items:
                if type(subjects) is str:
                    accepted.append((subjects, message, now))
                    continue
                for subject in subjects:
                    accepted.append((subject, message, now))
        self._hand_off(accepted, self.index)
        with self._counter_lock:
            self.published += len(accepted)
        if self.forward is not None and accepted:
            self.forward(accepted)
        return len(accepted)

    def _hand_off(self, events: Sequence[Item], index: SubscriptionIndex) -> None:
        """Queue each event for every subscriber that wants it, in order. A long run goes
        in slices, so all subscribers' queues fill side by side: posting may wait for room
        in one queue, and the others must not sit empty meanwhile."""
        if len(events) > HAND_OFF_SLICE:
            for start in range(0, len(events), HAND_OFF_SLICE):
                self._hand_off(events[start:start + HAND_OFF_SLICE], index)
            return
        route_of, targets, pack_event = index.route, self.router.targets, wire.pack_event
        per_subscriber: Dict[Hashable, List[Queued]] = {}
        for subject, msg, when in events:
            route = route_of(subject)
            picks: Optional[Dict[Hashable, str]] = {} if route.groups else None  # group members chosen
            keys = route.plain if route.simple else targets(route, msg, picks)
            if not keys:
                continue
            # packed once here when several subscribers take it, not once per subscriber later
            item: Queued = (subject, msg, when, pack_event(subject, msg, when) if len(keys) > 1 else None, None)
            for key in keys:
                mine = item if not picks or key not in picks else (*item[:4], picks[key])
                queued = per_subscriber.get(key)
                if queued is None:
                    per_subscriber[key] = [mine]
                else:
                    queued.append(mine)
        post = self.dispatcher.post
        for key, queued in per_subscriber.items():
            post(key, queued)

    def _reroute(self, items: List[Queued]) -> int:
        """Group events whose member went: each to another live member of its group (the
        gone one is out of the index by now); returns how many found one."""
        moved = 0
        for item in items:
            subject, msg, group = item[0], item[1], item[4]
            index = self.presence if subject.casefold().startswith(PRESENCE_PREFIX) else self.index
            key = self.router.pick(index.route(subject), group, msg) if group is not None else None
            if key is not None and self.dispatcher.has(key):
                self.dispatcher.post(key, [item])
                moved += 1
        return moved

    def deliver_remote(self, events: Sequence[Item]) -> None:
        """Hand events that entered from elsewhere (another host) to local subscribers.
        Not remote; they are not forwarded again."""
        self._hand_off(events, self.index)

    # -- request/reply -----------------------------------------------------------------------
    def request(self, subject: Any, message: Any = None, timeout: Any = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send a request on one subject and return the first answer of a responder (a
        subscriber exposing ``respond(event)``; None is an answer too); groups and filters
        choose who is asked. Subscribers of the subject that are no responders get it as an
        ordinary event. Raises ``TimeoutError`` naming the subject when no responder answers
        in time, and ``RuntimeError`` naming the responder's error and its text when it raised."""
        kind, value = self._ask(subject, message, timeout)
        if kind == wire.FAILED:
            raise RuntimeError(f"the responder to {subject!r} raised {value[0]}: {value[1]}")
        return value

    def requestPacked(self, data: Any) -> bytes:
        """:meth:`request` with subject, message and timeout packed by
        :func:`eventservice.wire.pack_request` (how the project's Publisher asks). Returns
        the reply packed by :func:`eventservice.wire.pack_reply`: the answer, or the
        responder's error as data. ValueError or TypeError for bytes that are no request."""
        try:
            request = wire.unpack_request(data)
        except wire.WireError as exc:
            raise ValueError(str(exc)) from None  # a built-in: every client can decode it
        return wire.pack_reply(*self._ask(*request))

    def _ask(self, subject: Any, message: Any, timeout: Any) -> wire.Reply:
        if not isinstance(subject, str):
            raise TypeError(f"subject must be a str, not {type(subject).__name__}")
        [subject] = self._publishable(subject)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError("timeout must be a number of seconds")
        if not 0 < timeout <= MAX_REQUEST_TIMEOUT:
            raise ValueError(f"timeout must be more than 0 and at most {MAX_REQUEST_TIMEOUT:g} seconds")
        now = time.time()
        with self._counter_lock:
            self.requests += 1
        targets = self.router.targets(self.index.route(subject), message)
        responders, others = self.responders.split(targets)
        post = self.dispatcher.post
        for key in others:
            post(key, [(subject, message, now, None, None)])
        return self.responders.ask(responders, (subject, message, now), timeout)

    # -- subscribing -------------------------------------------------------------------------
    def subscribe(self, subjects: Any, subscriber: Any, group: Any = None, filter: Any = None) -> None:
        """Subscribe ``subscriber`` (a Pyro5 proxy of an object exposing ``event(event)``)
        to exact subjects, case-insensitive. With ``group``, the members of the group share
        the events (one member gets each); with ``filter`` (see :mod:`eventservice.filters`)
        only events whose message passes are sent. Subscribing again to a subject replaces
        its group and filter."""
        names = self._subjects(subjects, "subject")
        options = self._options(group, filter)
        key = self._key(subscriber)
        presence = [n for n in names if n.casefold().startswith(PRESENCE_PREFIX)]
        ordinary = [n for n in names if not n.casefold().startswith(PRESENCE_PREFIX)]
        def change() -> None:
            self.index.add_subjects(key, ordinary, options)
            self.presence.add_subjects(key, presence, options)
        self._change(key, subscriber, change)

    def subscribeMatch(self, patterns: Any, subscriber: Any, group: Any = None, filter: Any = None) -> None:
        """Subscribe ``subscriber`` to regex patterns (``re.IGNORECASE``, ``re.match``), with
        ``group`` and ``filter`` as for :meth:`subscribe`. Presence events reach patterns that
        begin with the literal text ``es\\.presence\\.``."""
        compiled = [compile_pattern(p) for p in self._subjects(patterns, "pattern")]
        options = self._options(group, filter)
        key = self._key(subscriber)
        presence = [p for p in compiled if _is_presence_pattern(p)]
        ordinary = self.index.prepare(p for p in compiled if not _is_presence_pattern(p))  # costly: no lock held
        def change() -> None:
            self.index.add_patterns(key, ordinary, options)
            self.presence.add_patterns(key, presence, options)
        self._change(key, subscriber, change)

    def unsubscribe(self, subjects: Any, subscriber: Any) -> None:
        """Remove exact subscriptions (case-insensitive) and pattern subscriptions given by
        the same strings. Unknown ones are ignored."""
        names = self._subjects(subjects, "subject or pattern")
        key = self._key(subscriber)
        with self._changes:
            if not self._holds(key):
                return
            before, name = self._subscriptions_of(key), self.dispatcher.name_of(key)
            self.index.remove(key, names)
            self.presence.remove(key, names)
            announcement = self._after_change(key, had=True)
        if announcement is not None:  # "left" repeats what it held
            self._announce(announcement, key, subscriptions=before if announcement == SUBSCRIBER_LEFT else None,
                           name=name)

    def _change(self, key: str, subscriber: Proxy, change: Callable[[], Any]) -> None:
        announcement = None
        try:
            with self._changes:
                had = self._holds(key)
                if not self.dispatcher.has(key) and len(self.dispatcher) >= self.settings.max_subscribers:
                    raise ValueError(f"too many subscribers (limit {self.settings.max_subscribers})")
                self.dispatcher.ensure(key, subscriber, caller_name())
                try:
                    self._within_limit(key, change)
                finally:
                    announcement = self._after_change(key, had)
        finally:
            if announcement is not None:
                self._announce(announcement, key)

    def _within_limit(self, key: str, change: Callable[[], Any]) -> None:
        """Make ``change``; if the limit refuses part of it, undo the rest."""
        before = (self.index.subscriptions_of(key), self.presence.subscriptions_of(key))
        try:
            change()
        except ValueError:
            for index, (subjects, patterns) in ((self.index, before[0]), (self.presence, before[1])):
                now_subjects, now_patterns = index.subscriptions_of(key)
                index.remove(key, [s for s in now_subjects if s not in subjects] +
                             [p for p in now_patterns if p not in patterns])
            raise

    def _after_change(self, key: str, had: bool) -> Optional[str]:
        """Tidy up after a change of ``key``'s subscriptions (lock held); returns the
        presence subject to announce once the lock is released."""
        holds = self._holds(key)
        if not holds:
            self.dispatcher.retire(key)
        if self.on_interest is not None:
            self.on_interest(*self.index.interest())
        if not (holds or had):
            return None
        return SUBSCRIBER_CHANGED if had and holds else SUBSCRIBER_JOINED if holds else SUBSCRIBER_LEFT

    def _mailbox_closed(self, key: str) -> None:
        """The subscriber ``key`` went or unsubscribed everything: its request connections go too."""
        self.responders.forget(key)

    def _holds(self, key: str) -> bool:
        return self.index.has(key) or self.presence.has(key)

    def _subscriber_gone(self, key: str, reason: str) -> None:
        with self._changes:
            subscriptions, name = self._subscriptions_of(key), self.dispatcher.name_of(key)
            had = self.index.remove_subscriber(key) | self.presence.remove_subscriber(key)
            held = self.dispatcher.discard(key)
            self.responders.forget(key)
            if self.on_interest is not None:
                self.on_interest(*self.index.interest())
        self.dispatcher.settle(held)  # its group events to other members, without the lock
        if had:
            with self._counter_lock:
                self.removed += 1
            log.warning("removed subscriber %s: %s", key, reason)
            self._announce(SUBSCRIBER_REMOVED, key, reason=reason, subscriptions=subscriptions, name=name)

    # -- presence ----------------------------------------------------------------------------
    def _announce(self, subject: str, key: Optional[str] = None, reason: Optional[str] = None,
                  subscriptions: Optional[Dict[str, List[str]]] = None, name: Optional[str] = None) -> None:
        """Publish a presence event about the service, or the subscriber ``key`` (its name and
        subscriptions: now, or as given)."""
        message: Dict[str, Any] = {}
        if key is not None:
            message["subscriber"] = key
            message["name"] = name or self.dispatcher.name_of(key)
            message.update(subscriptions if subscriptions is not None else self._subscriptions_of(key))
        if reason is not None:
            message["reason"] = reason
        self._presence_event(subject, message)

    def _presence_event(self, subject: str, fields: Dict[str, Any]) -> None:
        """Publish a presence event with ``fields`` and the service's id (to presence
        subscribers only, never forwarded)."""
        self._hand_off([(subject, {"service": self.instance_id, **fields}, time.time())], self.presence)

    def _subscriptions_of(self, key: str) -> Dict[str, List[str]]:
        subjects, patterns = self.index.subscriptions_of(key)
        more_subjects, more_patterns = self.presence.subscriptions_of(key)
        return {"subjects": subjects + more_subjects, "patterns": patterns + more_patterns}

    def announce_started(self) -> None:
        """Publish ``es.presence.service.started`` (not remote)."""
        self._announce(SERVICE_STARTED)

    def announce_stopped(self) -> None:
        """Publish ``es.presence.service.stopped`` (not remote)."""
        self._announce(SERVICE_STOPPED)

    # -- questions ---------------------------------------------------------------------------
    def replacedBy(self, uri: str) -> None:
        """Called by an Event Service that took over this one's name: stop claiming it."""
        if not isinstance(uri, str):
            raise TypeError("uri must be a str")
        if self.on_replaced is not None:
            self.on_replaced(uri)

    def ping(self) -> str:
        """The id of this run of the service; a new one each start."""
        return self.instance_id

    def stats(self, per_subscriber: bool = False) -> Dict[str, Any]:
        """Counters and sizes, as plain data."""
        with self._counter_lock:
            result: Dict[str, Any] = {"published": self.published, "requests": self.requests,
                                      "removed": self.removed}
        result.update(self.dispatcher.counters())
        counts, more = self.index.counts(), self.presence.counts()
        with self._changes:
            counts["subscribers"] = len(self.index.subscribers() | self.presence.subscribers())
        counts["subject_subscriptions"] += more["subject_subscriptions"]
        counts["pattern_subscriptions"] += more["pattern_subscriptions"]
        result.update(counts)
        result.update({"id": self.instance_id, "version": VERSION, "started": self.started,
                       "overflow": self.settings.overflow, "queue_size": self.settings.queue_size,
                       "heartbeat": self.settings.heartbeat})
        for name, section in self.stats_sections.items():
            result[name] = section()
        if per_subscriber:
            result["per_subscriber"] = self.dispatcher.per_subscriber()
        return result

    def close(self) -> None:
        """Stop delivering (not remote)."""
        self.dispatcher.close()
        self.responders.close()

    # -- checks ------------------------------------------------------------------------------
    def _subjects(self, value: Any, what: str) -> List[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{what} must be a str or a list/tuple of str, not {type(value).__name__}")
        limit = self.settings.max_subject_length
        if all(type(item) is str and 0 < len(item) <= limit for item in items):
            return list(items)  # the common case, checked at once
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"{what} must be a str, not {type(item).__name__}")
            if not item and what == "subject":
                raise ValueError("subject must not be empty")
            if len(item) > limit:
                raise ValueError(f"{what} longer than {limit} characters")
        return list(items)

    def _publishable(self, value: Any) -> List[str]:
        subjects = self._subjects(value, "subject")
        for subject in subjects:
            if subject[:1] in "eE" and subject[:len(PRESENCE_PREFIX)].casefold() == PRESENCE_PREFIX:
                raise ValueError(f"subjects starting with {PRESENCE_PREFIX!r} are reserved for the service")
        return subjects

    @staticmethod
    def _options(group: Any, filter_spec: Any) -> Options:
        if group is not None:
            if not isinstance(group, str):
                raise TypeError(f"group must be a str, not {type(group).__name__}")
            if not group or len(group) > MAX_GROUP_LENGTH:
                raise ValueError(f"group must be 1 to {MAX_GROUP_LENGTH} characters")
        if group is None and filter_spec is None:
            return PLAIN
        return Options(group, None if filter_spec is None else compile_filter(filter_spec), filter_spec)

    @staticmethod
    def _key(subscriber: Any) -> str:
        if not isinstance(subscriber, Proxy):
            raise TypeError(f"subscriber must be a Pyro5 proxy (or exposed Pyro object), "
                            f"not {type(subscriber).__name__}")
        return str(subscriber._pyroUri)


PRESENCE_PATTERN_PREFIX = PRESENCE_PREFIX.replace(".", "\\.")  # the pattern text that matches the prefix


def _is_presence_pattern(pattern: Pattern) -> bool:
    r"""Patterns that begin with the literal text ``es\.presence\.`` (optionally after ``^``)
    reach presence events; no other pattern does."""
    return pattern.source.lstrip("^").casefold().startswith(PRESENCE_PATTERN_PREFIX)
