"""A Pyro5 daemon that checks the passphrase and does not wait forever for a hello.

Both the Event Service and each ``Subscriber`` serve through it.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import logging
import socket
import struct
import threading
import time
from typing import Any, List, Optional

from Pyro5 import config, errors, protocol
from Pyro5.server import Daemon

from .config import DEFAULT_HANDSHAKE_TIMEOUT

log = logging.getLogger(__name__)

DRAIN_FACTOR = 64  # a message up to this many times the limit is read and discarded, to answer it cleanly
DRAIN_CHUNK = 1 << 20  # bytes read at a time while discarding
MIN_RECEIVE_RATE = 1 << 20  # bytes/s: a request must arrive at least this fast (beyond the handshake timeout)
LARGE_MESSAGE = 1 << 16  # bytes: requests this large count against the budget of bytes in transit
REAPER_TICK = 0.25  # seconds between looks for connections past their deadline
IN_TRANSIT_FACTOR = 16  # budget of bytes in transit = this many times the largest message


class Reaper:
    """One thread that shuts down connections whose deadline passed: a deadline covers a
    whole exchange (a handshake, a request), however slowly its bytes drip in. It looks
    every REAPER_TICK seconds, so watching and cancelling cost a request no thread switch."""

    def __init__(self) -> None:
        self._heap: List[List[Any]] = []  # [deadline, seq, sock, active]
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def watch(self, sock: socket.socket, seconds: float) -> List[Any]:
        """Shut ``sock`` down after ``seconds`` unless :meth:`cancel` is called first."""
        entry = [time.monotonic() + seconds, next(self._seq), sock, True]
        with self._lock:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="es-reaper", daemon=True)
                self._thread.start()
        return entry

    @staticmethod
    def cancel(entry: List[Any]) -> None:
        entry[3] = False
        entry[2] = None

    def _run(self) -> None:
        while True:
            time.sleep(REAPER_TICK)
            now = time.monotonic()
            expired = []
            with self._lock:
                while self._heap and (not self._heap[0][3] or self._heap[0][0] <= now):
                    entry = heapq.heappop(self._heap)
                    if entry[3]:
                        expired.append(entry[2])
            for sock in expired:
                log.debug("closing a connection that missed its deadline")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except (OSError, AttributeError):
                    pass


REAPER = Reaper()


def passphrase_matches(presented: Any, ident: str) -> bool:
    """Constant-time comparison of a presented handshake with the passphrase."""
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(presented.encode("utf-8"), ident.encode("utf-8"))


class GuardedDaemon(Daemon):
    """A :class:`Pyro5.server.Daemon` that

    - refuses connections whose handshake does not carry ``ident`` (when one is set),
      comparing in constant time;
    - closes connections that do not complete their (TLS and Pyro5) handshake within
      ``handshake_timeout`` seconds, however slowly the bytes drip, so silent or dripping
      connections cost nothing lasting; a request, once begun, must arrive within that
      time plus its size at MIN_RECEIVE_RATE;
    - answers a request larger than ``max_message_size`` bytes with a clear
      ``ValueError`` in the caller instead of reading it into memory, and bounds the bytes
      of large requests in transit at once.
    """

    def __init__(self, host: Optional[str] = None, port: int = 0, ident: Optional[str] = None,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 max_message_size: Optional[int] = None, **kwargs: Any) -> None:
        self._ident = ident
        self._handshake_timeout = handshake_timeout
        self._max_message_size = max_message_size
        super().__init__(host=host, port=port, **kwargs)
        listener = getattr(self.transportServer, "sock", None)
        if listener is not None and hasattr(listener, "do_handshake_on_connect"):
            # TLS: do the TLS handshake in the connection's worker, under the handshake
            # timeout, not in the accept loop where one silent client would stall it
            listener.do_handshake_on_connect = False

    def validateHandshake(self, conn: Any, data: Any) -> Any:
        if self._ident is not None and not passphrase_matches(data, self._ident):
            raise errors.SecurityError("passphrase refused")
        return "hello"

    def _handshake(self, conn: Any, denied_reason: Optional[str] = None) -> bool:
        if not self._handshake_timeout:
            return super()._handshake(conn, denied_reason)
        deadline = REAPER.watch(conn.sock, self._handshake_timeout)
        try:
            if hasattr(conn.sock, "do_handshake"):
                conn.sock.do_handshake()
            return super()._handshake(conn, denied_reason)
        except OSError as exc:  # ssl.SSLError is an OSError
            log.debug("connection closed during handshake: %s", exc)
            return False
        finally:
            REAPER.cancel(deadline)

    def handleRequest(self, conn: Any) -> None:
        """Read one request under a deadline (once its first byte arrived, the rest must
        follow at MIN_RECEIVE_RATE), then let Pyro5 handle it."""
        first = conn.recv(1)  # waits as long as the connection stays idle
        deadline = REAPER.watch(conn.sock, self._handshake_timeout or DEFAULT_HANDSHAKE_TIMEOUT)
        try:
            header = first + conn.recv(protocol._header_size - 1)
            fields = struct.unpack(protocol._header_format, header)
            tag, serializer_id, seq, size = fields[0], fields[3], fields[5], fields[6] + fields[7]
            if tag != b"PYRO":
                raise errors.ProtocolError("invalid message")
            limit = self._max_message_size
            if limit is not None and size > limit:
                REAPER.cancel(deadline)
                deadline = REAPER.watch(conn.sock, self._receive_time(size))
                self._refuse_large(conn, serializer_id, seq, size, limit)
                return None
            if size >= LARGE_MESSAGE:
                REAPER.cancel(deadline)
                deadline = REAPER.watch(conn.sock, self._receive_time(size))
            with self._in_transit(size, conn, serializer_id, seq):
                body = conn.recv(size) if size else b""
                REAPER.cancel(deadline)
                return super().handleRequest(_Replay(conn, header + body))
        finally:
            REAPER.cancel(deadline)

    def _receive_time(self, size: int) -> float:
        return (self._handshake_timeout or DEFAULT_HANDSHAKE_TIMEOUT) + size / MIN_RECEIVE_RATE

    def _in_transit(self, size: int, conn: Any, serializer_id: int, seq: int) -> "_Budget":
        return _Budget(self, size if size >= LARGE_MESSAGE else 0, conn, serializer_id, seq)

    def _refuse_large(self, conn: Any, serializer_id: int, seq: int, size: int, limit: int) -> None:
        """Answer an oversized request with an error; read and drop its body when that is
        affordable, else close the connection after answering."""
        error = ValueError(f"message of {size} bytes refused: this Event Service accepts at most "
                           f"{limit} bytes (es --max-message-size)")
        log.warning("refused a message of %d bytes (limit %d)", size, limit)
        if size > DRAIN_FACTOR * limit:
            self._sendExceptionResponse(conn, seq, serializer_id, error, None)
            raise errors.ConnectionClosedError("message too large: connection closed")
        remaining = size
        while remaining:
            remaining -= len(conn.recv(min(DRAIN_CHUNK, remaining)))
        self._sendExceptionResponse(conn, seq, serializer_id, error, None)


class _Budget:
    """Counts the bytes of large requests being received at once; past the daemon's budget
    (IN_TRANSIT_FACTOR x the largest message) a request is refused, so that clients that
    announce large messages and send them slowly cannot make memory grow without bound."""

    lock = threading.Lock()
    in_transit = 0

    def __init__(self, daemon: GuardedDaemon, size: int, conn: Any, serializer_id: int, seq: int) -> None:
        self.daemon, self.size, self.conn, self.serializer_id, self.seq = daemon, size, conn, serializer_id, seq

    def __enter__(self) -> None:
        if not self.size:
            return
        budget = IN_TRANSIT_FACTOR * (self.daemon._max_message_size or config.MAX_MESSAGE_SIZE)
        with _Budget.lock:
            fits = _Budget.in_transit + self.size <= budget
            if fits:
                _Budget.in_transit += self.size
        if not fits:
            self.size = 0
            error = ValueError("the Event Service is receiving too many large messages at once: try again")
            self.daemon._sendExceptionResponse(self.conn, self.seq, self.serializer_id, error, None)
            raise errors.ConnectionClosedError("too many large messages in transit: connection closed")

    def __exit__(self, *exc_info: Any) -> None:
        if self.size:
            with _Budget.lock:
                _Budget.in_transit -= self.size


class _Replay:
    """A connection whose first ``recv`` returns bytes already read (the header)."""

    def __init__(self, conn: Any, data: bytes) -> None:
        self._conn = conn
        self._data = data

    def recv(self, size: int) -> bytes:
        if self._data:
            head, self._data = self._data[:size], self._data[size:]
            if len(head) < size:
                head += self._conn.recv(size - len(head))
            return head
        return self._conn.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
