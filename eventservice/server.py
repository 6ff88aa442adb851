"""Running an Event Service: ``start_es`` to embed one, ``start_es_loop`` to run one.

Wires the Pyro5 daemon, the service object, the name server (found, or started in this
process) and the registration keeper.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import threading
from typing import Any, Callable, Optional

import Pyro5
from Pyro5.core import URI

from .auth import Authority
from .config import DEFAULT_REGISTER_INTERVAL, EVENTSERVICE_NAME, Settings
from .daemon import GuardedDaemon
from .naming import (RegistrationKeeper, claim_name, find_ns, release_name, start_embedded_ns)
from .permissions import Gate
from .service import EventService
from .users import load_users

log = logging.getLogger(__name__)

RELEASE_DEADLINE = 3.0  # seconds closing may spend unregistering from the name server
MESSAGE_HEADROOM = 64 * 1024  # bytes beyond max_message_size a message may have (an event plus its envelope)


def is_loopback(host: str) -> bool:
    """True if ``host`` names only this machine ("" means every interface)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def configure_pyro(settings: Settings) -> None:
    """Set the process-wide Pyro5 configuration an Event Service needs."""
    Pyro5.config.THREADPOOL_SIZE = max(settings.max_connections, Pyro5.config.THREADPOOL_SIZE_MIN)
    # what this process reads from anyone (answers of subscribers included), and inflates to at
    # most; requests are limited by the daemon, at max_message_size exactly
    Pyro5.config.MAX_MESSAGE_SIZE = settings.max_message_size + MESSAGE_HEADROOM
    Pyro5.config.COMPRESSION = False
    Pyro5.config.SOCK_NODELAY = True
    Pyro5.config.SERVERTYPE = "thread"
    if settings.tls:
        # one SSL switch per process: the daemon serves TLS, and calls to subscribers and
        # the name server are TLS too, presenting the service's own certificate
        Pyro5.config.SSL = True
        Pyro5.config.SSL_SERVERCERT = settings.tls_cert
        Pyro5.config.SSL_SERVERKEY = settings.tls_key
        Pyro5.config.SSL_CLIENTCERT = settings.tls_cert
        Pyro5.config.SSL_CLIENTKEY = settings.tls_key
        Pyro5.config.SSL_CACERTS = settings.tls_ca or ""
        Pyro5.config.SSL_REQUIRECLIENTCERT = settings.tls_require_client_cert


class EventServiceServer:
    """A running Event Service: its daemon, service object and name server ties.

    ``loop()`` serves until ``stop()`` is called (from any thread or a signal handler);
    then the name is released, the daemon closed and delivery stopped.
    """

    backbone: Any = None  # the eventservice.backbone.Backbone joining other es, if any

    def __init__(self, daemon: GuardedDaemon, service: EventService, uri: URI,
                 ns_host: Optional[str], ns_port: Optional[int], ns_uri: Optional[URI],
                 embedded_ns: Any, keeper: Optional[RegistrationKeeper]) -> None:
        self.daemon, self.service, self.uri = daemon, service, uri
        self.ns_host, self.ns_port, self.ns_uri = ns_host, ns_port, ns_uri
        self.embedded_ns = embedded_ns
        self.keeper = keeper
        self._stopping = threading.Event()
        self._closed = False

    def loop(self) -> None:
        """Serve requests until :meth:`stop`; then clean up."""
        try:
            self.daemon.requestLoop(lambda: not self._stopping.is_set())
        finally:
            self.close()

    def reload(self) -> None:
        """Read the users file again (see :meth:`EventService.reload_users`); a file that
        cannot be used is logged, and the old rules stay."""
        try:
            self.service.reload_users()
        except ValueError as exc:
            log.error("users file refused, the old rules stay: %s", exc)

    def reload_on_sighup(self) -> None:
        """From now on SIGHUP makes this service read its users file again, in a thread of
        its own (call it from the main thread; where there is no SIGHUP, nothing)."""
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=self.reload, name="es-reload",
                                                                     daemon=True).start())

    def stop(self) -> None:
        """Ask ``loop()`` to return (safe in a signal handler)."""
        self._stopping.set()
        try:
            self.daemon.transportServer.wakeup()
        except Exception:
            pass

    def _release_name(self) -> None:
        ns = find_ns(self.ns_host, self.ns_port)
        if ns is not None:
            try:
                release_name(ns, self.uri)
            except Exception as exc:
                log.warning("could not unregister from the name server: %s", exc)
            finally:
                ns._pyroRelease()

    def close(self) -> None:
        """Release the name, stop the daemon, delivery and any embedded name server."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self.keeper is not None:
            self.keeper.stop()
            if not self.keeper.replaced and self.embedded_ns is None:
                releaser = threading.Thread(target=self._release_name, name="es-unregister", daemon=True)
                releaser.start()
                releaser.join(RELEASE_DEADLINE)
        self.service.announce_stopped()
        self.daemon.hang_up()  # so that closing the daemon does not wait for each client's thread
        self.daemon.close()
        if self.backbone is not None:
            self.backbone.close()
        self.service.close()
        if self.embedded_ns is not None:
            self.embedded_ns.close()


def start_es(host: str = "localhost", port: int = 0, *, settings: Optional[Settings] = None,
             use_ns: bool = True, ns_host: Optional[str] = None, ns_port: Optional[int] = None,
             replace: bool = False, register_interval: float = DEFAULT_REGISTER_INTERVAL,
             announce: Callable[[str], None] = log.info) -> EventServiceServer:
    """Create an Event Service listening on ``host``:``port`` and, unless ``use_ns`` is
    false, register it as ``Pyro.EventService``. When no name server answers, one is
    started in this process at ``ns_host``/``ns_port`` (default: Pyro5's NS_HOST/NS_PORT).
    Raises :class:`~eventservice.errors.NameTakenError` when a live service holds the
    name and ``replace`` is false. Call ``loop()`` on the result to serve.

    With ``settings.backbone`` (URLs of a NATS or Redis engine, see
    :mod:`eventservice.backbone`) the service joins the event space
    ``settings.backbone_name`` of other services; the engine must answer within
    ``settings.backbone_timeout`` seconds, before anything is served, or
    :class:`~eventservice.errors.BackboneError` is raised. ``settings.backbone_key`` signs
    this service's envelopes and makes it drop any that are not signed with the same key.

    With ``settings.users`` (a users file, see :mod:`eventservice.users`), every client logs
    in as one of its users and may do what its rules say; a file that cannot be used raises
    :class:`~eventservice.users.UsersFileError` (a ValueError naming the line and key)."""
    settings = settings or Settings()
    gate = Gate(load_users(settings.users)) if settings.users else None
    link = None
    if settings.backbone:
        from .backbone import open_backbone
        link = open_backbone(settings.backbone, settings.backbone_name, key=settings.backbone_key)  # fails at once
    configure_pyro(settings)
    daemon = GuardedDaemon(host=host, port=port, authority=Authority(settings.ident, settings.allow_clear_ident, gate),
                           handshake_timeout=settings.handshake_timeout, max_message_size=settings.max_message_size,
                           max_connections=settings.max_connections, client_certs=gate is not None and
                           bool(settings.tls_ca))
    service = EventService(settings, gate=gate)
    daemon.on_hello = service.publishers.changed
    try:
        if link is not None:
            link.start(service.deliver_remote, settings.backbone_timeout)
            service.forward = link.forward
            service.on_interest = link.set_interest
            service.stats_sections["backbone"] = link.stats
            link.set_interest(*service.index.interest())
            announce(f"backbone: joined the event space {settings.backbone_name!r} at {link.where or link.url}")
        if gate is not None:
            announce(f"users: {len(gate.users)} from {settings.users} (read again on SIGHUP or 'es reload')")
        uri = daemon.register(service, EVENTSERVICE_NAME)
        ns_uri = embedded_ns = keeper = None
        if use_ns:
            ns = find_ns(ns_host, ns_port)
            if ns is None:
                ns_uri, embedded_ns = start_embedded_ns(ns_host or Pyro5.config.NS_HOST,
                                                        ns_port or Pyro5.config.NS_PORT)
                announce(f"no name server answered: started a name server at {ns_uri}")
                ns = find_ns(ns_uri.host, ns_uri.port)
                if ns is None:
                    raise RuntimeError(f"the name server started at {ns_uri} does not answer")
            else:
                ns_uri = ns._pyroUri
            try:
                claim_name(ns, uri, settings.ident, replace)
            finally:
                ns._pyroRelease()
            keeper = RegistrationKeeper(uri, ns_uri.host, ns_uri.port, register_interval, passphrase=settings.ident)
            service.on_replaced = keeper.replaced_by
            keeper.start()
    except BaseException:
        if link is not None:
            link.close()
        daemon.close()
        service.close()
        raise
    service.announce_started()
    server = EventServiceServer(daemon, service, uri, ns_uri.host if ns_uri else None,
                                ns_uri.port if ns_uri else None, ns_uri, embedded_ns, keeper)
    server.backbone = link
    return server


def start_es_loop(host: str = "localhost", port: int = 0, **kwargs: Any) -> None:
    """Start an Event Service (see :func:`start_es`) and serve until SIGINT or SIGTERM;
    SIGHUP reads its users file again."""
    server = start_es(host, port, **kwargs)
    previous = {sig: signal.signal(sig, lambda *_: server.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.getsignal(signal.SIGHUP)
    server.reload_on_sighup()
    try:
        server.loop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
