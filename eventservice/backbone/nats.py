"""The NATS backbone (nats-py): ``nats://`` and ``tls://`` URLs, several of them the seed
servers of one cluster.

One connection carries both directions. It is made with ``no_echo`` (the server never sends
an ``es`` its own events), reconnects at once to another server of the cluster (the seeds and
the servers the cluster announces), and forever. Credentials in a URL (``user:password@`` or a
token ``token@``) are taken out of the server list and given as options, so they hold for
every server of the cluster, announced ones too. ``tls://`` verifies the server against the
system's CAs (``SSL_CERT_FILE`` names another CA bundle).

Order: NATS delivers the messages of one publishing connection to one subscribing connection
in order, across subjects. nats-py would reorder the messages of different subscriptions, so
the client here is :class:`eventservice._compat.nats.OrderedClient`, which hands every
message on this backbone's engine subjects to ``_inbound`` in the order it came off the
socket (that module says why no public API of nats-py can).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Dict, FrozenSet, List, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

import nats.errors

from .._compat.nats import OrderedClient
from . import Backbone, BackboneError, describe

log = logging.getLogger("eventservice.backbone")

RECONNECT_WAIT = 0.5  # seconds before trying a server again that just failed
CONNECT_TIMEOUT = 2.0  # seconds for one attempt to connect to one server
PING_INTERVAL = 5  # seconds between pings; 2 unanswered pings mean the server is gone
PENDING_SIZE = 8 * 1024 * 1024  # bytes nats-py may buffer (also while reconnecting)
RETIRE_AFTER = 2.0  # seconds a subscription no longer wanted is kept (see _apply_interest)


class NatsBackbone(Backbone):
    engine = "nats"

    def __init__(self, urls: List[str], name: str, routing: bool = True, key: Optional[str] = None) -> None:
        super().__init__(urls, name, routing, key)
        self._prefix = f"{name}.ev."  # of every engine subject of this space
        self.wildcard = self._prefix + ">"
        self._nc: Optional[OrderedClient] = None
        self._subs: Dict[str, Any] = {}  # engine subject -> nats Subscription
        self._retiring: Dict[str, Tuple[Any, float]] = {}  # no longer wanted: (subscription, when it ends)
        self._reaper: Optional["asyncio.Future[None]"] = None
        self._servers, self._auth = _servers_and_auth(urls)

    def _channel(self, digest: str) -> str:
        return self._prefix + digest

    def _max_payload(self) -> int:
        nc = self._nc
        return (nc.max_payload if nc is not None and nc.max_payload else 1024 * 1024) - 64

    async def _connect(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        refused: "asyncio.Future[BaseException]" = loop.create_future()
        nc = self._nc = OrderedClient(self._prefix, self._inbound)

        async def error_cb(exc: BaseException) -> None:
            self.last_error = self.scrub(describe(exc))
            if isinstance(exc, nats.errors.AuthorizationError) or "authorization" in str(exc).lower():
                if not refused.done():
                    refused.set_result(exc)
            log.debug("backbone %s: %s", self.url, self.last_error)

        async def disconnected_cb() -> None:
            self._went_down(self.last_error or "disconnected")

        async def reconnected_cb() -> None:
            self._came_back(self._server())

        tls: Optional[ssl.SSLContext] = None
        if any(urlsplit(u).scheme.lower() == "tls" for u in self._servers):
            tls = ssl.create_default_context()
        connect = asyncio.ensure_future(nc.connect(
            servers=self._servers, name=f"es {self.name} {self.origin[:8]}", error_cb=error_cb,
            disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb,
            allow_reconnect=True, max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]  # nats-py says int; it takes float seconds
            connect_timeout=min(CONNECT_TIMEOUT, timeout),  # type: ignore[arg-type]
            ping_interval=PING_INTERVAL, max_outstanding_pings=2,
            dont_randomize=True, no_echo=True, pending_size=PENDING_SIZE, tls=tls, **self._auth))
        done, _ = await asyncio.wait({connect, refused}, timeout=timeout,  # type: ignore[type-var]
                                     return_when=asyncio.FIRST_COMPLETED)
        if connect in done and connect.exception() is None:
            self.where = self._server()
            return
        reason = None
        if connect in done:
            reason = self.scrub(describe(connect.exception()))  # type: ignore[arg-type]
        connect.cancel()
        try:
            await asyncio.wait_for(nc.close(), 2)
        except BaseException:
            pass
        if refused.done():
            raise BackboneError(f"backbone {self.url}: the server refused the credentials "
                                f"({self.scrub(describe(refused.result()))})")
        reason = reason or self.last_error or "no answer"
        raise BackboneError(f"backbone {self.url}: cannot connect within {timeout:g} s ({reason})")

    def _server(self) -> str:
        nc = self._nc
        url = nc.connected_url if nc is not None else None
        if url is None:
            return ""
        host = url.netloc.rpartition("@")[2]
        return f"{url.scheme}://{host}"

    async def _send(self, messages: List[Tuple[str, bytes, int]]) -> Tuple[int, int]:
        nc = self._nc
        events = done = 0
        assert nc is not None
        for channel, payload, n in messages:
            try:
                await nc.publish(channel, payload)
            except nats.errors.MaxPayloadError:  # the server takes less than it said: skip this one
                continue
            except Exception as exc:
                log.debug("backbone %s: publishing failed: %s", self.url, self.scrub(describe(exc)))
                break
            events += n
            done += 1
        return events, done

    async def _apply_interest(self, wanted: FrozenSet[str]) -> None:
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        for channel in sorted(wanted - self._subs.keys()):
            retired = self._retiring.pop(channel, None)
            if retired is not None:  # still subscribed: wanted again
                self._subs[channel] = retired[0]
                continue
            self._subs[channel] = await nc.subscribe(channel)  # its messages go to _inbound
        # A subscription no longer wanted is kept a little: in a cluster, the servers learn
        # of a new subscription and of the end of an old one that covered the same events
        # (the whole space, or the subjects when a pattern comes) in no fixed order, and
        # an event could fall between them. Meanwhile events may come twice: duplicates
        # are dropped by their seq.
        deadline = asyncio.get_running_loop().time() + RETIRE_AFTER
        for channel in self._subs.keys() - wanted:
            self._retiring[channel] = (self._subs.pop(channel), deadline)
        if self._retiring and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.ensure_future(self._reap())
        if nc.is_connected:
            try:
                await nc.flush(timeout=2)  # the server answered: it has taken the changes
            except Exception:
                pass

    async def _reap(self) -> None:
        """Unsubscribe retired subscriptions once their time is up."""
        loop = asyncio.get_running_loop()
        while self._retiring:
            nc = self._nc
            if nc is None or nc.is_closed:
                return
            now = loop.time()
            due = [c for c, (_, deadline) in self._retiring.items() if deadline <= now]
            if not due:
                await asyncio.sleep(min(d for _, d in self._retiring.values()) - now)
                continue
            for channel in due:
                sub, _ = self._retiring.pop(channel)
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    log.debug("backbone %s: unsubscribe failed: %s", self.url, self.scrub(describe(exc)))

    async def _disconnect(self) -> None:
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        if nc.is_connected:
            try:
                await nc.flush(timeout=1)
            except Exception:
                pass
        await nc.close()


def _servers_and_auth(urls: List[str]) -> Tuple[List[str], Dict[str, Any]]:
    """The server URLs without credentials, and the credentials as nats-py options (taken
    from the first URL that has any)."""
    servers: List[str] = []
    auth: Dict[str, str] = {}
    for url in urls:
        parts = urlsplit(url)
        if parts.username is not None and not auth:
            if parts.password is not None:
                auth = {"user": unquote(parts.username), "password": unquote(parts.password)}
            else:
                auth = {"token": unquote(parts.username)}
        host = parts.netloc.rpartition("@")[2]
        servers.append(urlunsplit((parts.scheme.lower(), host, parts.path, parts.query, parts.fragment)))
    return servers, auth
