"""Noticing at once that a subscriber closed the connection ``es`` holds to it.

Between two calls nothing may arrive on the connection the service keeps to a subscriber
(Pyro5 answers only what it is asked). So when such an idle connection becomes readable,
the subscriber closed it, its process ended (the system closes its sockets, also after a
kill), or it broke the protocol; with TLS it may also be only a record of TLS's own, such as
a session ticket. :class:`Hangups` waits on the idle connections in one thread and tells its
owner; :func:`peer_state` tells those cases apart. A subscriber that is frozen but alive
keeps its connection open: the heartbeat finds it (see :mod:`eventservice.delivery`).
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Optional

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between the owner's sweeps (it watches its idle connections then)
CLOSED, OUT_OF_STEP, QUIET = "closed", "out of step", "quiet"  # what a readable idle connection holds


class Hangups:
    """Idle connections watched for their far end closing, in one thread, ``es-hangups``:
    every TICK seconds it calls ``sweep()`` (where the owner :meth:`watch` es the connections
    idle by then: a connection busy with calls is not worth watching, a failing call tells
    anyway), and it tells ``on_hangup(owner)`` at once when a watched connection becomes
    readable; that one is then no longer watched. Thread-safe."""

    def __init__(self, on_hangup: Callable[[Any], None], sweep: Callable[[], None]) -> None:
        self.on_hangup = on_hangup
        self.sweep = sweep
        self._selector = selectors.DefaultSelector()
        self._watched: Dict[Any, int] = {}  # owner -> file descriptor
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._run, name="es-hangups", daemon=True).start()

    def watch(self, owner: Any, sock: Any) -> None:
        """Watch ``sock`` (idle now) for ``owner``, instead of what it watched before."""
        fd = sock.fileno() if sock is not None else -1
        with self._lock:
            self._forget(owner)
            if fd < 0 or self._closed:
                return
            self._selector.register(fd, selectors.EVENT_READ, owner)
            self._watched[owner] = fd

    def unwatch(self, owner: Any) -> None:
        """Stop watching for ``owner`` (before its connection is used or closed)."""
        with self._lock:
            self._forget(owner)

    def _forget(self, owner: Any) -> Optional[int]:
        fd = self._watched.pop(owner, None)
        if fd is not None:
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        return fd

    def close(self) -> None:
        """Stop watching anything; the thread ends within TICK seconds."""
        with self._lock:
            self._closed = True
            for owner in list(self._watched):
                self._forget(owner)

    def _run(self) -> None:
        swept = time.monotonic()
        while not self._closed:
            if time.monotonic() - swept >= TICK:
                swept = time.monotonic()
                try:
                    self.sweep()
                except Exception:
                    log.exception("watching idle connections failed")
            for key, _ in self._selector.select(TICK):
                owner = key.data
                with self._lock:
                    if self._watched.get(owner) != key.fd:
                        continue  # unwatched meanwhile
                    self._forget(owner)
                try:
                    self.on_hangup(owner)
                except Exception:
                    log.exception("handling a closed connection failed")
        self._selector.close()


def peer_state(sock: Any) -> str:
    """What a readable idle connection holds: CLOSED (the far end closed or reset it),
    OUT_OF_STEP (bytes nobody asked for) or QUIET (only TLS records of its own)."""
    try:
        if isinstance(sock, ssl.SSLSocket):
            timeout = sock.gettimeout()
            sock.settimeout(0)
            try:
                data = sock.recv(1)
            except ssl.SSLWantReadError:
                return QUIET
            finally:
                sock.settimeout(timeout)
        else:
            data = sock.recv(1, socket.MSG_PEEK)
    except OSError:
        return CLOSED
    return CLOSED if not data else OUT_OF_STEP
