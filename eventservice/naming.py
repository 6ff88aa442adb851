"""Finding, starting and keeping a registration in a Pyro5 name server."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Optional, Set, Tuple

from Pyro5 import config, errors
from Pyro5.client import Proxy
from Pyro5.core import NAMESERVER_NAME, URI, locate_ns
from Pyro5.nameserver import BroadcastServer, NameServerDaemon

from . import auth
from .auth import Authority
from .config import DEFAULT_HANDSHAKE_TIMEOUT, EVENTSERVICE_NAME
from .daemon import GuardMixin
from .errors import NameTakenError

log = logging.getLogger(__name__)

NS_TIMEOUT = 3.0  # seconds for one call to a name server
NS_MAX_MESSAGE_SIZE = 1 << 20  # bytes of one request to the embedded name server


def find_ns(host: Optional[str] = None, port: Optional[int] = None) -> Optional[Proxy]:
    """A proxy of the name server at ``host``/``port``; with no host, the usual Pyro5 way
    (``PYRO_NS_HOST``/``PYRO_NS_PORT``, then broadcast). None when none answers. Every
    step is bounded in time: a name server that accepts but never answers counts as none."""
    ns, stalled = _bind_ns(host or config.NS_HOST, port or config.NS_PORT)
    if ns is not None or host or stalled:
        return ns
    try:
        found = locate_ns("", port, broadcast=True)
    except (errors.PyroError, OSError):
        return None
    return _bind_ns(found._pyroUri.host, found._pyroUri.port)[0]


def _bind_ns(host: str, port: int) -> Tuple[Optional[Proxy], bool]:
    """(a bound proxy of the name server at host:port or None, whether it stalled)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    ns = Proxy(f"PYRO:{NAMESERVER_NAME}@{host}:{port}")
    ns._pyroTimeout = NS_TIMEOUT
    try:
        ns._pyroBind()
        return ns, False
    except errors.TimeoutError:
        return None, True
    except (errors.PyroError, OSError):
        return None, False


class GuardedNameServerDaemon(GuardMixin, NameServerDaemon):  # type: ignore[misc]
    """Pyro5's name server daemon behind the guards of :mod:`eventservice.daemon` (no marshal,
    a bounded handshake, idle connections closed when room runs short)."""

    def __init__(self, host: str, port: int) -> None:
        self._guard_init(Authority(None), DEFAULT_HANDSHAKE_TIMEOUT, NS_MAX_MESSAGE_SIZE, None)
        super().__init__(host, port)
        self._guard_listener()


def start_embedded_ns(host: str, port: int) -> Tuple[URI, Any]:
    """Start a name server in this process, served by a thread; returns (uri, daemon).
    Like Pyro5's ``start_ns``, with a broadcast responder unless it listens on loopback."""
    daemon = GuardedNameServerDaemon(host, port)
    uri = daemon.uriFor(daemon.nameserver)
    threading.Thread(target=daemon.requestLoop, name="es-nameserver", daemon=True).start()
    bound = daemon.sock.getsockname()[0]
    if not (bound.startswith("127.") or bound in ("localhost", "::1")):
        bcserver = BroadcastServer(daemon.uriFor(daemon.nameserver, nat=False),
                                   ipv6=daemon.sock.family == socket.AF_INET6)
        bcserver.runInThread()
        daemon._es_bcserver = bcserver
    return uri, daemon


def proves(uri: Any, ident: Optional[str]) -> Optional[bool]:
    """Whether the Event Service at ``uri`` proves it knows the passphrase ``ident``: True,
    False (it answers, and cannot: an impostor), or None (nothing answers there)."""
    proxy = auth.proxy(uri, ident, timeout=NS_TIMEOUT)
    try:
        proxy._pyroBind()
        return True
    except errors.SecurityError:
        return False
    except errors.CommunicationError as exc:
        return False if "rejected" in str(exc) else None
    except (errors.PyroError, OSError):
        return None
    finally:
        proxy._pyroRelease()


def service_answers(uri: Any, ident: Optional[str]) -> bool:
    """True if something answers at ``uri`` (a refused passphrase counts: it is alive)."""
    return proves(uri, ident) is not None


def _tell_replaced(old: Any, new: URI, ident: Optional[str]) -> None:
    """Tell the Event Service at ``old`` that ``new`` holds the name now, so it stops
    claiming it at once (best effort: it also finds out at its next check)."""
    proxy = auth.proxy(old, ident, timeout=NS_TIMEOUT)
    try:
        proxy.replacedBy(str(new))
    except (errors.PyroError, OSError, AttributeError) as exc:
        log.debug("could not tell %s it was replaced: %s", old, exc)
    finally:
        proxy._pyroRelease()


def lookup(ns: Proxy, name: str = EVENTSERVICE_NAME) -> Optional[URI]:
    """The URI registered under ``name``, or None."""
    try:
        return ns.lookup(name)
    except errors.NamingError:
        return None


def claim_name(ns: Proxy, uri: URI, ident: Optional[str], replace: bool, name: str = EVENTSERVICE_NAME) -> None:
    """Register ``uri`` under ``name``. Raises :class:`NameTakenError` when another
    service still answers under that name and ``replace`` is false."""
    current = lookup(ns, name)
    if current is not None and str(current) != str(uri):
        verdict = proves(current, ident)
        if ident is not None and verdict is False:
            log.warning("IMPOSTOR: %s was registered by %s, which cannot prove the passphrase: taking it over",
                        name, current)
        elif verdict is not None:
            if not replace:
                raise NameTakenError(f"{name} is already registered by a running Event Service at {current} "
                                     f"(es --replace, or replace=True in start_es, takes it over)", name, str(current))
            log.warning("taking over %s from %s", name, current)
            _tell_replaced(current, uri, ident)
        else:
            log.info("taking over %s from %s, which no longer answers", name, current)
        ns.register(name, uri, safe=False)  # replaces it in one step: no gap to slip into
        return
    ns.register(name, uri, safe=True)


def release_name(ns: Proxy, uri: URI, name: str = EVENTSERVICE_NAME) -> None:
    """Remove the registration of ``name`` if it still points to ``uri``."""
    if str(lookup(ns, name)) == str(uri):
        ns.remove(name)


class RegistrationKeeper(threading.Thread):
    """Keeps ``name`` pointing to ``uri`` for as long as the service runs. Every
    ``interval`` seconds it registers again where the name is missing (a name server that
    restarted, a registration someone removed). A foreign URI under the name is looked at:

    - nothing answers there: a dead registration, taken over;
    - with a passphrase: one that proves it is another Event Service that took
      the name over (``es --replace``): this keeper stops claiming; one that cannot prove it
      is an impostor: replaced at once, with a warning;
    - without a passphrase nothing tells an impostor from another ``es``: a warning, once
      per foreign URI, and the name is taken back as soon as it is missing.

    :meth:`replaced_by` (another ``es`` said it took over) also makes it stop claiming."""

    def __init__(self, uri: URI, ns_host: Optional[str], ns_port: Optional[int], interval: float,
                 name: str = EVENTSERVICE_NAME, passphrase: Optional[str] = None) -> None:
        super().__init__(name="es-registration", daemon=True)
        self.uri, self.ns_host, self.ns_port, self.interval, self.name = uri, ns_host, ns_port, interval, name
        self.passphrase = passphrase
        self.stopped = threading.Event()
        self.replaced = False
        self._warned: Set[str] = set()

    def replaced_by(self, uri: str) -> None:
        """Another Event Service took the name over: stop claiming it."""
        if uri != str(self.uri):
            log.warning("%s was taken over by %s: no longer claiming it", self.name, uri)
            self.replaced = True
            self.stopped.set()

    def run(self) -> None:
        while not self.stopped.wait(self.interval) and not self.replaced:
            ns = find_ns(self.ns_host, self.ns_port)
            if ns is None:
                continue
            try:
                self.check(ns)
            except (errors.PyroError, OSError) as exc:
                log.debug("registration check failed: %s", exc)
            finally:
                ns._pyroRelease()

    def check(self, ns: Proxy) -> None:
        """One look at the name server (see the class)."""
        current = lookup(ns, self.name)
        if current is None:
            ns.register(self.name, self.uri, safe=True)
            log.warning("the name server had no %s: registered again", self.name)
            return
        if str(current) == str(self.uri):
            return
        verdict = proves(current, self.passphrase)
        if verdict is None:
            ns.register(self.name, self.uri, safe=False)
            log.warning("%s pointed to %s, which does not answer: registered again", self.name, current)
        elif self.passphrase is not None and not verdict:
            ns.register(self.name, self.uri, safe=False)
            log.warning("IMPOSTOR: %s was registered by %s, which cannot prove the passphrase: took the name "
                        "back", self.name, current)
        elif self.passphrase is not None:
            self.replaced_by(str(current))
        elif str(current) not in self._warned:
            self._warned.add(str(current))
            log.warning("%s is registered by %s, not by this Event Service (%s); clients that look it up reach "
                      "that one. Without a passphrase nothing tells another es from an impostor: give es a "
                        "passphrase (-i) to have impostors replaced. Taking the name back when it is free.",
                        self.name, current, self.uri)

    def stop(self) -> None:
        self.stopped.set()
