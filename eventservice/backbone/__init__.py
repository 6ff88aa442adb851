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

from typing import Optional, Sequence
from urllib.parse import urlsplit

from ..config import BACKBONE_URL_ENV as URL_ENV, DEFAULT_BACKBONE_NAME as DEFAULT_NAME, \
    DEFAULT_BACKBONE_TIMEOUT as DEFAULT_TIMEOUT
from ..errors import BackboneError
from .base import Backbone
from .messages import MAX_EVENTS_PER_MESSAGE
from .urls import check_name, describe, engine_of, mask_url, split_urls

__all__ = ["Backbone", "BackboneError", "DEFAULT_NAME", "DEFAULT_TIMEOUT", "MAX_EVENTS_PER_MESSAGE", "URL_ENV",
           "check_name", "describe", "engine_of", "mask_url", "open_backbone", "split_urls"]

EXTRAS = {"nats": ("nats-py", "nats"), "redis": ("redis-py", "redis")}  # engine -> (library, extra)


def open_backbone(urls: Sequence[str], name: str = DEFAULT_NAME, routing: bool = True,
                  key: Optional[str] = None) -> "Backbone":
    """A :class:`Backbone` for ``urls`` (several NATS URLs are the seed servers of one
    cluster; Redis takes one URL) and the event space ``name``; not yet connected: call
    :meth:`Backbone.start`. ``routing=False`` makes it take every event of the space (for
    measurements); ``key`` signs and checks envelopes. Raises ValueError for bad URLs or names,
    and :class:`BackboneError`
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
