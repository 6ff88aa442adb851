"""The Redis backbone (redis-py's asyncio client, Redis pub/sub): ``redis://`` and
``rediss://`` (TLS) URLs, ``[:password@]host:port[/db]`` (pub/sub ignores the db).

Two connections: one publishes (a pipeline per round, so a burst is one round trip, in
order), one subscribes. The subscribing one also holds a channel of this ``es`` alone, so it
always reads and notices at once when the server goes away. redis-py's own retries are off:
the reader notices an outage, reconnects by itself every half second, subscribes again to
what the subscribers here want, and says when the engine is back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, FrozenSet, List, Optional, Set, Tuple

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import Backbone, BackboneError, describe

log = logging.getLogger("eventservice.backbone")

CONNECT_TIMEOUT = 2.0  # seconds for one attempt to connect
SEND_TIMEOUT = 5.0  # seconds one publishing round may take
RETRY_WAIT = 0.5  # seconds between attempts to reconnect
READ_WAIT = 0.25  # seconds the reader waits for a message before it looks at the interest again


class RedisBackbone(Backbone):
    engine = "redis"

    def __init__(self, urls: List[str], name: str, routing: bool = True, key: Optional[str] = None) -> None:
        super().__init__(urls, name, routing, key)
        self.wildcard = f"{name}:ev:*"
        self._client: Any = None
        self._pubsub: Any = None
        self._subscribed: Set[str] = set()  # channels and (the wildcard) patterns held now
        self._reader: "Optional[asyncio.Task[None]]" = None
        self._reset = False  # the publisher failed: the reader reconnects

    def _channel(self, digest: str) -> str:
        return f"{self.name}:ev:{digest}"

    def _max_payload(self) -> int:
        return 64 * 1024 * 1024

    def _new_client(self, timeout: float) -> Any:
        return aioredis.from_url(self.urls[0], socket_connect_timeout=min(CONNECT_TIMEOUT, timeout),
                                 socket_timeout=SEND_TIMEOUT, retry=Retry(NoBackoff(), 0),
                                 health_check_interval=0)

    async def _connect(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        reason = "no answer"
        while True:
            client = self._new_client(timeout)
            try:
                await asyncio.wait_for(client.ping(), max(0.1, deadline - asyncio.get_running_loop().time()))
                self._client = client
                await self._open_pubsub()
                break
            except (rex.AuthenticationError, rex.AuthorizationError, rex.NoPermissionError) as exc:
                await _close(client)
                raise BackboneError(f"backbone {self.url}: the server refused the credentials "
                                    f"({self.scrub(describe(exc))})") from None
            except rex.ResponseError as exc:
                await _close(client)
                if any(word in str(exc).upper() for word in ("AUTH", "WRONGPASS", "NOPERM")):
                    raise BackboneError(f"backbone {self.url}: the server refused the credentials "
                                        f"({self.scrub(describe(exc))})") from None
                reason = self.scrub(describe(exc))
            except (OSError, rex.RedisError, asyncio.TimeoutError) as exc:
                await _close(client)
                self._client = None
                reason = self.scrub(describe(exc)) or type(exc).__name__
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                self.last_error = reason
                raise BackboneError(f"backbone {self.url}: cannot connect within {timeout:g} s ({reason})")
            await asyncio.sleep(min(RETRY_WAIT, left))
        self.where = self._server()
        self._reader = asyncio.ensure_future(self._read())

    def _server(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs if self._client is not None else {}
        scheme = "rediss" if self.urls[0].lower().startswith("rediss") else "redis"
        return f"{scheme}://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    async def _open_pubsub(self) -> None:
        """A subscribing connection holding this es's own channel and what is wanted now."""
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(f"{self.name}:es:{self.origin}")
            self._subscribed = set()
            self._pubsub = pubsub
            await self._apply_interest(self._wanted())
        except BaseException:
            self._pubsub = None
            await _close(pubsub)
            raise

    async def _read(self) -> None:
        while True:
            if self._pubsub is None or self._reset:
                await self._reopen()
                continue
            wanted = self._wanted()
            try:
                if wanted != self._subscribed:
                    await self._apply_interest(wanted)
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_WAIT)
                if message is not None and message.get("type") in ("message", "pmessage"):
                    if message.get("channel", b"").startswith(self._event_prefix):
                        self._inbound(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._went_down(describe(exc))
                await self._drop_pubsub()

    @property
    def _event_prefix(self) -> bytes:
        return f"{self.name}:ev:".encode()

    async def _reopen(self) -> None:
        await self._drop_pubsub()
        self._reset = False
        try:
            # connections made before the outage would fail once more when first used
            await asyncio.wait_for(self._client.connection_pool.disconnect(), CONNECT_TIMEOUT)
            await asyncio.wait_for(self._client.ping(), CONNECT_TIMEOUT)
            await asyncio.wait_for(self._open_pubsub(), CONNECT_TIMEOUT + 1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._went_down(describe(exc))
            await self._drop_pubsub()
            await asyncio.sleep(RETRY_WAIT)
            return
        self._came_back(self._server())

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._subscribed = set()
        if pubsub is not None:
            await _close(pubsub)

    async def _send(self, messages: List[Tuple[str, bytes, int]]) -> Tuple[int, int]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, payload, _ in messages:
                    pipe.publish(channel, payload)
                await asyncio.wait_for(pipe.execute(), SEND_TIMEOUT)
            return sum(n for _, _, n in messages), len(messages)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._went_down(describe(exc))
            self._reset = True
            return 0, 0

    async def _apply_interest(self, wanted: FrozenSet[str]) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # subscribed when the reader reconnects
        new, old = wanted - self._subscribed, self._subscribed - wanted
        channels = sorted(c for c in new if c != self.wildcard)
        if self.wildcard in new:
            await pubsub.psubscribe(self.wildcard)
        if channels:
            await pubsub.subscribe(*channels)
        self._subscribed |= new
        gone = sorted(c for c in old if c != self.wildcard)
        if gone:
            await pubsub.unsubscribe(*gone)
        if self.wildcard in old:
            await pubsub.punsubscribe(self.wildcard)
        self._subscribed -= old

    async def _interest_changed(self) -> None:
        """Nothing: the reader looks at the interest between reads (one connection, one
        coroutine using it)."""

    async def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._drop_pubsub()
        if self._client is not None:
            await _close(self._client)


async def _close(thing: Any) -> None:
    try:
        closing = getattr(thing, "aclose", None) or thing.close
        await asyncio.wait_for(closing(), 1.0)
    except BaseException:
        pass
