"""Engine messages of the backbone: events packed into envelopes on the way out, and
envelopes checked and taken on the way in. No sockets, no threads: each side is used by one
thread of the :class:`~eventservice.backbone.base.Backbone` at a time.

On the way out (:class:`Packer`), consecutive events on one engine subject share a message,
split to stay under the engine's payload limit and :data:`TARGET_MESSAGE_BYTES`; each
message takes the next ``seq`` of this origin. Events published by a user of ``es --users``
carry the name in the envelope's ``meta`` (``{"user": NAME}``), so one message holds the
events of one user; a receiving ``es`` does not check publish rules again (the origin did),
and its own routes apply its own subscribe rules.

On the way in (:class:`Unpacker`), an envelope is dropped and counted when it is forged
(with a key: a missing or wrong signature, checked before anything is decoded), invalid
(it does not decode), this es's own, or a duplicate (its ``seq`` is not above the last one
taken from its origin: engines deliver one connection's messages in order). Events on the
reserved ``es.presence.`` subjects, or that are no ``(subject, msg, time)``, are dropped and
counted as invalid.
"""

from __future__ import annotations

import logging
from itertools import groupby
from operator import itemgetter
from typing import Callable, Dict, List, Optional, Tuple

from .. import wire
from ..config import PRESENCE_PREFIX

log = logging.getLogger("eventservice.backbone")

Item = wire.Item
Message = Tuple[str, bytes, int]  # (engine subject, payload, number of events)
Batch = Tuple[Optional[str], List[Item]]  # events published by one call, and its user (None: no users)

MAX_EVENTS_PER_MESSAGE = 1_000  # events in one engine message, at most
TARGET_MESSAGE_BYTES = 512 * 1024  # an engine message larger than this is split (if it has > 1 event)
MAX_ORIGINS = 10_000  # origins whose last seq is remembered before starting over

_first = itemgetter(0)
_third = itemgetter(2)
_TIMES = {float, int}


def reserved(subject: str) -> bool:
    """True for subjects only a service publishes on (``es.presence.*``)."""
    return subject[:1] in "eE" and subject[:len(PRESENCE_PREFIX)].casefold() == PRESENCE_PREFIX


class Packer:
    """Packs the events of one origin into engine messages (see the module)."""

    def __init__(self, origin: str, key: Optional[bytes], channel_of: Callable[[str], str],
                 max_payload: Callable[[], int], where: str = "") -> None:
        self.origin = origin
        self.key = key
        self.channel_of = channel_of
        self.max_payload = max_payload  # the engine's limit, asked at each message
        self.where = where  # the backbone, for the log
        self.seq = 0
        self._too_large_logged = False

    def pack(self, batches: List[Batch]) -> List[Message]:
        """Engine messages for ``batches``, in order. An event that cannot travel (too large
        for the engine, or a message neither msgpack nor serpent carries) is left out and
        logged once: the caller counts what is missing as failed."""
        messages: List[Message] = []
        channel_of = self.channel_of
        run: List[Item] = []
        run_key: Tuple[str, Optional[str]] = ("", None)
        for user, items in batches:
            for subject, group in groupby(items, _first):  # runs of one spelling, in C
                key = (channel_of(subject), user)
                if key != run_key:
                    if run:
                        self._pack_chunks(run_key, run, messages)
                    run_key, run = key, list(group)
                else:
                    run.extend(group)
        if run:
            self._pack_chunks(run_key, run, messages)
        return messages

    def _pack_chunks(self, key: Tuple[str, Optional[str]], run: List[Item], out: List[Message]) -> None:
        for start in range(0, len(run), MAX_EVENTS_PER_MESSAGE):
            self._pack_run(key, run[start:start + MAX_EVENTS_PER_MESSAGE], out)

    def _pack_run(self, key: Tuple[str, Optional[str]], run: List[Item], out: List[Message]) -> None:
        channel, user = key
        self.seq += 1
        payload = self._encode(self.seq, run, user)
        if payload is None and len(run) > 1:
            # msgpack cannot carry some message here: only events whose own message it cannot
            # carry travel in serpent (which turns bytes into dicts, as Pyro5 does)
            self._halves(key, run, out)
            return
        limit = self.max_payload()
        if payload is not None and (len(payload) <= min(TARGET_MESSAGE_BYTES, limit) or
                                    (len(run) == 1 and len(payload) <= limit)):
            out.append((channel, payload, len(run)))
            return
        if len(run) > 1:
            self._halves(key, run, out)
            return
        if not self._too_large_logged:
            self._too_large_logged = True
            why = "its message cannot be encoded" if payload is None else \
                f"{len(payload)} bytes is more than the engine takes ({limit})"
            log.warning("backbone %s: an event on %r could not be forwarded: %s (logged once; counted as failed)",
                        self.where, run[0][0], why)

    def _halves(self, key: Tuple[str, Optional[str]], run: List[Item], out: List[Message]) -> None:
        half = len(run) // 2
        self._pack_run(key, run[:half], out)
        self._pack_run(key, run[half:], out)

    def _encode(self, seq: int, run: List[Item], user: Optional[str]) -> Optional[bytes]:
        """The envelope of ``run`` (published by ``user``): msgpack, else (for one event
        alone) serpent; None when neither can (or, for several events, when msgpack cannot:
        they are split)."""
        if len(run) > 1 and wire.pack(run) is None:
            return None
        return wire.pack_envelope(self.origin, seq, run, self.key, meta={"user": user} if user else None)


class Unpacker:
    """Checks and takes the engine messages of other origins (see the module); keeps the
    counters of what it dropped."""

    def __init__(self, origin: str, key: Optional[bytes], where: str = "") -> None:
        self.origin = origin
        self.key = key
        self.where = where
        self._last_seq: Dict[str, int] = {}  # origin -> last seq taken
        self.messages_received = 0
        self.duplicates = 0  # engine messages dropped as already taken
        self.invalid = 0  # engine messages, or events in them, that could not be taken
        self.forged = 0  # engine messages without the right signature (with a key)

    def take(self, data: bytes) -> Optional[List[Item]]:
        """The events of one engine message, or None when it is dropped."""
        try:
            origin, seq, _meta, items = wire.unpack_envelope(data, self.key)
        except wire.ForgedError as exc:
            self.forged += 1
            if self.forged == 1 or self.forged % 1000 == 0:
                log.warning("backbone %s: dropped %d forged message(s): %s", self.where, self.forged, exc)
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
        if last is None and len(self._last_seq) >= MAX_ORIGINS:
            self._last_seq.clear()
        self._last_seq[origin] = seq
        self.messages_received += 1
        # the common case, checked by C loops: a few distinct subjects, numbers for times
        if set(map(type, map(_third, items))) <= _TIMES and all(
                type(subject) is str and subject and not reserved(subject) for subject in set(map(_first, items))):
            return items
        good: List[Item] = []
        for item in items:
            if type(item[0]) is str and item[0] and type(item[2]) in (float, int) and not reserved(item[0]):
                good.append(item)
            else:
                self.invalid += 1  # not an event, or on a subject only the service publishes on
        return good
