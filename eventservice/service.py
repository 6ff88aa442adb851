"""The remote object: the Event Service that publishers and subscribers call.

One instance serves every client (register it as an instance, not a class). It checks
input, asks the :class:`~eventservice.matching.SubscriptionIndex` and the
:class:`~eventservice.routing.Router` who gets an event, and hands the event to the
:class:`~eventservice.delivery.Dispatcher`. Bad input raises
``TypeError``/``ValueError`` in the caller and changes nothing, all or nothing for a list.

Beyond Pyro 3's methods: work-queue groups and content filters on subscriptions,
request/reply, presence events on the reserved subjects ``es.presence.*`` (subscribers by
their URI and the name their client gave, publishers that asked to be announced: see
:mod:`eventservice.presence`), (in the dispatcher) liveness checks of idle subscribers, and
with a users file (:mod:`eventservice.permissions`) a check of every remote method against
the user of the calling connection. Only the methods marked ``@remote`` (Pyro5's
``expose``) are remote.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
import uuid
from itertools import chain
from typing import Any, Callable, Dict, FrozenSet, Hashable, List, Optional, Sequence, Tuple, TypeVar

from Pyro5.api import expose
from Pyro5.client import Proxy

from . import wire
from .activity import SubjectActivity
from .config import DEFAULT_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT, PRESENCE_PREFIX, VERSION, Settings
from .delivery import Dispatcher, Item, Queued
from .filters import compile_filter
from .matching import SubscriptionIndex
from .patterns import Pattern, compile_pattern
from .permissions import Gate
from .presence import Publishers, caller_name
from .replies import Responders
from .routing import PLAIN, Options, Router
from .users import User, UsersFileError, load_users

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])
remote: Callable[[_F], _F] = expose  # Pyro5's expose, typed: the methods clients may call

Forwarder = Callable[[List[Item], Optional[str]], None]  # receives (subject, msg, time) tuples and their user
MAX_GROUP_LENGTH = 128  # characters of a work-queue group name
MAX_SUBJECTS_LIMIT = 10_000  # subjects one call of subjects() may list
_PAIR_TYPES = frozenset((tuple, list))
_first = operator.itemgetter(0)
HAND_OFF_SLICE = 1000  # events queued for all their subscribers before the next ones

# presence subjects
SUBSCRIBER_JOINED = PRESENCE_PREFIX + "subscriber.joined"  # first subscription of a subscriber
SUBSCRIBER_CHANGED = PRESENCE_PREFIX + "subscriber.changed"  # it subscribed or unsubscribed more
SUBSCRIBER_LEFT = PRESENCE_PREFIX + "subscriber.left"  # it unsubscribed from everything
SUBSCRIBER_REMOVED = PRESENCE_PREFIX + "subscriber.removed"  # found dead or unreachable, or all revoked
SERVICE_STARTED = PRESENCE_PREFIX + "service.started"
SERVICE_STOPPED = PRESENCE_PREFIX + "service.stopped"


# EventService is longer than the ~250 lines a class gets here: it is the remote API, one
# method per remote call with its checks; matching, routing, delivery, replies, permissions
# and the backbone it hands to are modules of their own.
class EventService:
    """The Event Service. Remote methods keep the names of Pyro 3's Event Service. With a
    ``gate`` (of the users file ``settings.users``), each remote call is checked against
    the user of its connection."""

    def __init__(self, settings: Optional[Settings] = None, forward: Optional[Forwarder] = None,
                 gate: Optional[Gate] = None) -> None:
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
        self.gate = gate
        if self.gate is not None:
            self.index.admit = self.presence.admit = self.gate.admits
        self._changes = threading.Lock()  # serialises subscription changes
        self._counter_lock = threading.Lock()
        self.activity = SubjectActivity()  # events per subject published here (under the counter lock)
        self.published = 0
        self.requests = 0
        self.removed = 0

    # -- publishing --------------------------------------------------------------------------
    @remote
    def publish(self, subjects: Any, message: Any) -> int:
        """Publish ``message`` on each subject (a str or a list/tuple of str); all the
        events get the same time. Returns once every event is queued for its subscribers,
        with how many subscribers of this service it was handed to (like Redis ``PUBLISH``;
        subscribers of other ``es`` on a backbone are not counted)."""
        return self._accept([(self._publishable(subjects), message)])[1]

    @remote
    def publishBatch(self, events: Any) -> int:
        """Publish many events in one call: ``events`` is a list of ``(subjects, message)``
        pairs, accepted in order, all or none. Returns how many events were accepted."""
        return self._accept(self._checked_batch(events))[0]

    @remote
    def publishPacked(self, data: Any) -> int:
        """Like :meth:`publishBatch`, with the pairs packed by
        :func:`eventservice.wire.pack_publish` (how ``Publisher`` sends). ValueError or
        TypeError for bytes that are not such a batch, before anything is published."""
        return self._accept(self._checked_batch(wire.unpack_publish(data)))[0]

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
            checked.append((self._well_formed(item[0]), item[1]))
        if self.gate is not None:  # each distinct subject once
            self.gate.check_publish(set(chain.from_iterable(map(_first, checked))))
        return checked

    def _accept(self, items: Sequence[Tuple[Any, Any]]) -> Tuple[int, int]:
        """Stamp the events of checked (subjects, message) pairs with one time, hand them off
        and forward them; (events accepted, subscribers they were handed to)."""
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
        reached = self._hand_off(accepted, self.index)
        with self._counter_lock:
            self.published += len(accepted)
            self.activity.count(map(_first, accepted))
        if self.forward is not None and accepted:
            self.forward(accepted, self.gate.caller().name if self.gate is not None else None)
        return len(accepted), reached

    def _hand_off(self, events: Sequence[Item], index: SubscriptionIndex) -> int:
        """Queue each event for every subscriber that wants it, in order; returns to how
        many subscribers (a subscriber counted once per slice). A long run goes in slices,
        so all subscribers' queues fill side by side: posting may wait for room in one
        queue, and the others must not sit empty meanwhile."""
        if len(events) > HAND_OFF_SLICE:
            return sum(self._hand_off(events[start:start + HAND_OFF_SLICE], index)
                       for start in range(0, len(events), HAND_OFF_SLICE))
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
        return len(per_subscriber)

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
    @remote
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

    @remote
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
    @remote
    def subscribe(self, subjects: Any, subscriber: Any, group: Any = None, filter: Any = None) -> None:
        """Subscribe ``subscriber`` (a Pyro5 proxy of an object exposing ``event(event)``)
        to exact subjects, case-insensitive. With ``group``, the members of the group share
        the events (one member gets each); with ``filter`` (see :mod:`eventservice.filters`)
        only events whose message passes are sent. Subscribing again to a subject replaces
        its group and filter."""
        names = self._subjects(subjects, "subject")
        options = self._options(group, filter)
        key = self._key(subscriber)
        user = self.gate.check_subscribe(names) if self.gate is not None else None
        presence = [n for n in names if n.casefold().startswith(PRESENCE_PREFIX)]
        ordinary = [n for n in names if not n.casefold().startswith(PRESENCE_PREFIX)]
        def change() -> None:
            self.index.add_subjects(key, ordinary, options)
            self.presence.add_subjects(key, presence, options)
        self._change(key, subscriber, change, user, options.group)

    @remote
    def subscribeMatch(self, patterns: Any, subscriber: Any, group: Any = None, filter: Any = None) -> None:
        """Subscribe ``subscriber`` to regex patterns (``re.IGNORECASE``, ``re.match``), with
        ``group`` and ``filter`` as for :meth:`subscribe`. Presence events reach patterns that
        begin with the literal text ``es\\.presence\\.``. With users, it gets only the
        subjects its user may subscribe to."""
        sources = self._subjects(patterns, "pattern")
        compiled = [compile_pattern(p) for p in sources]
        options = self._options(group, filter)
        key = self._key(subscriber)
        user = self.gate.check_match(sources) if self.gate is not None else None
        presence = [p for p in compiled if _is_presence_pattern(p)]
        ordinary = self.index.prepare(p for p in compiled if not _is_presence_pattern(p))  # costly: no lock held
        def change() -> None:
            self.index.add_patterns(key, ordinary, options)
            self.presence.add_patterns(key, presence, options)
        self._change(key, subscriber, change, user, options.group)

    @remote
    def tap(self, subscriber: Any, pattern: Any = ".*") -> None:
        """Subscribe ``subscriber`` to every event whose subject matches ``pattern`` (a regex as
        for :meth:`subscribeMatch`), presence events included: what ``es tap`` shows (with
        users: an admin's call). ``unsubscribe(pattern, subscriber)`` ends it."""
        self._admin("tap")
        compiled = self._pattern_arg(pattern)
        key = self._key(subscriber)
        user = self.gate.caller() if self.gate is not None else None
        ordinary = self.index.prepare([compiled])

        def change() -> None:
            self.index.add_patterns(key, ordinary, PLAIN)
            self.presence.add_patterns(key, [compiled], PLAIN)
        self._change(key, subscriber, change, user)

    @remote
    def unsubscribe(self, subjects: Any, subscriber: Any) -> None:
        """Remove exact subscriptions (case-insensitive) and pattern subscriptions given by
        the same strings. Unknown ones are ignored. With users, only the subscriber's owner may."""
        names = self._subjects(subjects, "subject or pattern")
        key = self._key(subscriber)
        user = self.gate.caller() if self.gate is not None else None
        with self._changes:
            if not self._holds(key):
                return
            if self.gate is not None and user is not None:  # user is set whenever the gate is
                self.gate.check_owner(user, key, "unsubscribe")
            before, name = self._subscriptions_of(key), self.dispatcher.name_of(key)
            self.index.remove(key, names)
            self.presence.remove(key, names)
            announcement = self._after_change(key, had=True)
        if announcement is not None:  # "left" repeats what it held
            self._announce(announcement, key, subscriptions=before if announcement == SUBSCRIBER_LEFT else None,
                           user=user, name=name)

    def _change(self, key: str, subscriber: Proxy, change: Callable[[], Any], user: Optional[User] = None,
                group: Optional[str] = None) -> None:
        """Make ``change`` to ``key``'s subscriptions for ``user`` (with users: its owner)."""
        announcement = None
        try:
            with self._changes:
                had = self._holds(key)
                if not self.dispatcher.has(key) and len(self.dispatcher) >= self.settings.max_subscribers:
                    raise ValueError(f"too many subscribers (limit {self.settings.max_subscribers})")
                credentials = None
                if self.gate is not None and user is not None:
                    self.gate.claim(user, key, group)
                    credentials = self.gate.credentials(user.name)
                self.dispatcher.ensure(key, subscriber, credentials, caller_name())
                try:
                    self._within_limit(key, change)
                finally:
                    announcement = self._after_change(key, had)
        finally:
            if announcement is not None:
                self._announce(announcement, key, user=user)

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
            if self.gate is not None:
                self.gate.release(key)
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
        owner = None
        with self._changes:
            subscriptions, name = self._subscriptions_of(key), self.dispatcher.name_of(key)
            had = self.index.remove_subscriber(key) | self.presence.remove_subscriber(key)
            held = self.dispatcher.discard(key)
            self.responders.forget(key)
            if self.gate is not None:
                owner = self.gate.owner_of(key)
                self.gate.release(key)
            if self.on_interest is not None:
                self.on_interest(*self.index.interest())
        self.dispatcher.settle(held)  # its group events to other members, without the lock
        if had:
            with self._counter_lock:
                self.removed += 1
            log.warning("removed subscriber %s: %s", key, reason)
            self._announce(SUBSCRIBER_REMOVED, key, reason=reason, subscriptions=subscriptions, owner=owner,
                           name=name)

    # -- presence ----------------------------------------------------------------------------
    def _announce(self, subject: str, key: Optional[str] = None, reason: Optional[str] = None,
                  subscriptions: Optional[Dict[str, Any]] = None, user: Optional[User] = None,
                  owner: Optional[str] = None, name: Optional[str] = None) -> None:
        """Publish a presence event about the service, or the subscriber ``key`` (its name and
        subscriptions: now, or as given); with users, it names the subscriber's user
        (``owner``, or the name of ``user``)."""
        owner = owner or (user.name if user is not None else None)
        self._presence_event(subject, self._presence_fields(key, reason, subscriptions, owner, name))

    def _presence_fields(self, key: Optional[str], reason: Optional[str] = None,
                         subscriptions: Optional[Dict[str, Any]] = None, owner: Optional[str] = None,
                         name: Optional[str] = None) -> Dict[str, Any]:
        """What a presence event says of subscriber ``key`` (nothing for the service itself)."""
        fields: Dict[str, Any] = {}
        if key is not None:
            fields["subscriber"] = key
            fields["name"] = name or self.dispatcher.name_of(key)
            if self.gate is not None:
                fields["user"] = owner
            fields.update(subscriptions if subscriptions is not None else self._subscriptions_of(key))
        if reason is not None:
            fields["reason"] = reason
        return fields

    def _presence_event(self, subject: str, fields: Dict[str, Any]) -> None:
        """Publish a presence event with ``fields`` and the service's id (to presence
        subscribers only, never forwarded)."""
        self._hand_off([(subject, {"service": self.instance_id, **fields}, time.time())], self.presence)

    def _subscriptions_of(self, key: str) -> Dict[str, List[str]]:
        subjects, patterns = self.index.subscriptions_of(key)
        more_subjects, more_patterns = self.presence.subscriptions_of(key)
        return {"subjects": subjects + more_subjects, "patterns": sorted(set(patterns + more_patterns))}

    def announce_started(self) -> None:
        """Publish ``es.presence.service.started`` (not remote)."""
        self._announce(SERVICE_STARTED)

    def announce_stopped(self) -> None:
        """Publish ``es.presence.service.stopped`` (not remote)."""
        self._announce(SERVICE_STOPPED)

    # -- users -------------------------------------------------------------------------------
    @remote
    def reload(self) -> Dict[str, Any]:
        """Read the users file again (an admin's call, ``es reload``): see :meth:`reload_users`."""
        self._admin("reload")
        try:
            return self.reload_users()
        except UsersFileError as exc:
            raise ValueError(str(exc)) from None  # a built-in: every client decodes it

    def reload_users(self) -> Dict[str, Any]:
        """Read the users file again and apply it at once (not remote; SIGHUP calls it). A
        file that cannot be used raises ValueError naming the line and key, and the old
        rules stay. Subscriptions the new rules forbid are removed, and their subscribers
        told by a presence event (``changed``, or ``removed`` when nothing is left) with the
        reason and what was ``revoked``; other subscriptions and every counter stay.
        Returns ``{"users": N, "revoked": {subscriber: [subjects and patterns]}}``."""
        if self.gate is None:
            raise ValueError("this Event Service runs without a users file (es --users): nothing to reload")
        users = load_users(self.gate.users.path)

        def reason(owner: str) -> str:
            return f"users file {users.path} reloaded: user {owner!r} may no longer subscribe to what was revoked"
        told = []
        with self._changes:
            self.gate.users = users
            self.index.forget_routes()
            self.presence.forget_routes()
            for key, owner in self.gate.owned():
                revoked = self._revoke(key, self.gate.user(owner))
                if revoked:
                    subscriptions = dict(self._subscriptions_of(key), revoked=revoked)
                    subject = SUBSCRIBER_CHANGED if self._holds(key) else SUBSCRIBER_REMOVED
                    message = {"service": self.instance_id,
                               **self._presence_fields(key, reason(owner), subscriptions, owner)}
                    if key not in self.presence.route(subject).keys:  # else it hears the announcement
                        self.dispatcher.post(key, [(subject, message, time.time(), None, None)])
                    self._after_change(key, had=True)
                    told.append((subject, key, owner, subscriptions))
        for subject, key, owner, subscriptions in told:
            self._announce(subject, key, reason(owner), subscriptions, owner=owner)
        log.warning("users file %s reloaded: %d users; %d subscribers lost subscriptions the new rules forbid",
                    users.path, len(users), len(told))
        return {"users": len(users), "revoked": {key: subs["revoked"] for _, key, _, subs in told}}

    def _revoke(self, key: str, user: User) -> List[str]:
        """Remove what ``user`` may not subscribe to from ``key``'s subscriptions (lock
        held); returns it (exact subjects casefolded, pattern sources)."""
        held = self._subscriptions_of(key)
        if not user.subscribes_at_all:  # nothing is allowed: not a subject, not a pattern
            self.index.remove_subscriber(key)
            self.presence.remove_subscriber(key)
            return held["subjects"] + held["patterns"]
        revoked = [subject for subject in held["subjects"] if user.subscribe.refusal(subject) is not None]
        self.index.remove(key, revoked, patterns_too=False)
        self.presence.remove(key, revoked, patterns_too=False)
        return revoked

    def _admin(self, method: str) -> None:
        """With users: PermissionError unless the caller is an admin."""
        if self.gate is not None:
            self.gate.check_admin(method)

    # -- questions ---------------------------------------------------------------------------
    @remote
    def replacedBy(self, uri: str) -> None:
        """Called by an Event Service that took over this one's name: stop claiming it
        (with users: an admin's call)."""
        self._admin("replacedBy")
        if not isinstance(uri, str):
            raise TypeError("uri must be a str")
        if self.on_replaced is not None:
            self.on_replaced(uri)

    @remote
    def ping(self) -> str:
        """The id of this run of the service; a new one each start."""
        return self.instance_id

    @remote
    def subjects(self, pattern: Any = None, limit: Any = 100) -> List[Dict[str, Any]]:
        """The busiest subjects: those published here lately and those with exact subscribers,
        matching ``pattern`` (a regex as for :meth:`subscribeMatch`; None: all), at most
        ``limit`` of them, the most active first. Each is a dict: ``subject`` (as first
        spelled), ``subscribers`` (holding a subscription that matches it), ``events``
        (published here while it was remembered) and ``rate`` (events per second lately)."""
        wanted = None if pattern is None else self._pattern_arg(pattern)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        if not 0 < limit <= MAX_SUBJECTS_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_SUBJECTS_LIMIT}")
        with self._counter_lock:
            seen = self.activity.snapshot()
        found = {subject.casefold(): (rate, events, 0, subject) for subject, events, rate in seen}
        holders: Dict[str, int] = {}
        for key in self.index.subscribers():
            for subject in self.index.subscriptions_of(key)[0]:
                holders[subject] = holders.get(subject, 0) + 1
        for subject, count in holders.items():
            rate, events, _, spelling = found.get(subject, (0.0, 0, 0, subject))
            found[subject] = (rate, events, count, spelling)
        ranked = sorted((item for item in found.values() if wanted is None or wanted.match(item[3])),
                        key=lambda item: (-item[0], -item[1], -item[2], item[3]))[:limit]
        return [{"subject": spelling, "subscribers": len(self.index.match(spelling)), "events": events,
                 "rate": rate} for rate, events, _, spelling in ranked]

    @remote
    def stats(self, per_subscriber: bool = False) -> Dict[str, Any]:
        """Counters and sizes, as plain data (with users: an admin's call; refusals per user
        under ``denied``). With ``per_subscriber``, also ``per_subscriber``: for each
        subscriber URI its ``queued``, ``posted``, ``delivered``, ``dropped``, ``mode``,
        ``slow``, ``serializer``, ``subjects`` and ``patterns``."""
        self._admin("stats")
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
        if self.gate is not None:
            result["users"] = len(self.gate.users)
            result["denied"] = self.gate.denials.snapshot()
        if per_subscriber:
            result["per_subscriber"] = subscribers = self.dispatcher.per_subscriber()
            for key, counters in subscribers.items():
                counters.update(self._subscriptions_of(key))
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
        """``value``'s subjects, well formed and (with users) allowed to the caller."""
        subjects = self._well_formed(value)
        if self.gate is not None:
            self.gate.check_publish(subjects)
        return subjects

    def _well_formed(self, value: Any) -> List[str]:
        """``value``'s subjects: a str or a list/tuple of str, none of them reserved."""
        subjects = self._subjects(value, "subject")
        for subject in subjects:
            if subject[:1] in "eE" and subject[:len(PRESENCE_PREFIX)].casefold() == PRESENCE_PREFIX:
                raise ValueError(f"subjects starting with {PRESENCE_PREFIX!r} are reserved for the service")
        return subjects

    def _pattern_arg(self, pattern: Any) -> Pattern:
        """One pattern given as an argument, checked and compiled."""
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
        [source] = self._subjects(pattern, "pattern")
        return compile_pattern(source)

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
