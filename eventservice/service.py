"""The remote object: the Event Service that publishers and subscribers call.

One instance serves every client (register it as an instance, not a class). It checks
input, asks the :class:`~eventservice.matching.SubscriptionIndex` who wants an event, and
hands the event to the :class:`~eventservice.delivery.Dispatcher`. Bad input raises
``TypeError``/``ValueError`` in the caller and changes nothing, all or nothing for a list.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from Pyro5.api import expose
from Pyro5.client import Proxy

from . import wire
from .config import VERSION
from .config import Settings
from .delivery import Dispatcher, Item
from .matching import SubscriptionIndex
from .patterns import compile_pattern

log = logging.getLogger(__name__)

Forwarder = Callable[[List[Item]], None]  # receives (subject, msg, time) tuples


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
        self.index = SubscriptionIndex(self.settings.max_subscriptions)
        self.dispatcher = Dispatcher(self.settings, self._subscriber_gone)
        self._changes = threading.Lock()  # serialises subscription changes
        self._counter_lock = threading.Lock()
        self.published = 0
        self.removed = 0

    # -- publishing --------------------------------------------------------------------------
    def publish(self, subjects: Any, message: Any) -> None:
        """Publish ``message`` on each subject (a str or a list/tuple of str); all the
        events get the same time. Returns once every event is queued for its subscribers."""
        self._accept([(self._subjects(subjects, "subject"), message)])

    def publishBatch(self, events: Any) -> int:
        """Publish many events in one call: ``events`` is a list of ``(subjects, message)``
        pairs, accepted in order, all or none. Returns how many events were accepted."""
        return self._accept(self._checked_batch(events))

    def publishPacked(self, data: Any) -> int:
        """Like :meth:`publishBatch`, with the list packed by :func:`eventservice.wire.pack`
        (how ``Publisher(batch=True)`` sends)."""
        return self._accept(self._checked_batch(wire.unpack(data)))

    def _checked_batch(self, events: Any) -> List[Tuple[List[str], Any]]:
        if not isinstance(events, (list, tuple)):
            raise TypeError("events must be a list of (subjects, message) pairs")
        checked = []
        for item in events:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise TypeError("each event must be a (subjects, message) pair")
            checked.append((self._subjects(item[0], "subject"), item[1]))
        return checked

    def _accept(self, items: Sequence[Tuple[List[str], Any]]) -> int:
        now = time.time()
        accepted: List[Item] = []
        for subjects, message in items:
            for subject in subjects:
                accepted.append((subject, message, now))
        self._hand_off(accepted)
        with self._counter_lock:
            self.published += len(accepted)
        if self.forward is not None and accepted:
            self.forward(accepted)
        return len(accepted)

    def _hand_off(self, events: Sequence[Item]) -> None:
        """Queue each event for every subscriber that wants it, in order."""
        match = self.index.match
        per_subscriber: Dict[str, List[Item]] = {}
        for event in events:
            for key in match(event[0]):
                queued = per_subscriber.get(key)
                if queued is None:
                    per_subscriber[key] = [event]
                else:
                    queued.append(event)
        post = self.dispatcher.post
        for key, queued in per_subscriber.items():
            post(key, queued)

    def deliver_remote(self, events: Sequence[Item]) -> None:
        """Hand events that entered from elsewhere (another host) to local subscribers.
        Not remote; they are not forwarded again."""
        self._hand_off(events)

    # -- subscribing -------------------------------------------------------------------------
    def subscribe(self, subjects: Any, subscriber: Any) -> None:
        """Subscribe ``subscriber`` (a Pyro5 proxy of an object exposing ``event(event)``)
        to exact subjects, case-insensitive."""
        names = self._subjects(subjects, "subject")
        key = self._key(subscriber)
        with self._changes:
            self._admit(key, subscriber)
            self._keep_or_drop(key, lambda: self.index.add_subjects(key, names))
        log.debug("%s subscribed to %s", key, names)

    def subscribeMatch(self, patterns: Any, subscriber: Any) -> None:
        """Subscribe ``subscriber`` to regex patterns (``re.IGNORECASE``, ``re.match``)."""
        compiled = [compile_pattern(p) for p in self._subjects(patterns, "pattern")]
        key = self._key(subscriber)
        with self._changes:
            self._admit(key, subscriber)
            self._keep_or_drop(key, lambda: self.index.add_patterns(key, compiled))
        log.debug("%s subscribed to patterns %s", key, [p.source for p in compiled])

    def unsubscribe(self, subjects: Any, subscriber: Any) -> None:
        """Remove exact subscriptions (case-insensitive) and pattern subscriptions given by
        the same strings. Unknown ones are ignored."""
        names = self._subjects(subjects, "subject or pattern")
        key = self._key(subscriber)
        with self._changes:
            self.index.remove(key, names)
            if not self.index.has(key):
                self.dispatcher.retire(key)
            self._interest_changed()

    def _admit(self, key: str, subscriber: Proxy) -> None:
        if not self.dispatcher.has(key) and len(self.dispatcher) >= self.settings.max_subscribers:
            raise ValueError(f"too many subscribers (limit {self.settings.max_subscribers})")
        self.dispatcher.ensure(key, subscriber)

    def _keep_or_drop(self, key: str, change: Callable[[], None]) -> None:
        try:
            change()
        finally:
            if not self.index.has(key):
                self.dispatcher.retire(key)
            self._interest_changed()

    def _interest_changed(self) -> None:
        if self.on_interest is not None:
            self.on_interest(*self.index.interest())

    def _subscriber_gone(self, key: str) -> None:
        with self._changes:
            had = self.index.remove_subscriber(key)
            self.dispatcher.discard(key)
            self._interest_changed()
        if had:
            with self._counter_lock:
                self.removed += 1
            log.warning("removed unreachable subscriber %s", key)

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
            result: Dict[str, Any] = {"published": self.published, "removed": self.removed}
        result.update(self.dispatcher.counters())
        result.update(self.index.counts())
        result.update({"id": self.instance_id, "version": VERSION, "started": self.started,
                       "overflow": self.settings.overflow, "queue_size": self.settings.queue_size})
        for name, section in self.stats_sections.items():
            result[name] = section()
        if per_subscriber:
            result["per_subscriber"] = self.dispatcher.per_subscriber()
        return result

    def close(self) -> None:
        """Stop delivering (not remote)."""
        self.dispatcher.close()

    # -- checks ------------------------------------------------------------------------------
    def _subjects(self, value: Any, what: str) -> List[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{what} must be a str or a list/tuple of str, not {type(value).__name__}")
        limit = self.settings.max_subject_length
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"{what} must be a str, not {type(item).__name__}")
            if not item and what == "subject":
                raise ValueError("subject must not be empty")
            if len(item) > limit:
                raise ValueError(f"{what} longer than {limit} characters")
        return list(items)

    @staticmethod
    def _key(subscriber: Any) -> str:
        if not isinstance(subscriber, Proxy):
            raise TypeError(f"subscriber must be a Pyro5 proxy (or exposed Pyro object), "
                            f"not {type(subscriber).__name__}")
        return str(subscriber._pyroUri)
