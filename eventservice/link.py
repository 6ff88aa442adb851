"""The clients' one way to the Event Service: :class:`ServiceLink`, a proxy shared by
threads and made anew after a failure, and what goes with it (which errors mean "the
service is gone", how a connection callback is called, the check of subjects before
anything is sent).

When no Event Service can be reached, the link raises
:class:`~eventservice.errors.ServiceNotFoundError`, whose text says what to do next; when the
service refuses a call by its users' rules, :class:`~eventservice.errors.PermissionDenied`.
"""

from __future__ import annotations

import logging
import select
import ssl
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from Pyro5 import config as pyro_config
from Pyro5 import errors
from Pyro5.client import Proxy

from . import auth
from .config import DEFAULT_CLIENT_TIMEOUT, EVENTSERVICE_NAME, FAST_SERIALIZER
from .errors import PermissionDenied, ServiceNotFoundError
from .naming import find_ns

log = logging.getLogger(__name__)

RECONNECT_ERRORS = (errors.CommunicationError, errors.NamingError, OSError)
WHAT_NEXT = "is es running? start it with 'es', or give esURI (es ... --esuri URI)"
WHAT_NEXT_AT_URI = "is es running there? start it with 'es', or give the esURI it printed (es ... --esuri URI)"

Subjects = Union[str, Iterable[str]]  # one subject, or a list/tuple of them
# connection callbacks: told the error that showed the service gone / the URI of the service back
DisconnectCallback = Callable[[BaseException], Any]
ReconnectCallback = Callable[[str], Any]


def is_remote(exc: BaseException) -> bool:
    """True if ``exc`` was raised by the far side (the service answered with it)."""
    return hasattr(exc, "_pyroTraceback")


def call_back(callback: Optional[Callable[[Any], Any]], detail: Any) -> None:
    """Call a connection callback, if any, with ``detail``; what it raises is logged."""
    if callback is None:
        return
    try:
        callback(detail)
    except Exception:
        log.exception("connection callback %r raised", callback)


def check_subjects(subjects: Any, what: str = "subject") -> List[str]:
    """``subjects`` as a list of str; TypeError otherwise (checked before sending)."""
    items = [subjects] if isinstance(subjects, str) else subjects
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{what} must be a str or a list/tuple of str, not {type(subjects).__name__}")
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what} must be a str, not {type(item).__name__}")
    return list(items)


def _is_stale(proxy: Proxy) -> bool:
    """True if the service closed this proxy's connection (seen without sending anything).
    Not checked for TLS, whose records may arrive between calls."""
    conn = proxy._pyroConnection
    sock = getattr(conn, "sock", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)  # between calls, readable means closed (or out of step): either way, anew


def _look_up() -> Any:
    """The URI of the Event Service in the name server found the usual Pyro5 way."""
    ns = find_ns()
    if ns is None:
        raise ServiceNotFoundError(f"no name server answered at {pyro_config.NS_HOST}:{pyro_config.NS_PORT} "
                                   f"(nor to a broadcast): {WHAT_NEXT}")
    where = ns._pyroUri.location
    try:
        return ns.lookup(EVENTSERVICE_NAME)
    except errors.NamingError as exc:
        raise ServiceNotFoundError(f"the name server at {where} has no {EVENTSERVICE_NAME} ({exc}): "
                                   f"{WHAT_NEXT}") from exc
    except (errors.CommunicationError, OSError) as exc:
        raise ServiceNotFoundError(f"the name server at {where} stopped answering ({exc}): {WHAT_NEXT}") from exc
    finally:
        ns._pyroRelease()


class ServiceLink:
    """One proxy of the Event Service, shared by threads under a lock, made again after
    a failure: by ``esURI`` if given, else by name; it proves ``credentials`` (see
    :func:`eventservice.auth.client_credentials`). With ``persistent=False`` the
    connection is closed after each call, so that an idle client (a Subscriber between
    subscriptions) holds no connection, and no thread, in the service.

    ``on_lost(error)`` is called when a call finds the service gone (once, until it is
    back), ``on_back(uri)`` when a new connection is made after that; both in the calling
    thread, after the lock is released; what they raise is logged. ``hello`` says who the
    client is, in each connection's handshake (see :func:`eventservice.auth.hello_of`)."""

    def __init__(self, credentials: auth.Credentials, esURI: Any = None, timeout: float = DEFAULT_CLIENT_TIMEOUT,
                 persistent: bool = True, on_lost: Optional[DisconnectCallback] = None,
                 on_back: Optional[ReconnectCallback] = None, hello: Optional[Dict[str, Any]] = None) -> None:
        self.credentials = credentials
        self.hello = hello
        self.esURI = esURI
        self.timeout = timeout
        self.persistent = persistent
        self.on_lost = on_lost
        self.on_back = on_back
        self.lost = False  # a call found the service gone and no new connection was made since
        self.connected_once = False  # "lost" is told only about a service that was reached before
        self.lock = threading.RLock()
        self._proxy: Optional[Proxy] = None

    @property
    def uri(self) -> Optional[str]:
        """The URI of the service this link last connected to, if any."""
        proxy = self._proxy
        return None if proxy is None else str(proxy._pyroUri)

    def _connect(self) -> Proxy:
        """A bound proxy of the service; ``ServiceNotFoundError`` when nothing answers."""
        uri = _look_up() if self.esURI is None else self.esURI
        secret, user = self.credentials
        proxy = auth.proxy(uri, secret, serializer=FAST_SERIALIZER, timeout=self.timeout, user=user, hello=self.hello)
        try:
            proxy._pyroBind()
        except errors.NamingError as exc:  # a PYRONAME: esURI whose name is not registered
            raise ServiceNotFoundError(f"{uri} names no Event Service ({exc}): {WHAT_NEXT_AT_URI}") from exc
        except errors.CommunicationError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError):
                raise ServiceNotFoundError(f"no Event Service answers at {uri} ({exc}): {WHAT_NEXT_AT_URI}") from exc
            raise  # it answered, and refused (the passphrase, TLS): not a matter of finding it
        return proxy

    def call(self, method: str, *args: Any, serializer: Optional[str] = None) -> Any:
        """Call ``method`` on the service (in ``serializer``, default msgpack) and return
        its answer, or raise what it raised. A call is sent once: a connection the service
        closed meanwhile is noticed before sending and made anew; once sent, a failure is
        raised, never repeated (the service may have acted on it). ``ServiceNotFoundError``
        when no service can be reached, ``PermissionDenied`` when the service refused the call
        by its users' rules."""
        news: List[Tuple[str, Any]] = []
        try:
            with self.lock:
                return self._call(method, args, serializer, news)
        except RECONNECT_ERRORS as exc:
            if not is_remote(exc):
                with self.lock:
                    self._lose(exc, news)  # finding the service failed
            elif isinstance(exc, PermissionError):
                denied = PermissionDenied.from_text(str(exc))
                setattr(denied, "_pyroTraceback", getattr(exc, "_pyroTraceback"))  # the service's answer: is_remote
                raise denied from exc
            raise
        finally:
            for kind, detail in news:
                call_back(self.on_lost if kind == "lost" else self.on_back, detail)

    def _call(self, method: str, args: Tuple[Any, ...], serializer: Optional[str],
              news: List[Tuple[str, Any]]) -> Any:
        """One call (lock held); what happened to the connection goes into ``news``."""
        if self._proxy is not None and self._proxy._pyroConnection is None:
            self.reset()  # closed after its last call (persistent=False): found anew
        elif self._proxy is not None and _is_stale(self._proxy):
            self.reset()  # the service closed it (went away, restarted): found anew
            self._lose(errors.ConnectionClosedError("the Event Service closed the connection"), news)
        if self._proxy is None:
            self._proxy = self._connect()
            self.connected_once = True
            if self.lost:
                self.lost = False
                news.append(("back", str(self._proxy._pyroUri)))
        else:
            self._proxy._pyroClaimOwnership()
        proxy = self._proxy
        proxy._pyroTimeout = self.timeout
        proxy._pyroSerializer = serializer or FAST_SERIALIZER
        try:
            return getattr(proxy, method)(*args)
        except Exception as exc:
            if is_remote(exc):
                raise  # an answer from the service
            self.reset()
            if isinstance(exc, RECONNECT_ERRORS):
                self._lose(exc, news)
            raise
        finally:
            if not self.persistent and self._proxy is not None:
                self._proxy._pyroRelease()

    def _lose(self, exc: BaseException, news: List[Tuple[str, Any]]) -> None:
        if not self.lost and self.connected_once:
            self.lost = True
            news.append(("lost", exc))

    def reset(self) -> None:
        """Drop the connection; the next call makes a new one."""
        with self.lock:
            proxy, self._proxy = self._proxy, None
            if proxy is not None:
                try:
                    proxy._pyroClaimOwnership()
                    proxy._pyroRelease()
                except Exception:
                    pass
