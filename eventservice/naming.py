"""Finding, starting and keeping a registration in a Pyro5 name server."""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional, Tuple

from Pyro5 import config, errors
from Pyro5.client import Proxy
from Pyro5.core import NAMESERVER_NAME, URI, locate_ns
from Pyro5.nameserver import start_ns

from .config import EVENTSERVICE_NAME

log = logging.getLogger(__name__)

NS_TIMEOUT = 3.0  # seconds for one call to a name server


class NameTakenError(RuntimeError):
    """The name is registered by another Event Service that still answers."""


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


def start_embedded_ns(host: str, port: int) -> Tuple[URI, Any]:
    """Start a name server in this process, served by a thread; returns (uri, daemon)."""
    uri, daemon, bcserver = start_ns(host, port)
    threading.Thread(target=daemon.requestLoop, name="es-nameserver", daemon=True).start()
    if bcserver is not None:
        bcserver.runInThread()
        daemon._es_bcserver = bcserver
    return uri, daemon


def service_answers(uri: Any, ident: Optional[str]) -> bool:
    """True if an Event Service answers at ``uri`` (a refused passphrase counts: it is alive)."""
    proxy = Proxy(uri)
    proxy._pyroTimeout = NS_TIMEOUT
    proxy._pyroHandshake = ident
    try:
        proxy._pyroBind()
        return True
    except errors.TimeoutError:
        return False
    except errors.CommunicationError as exc:
        return "handshake" in str(exc) or "passphrase" in str(exc)
    except (errors.PyroError, OSError):
        return False
    finally:
        proxy._pyroRelease()


def _tell_replaced(old: Any, new: URI, ident: Optional[str]) -> None:
    """Tell the Event Service at ``old`` that ``new`` holds the name now, so it stops
    claiming it at once (best effort: it also finds out at its next check)."""
    proxy = Proxy(old)
    proxy._pyroTimeout = NS_TIMEOUT
    proxy._pyroHandshake = ident
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
        if service_answers(current, ident):
            if not replace:
                raise NameTakenError(f"{name} is already registered by a running Event Service at {current} "
                                     f"(use --replace to take it over)")
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
    """Checks every ``interval`` seconds that ``name`` still points to ``uri`` and
    registers it again where the name is missing (a name server that restarted). When
    another URI holds the name, this service was replaced: the keeper stops claiming."""

    def __init__(self, uri: URI, ns_host: Optional[str], ns_port: Optional[int], interval: float,
                 name: str = EVENTSERVICE_NAME) -> None:
        super().__init__(name="es-registration", daemon=True)
        self.uri, self.ns_host, self.ns_port, self.interval, self.name = uri, ns_host, ns_port, interval, name
        self.stopped = threading.Event()
        self.replaced = False

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
                current = lookup(ns, self.name)
                if current is None:
                    ns.register(self.name, self.uri, safe=True)
                    log.warning("name server had forgotten %s: registered again", self.name)
                elif str(current) != str(self.uri):
                    log.warning("%s is now registered by %s: no longer claiming it", self.name, current)
                    self.replaced = True
                    return
            except (errors.PyroError, OSError) as exc:
                log.debug("registration check failed: %s", exc)
            finally:
                ns._pyroRelease()

    def stop(self) -> None:
        self.stopped.set()
