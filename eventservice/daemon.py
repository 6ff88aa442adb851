"""A Pyro5 daemon that checks the passphrase and does not wait forever for a hello.

Both the Event Service and each ``Subscriber`` serve through it.
"""

from __future__ import annotations

import hmac
import logging
import struct
from typing import Any, Optional

from Pyro5 import config, errors, protocol
from Pyro5.server import Daemon

from .config import DEFAULT_HANDSHAKE_TIMEOUT

log = logging.getLogger(__name__)

DRAIN_FACTOR = 64  # a message up to this many times the limit is read and discarded, to answer it cleanly
DRAIN_CHUNK = 1 << 20  # bytes read at a time while discarding


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
      ``handshake_timeout`` seconds, so silent connections cost nothing lasting;
    - answers a request larger than ``max_message_size`` bytes with a clear
      ``ValueError`` in the caller instead of reading it into memory.
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
        try:
            conn.timeout = self._handshake_timeout
            if hasattr(conn.sock, "do_handshake"):
                conn.sock.do_handshake()
            return super()._handshake(conn, denied_reason)
        except OSError as exc:  # socket.timeout and ssl.SSLError are OSErrors
            log.debug("connection closed during handshake: %s", exc)
            return False
        finally:
            try:
                conn.timeout = config.COMMTIMEOUT or None
            except OSError:
                pass

    def handleRequest(self, conn: Any) -> None:
        limit = self._max_message_size
        if limit is None:
            return super().handleRequest(conn)
        header = conn.recv(protocol._header_size)
        fields = struct.unpack(protocol._header_format, header)
        tag, serializer_id, seq, size = fields[0], fields[3], fields[5], fields[6] + fields[7]
        if tag == b"PYRO" and size > limit:
            self._refuse_large(conn, serializer_id, seq, size, limit)
            return None
        return super().handleRequest(_Replay(conn, header))

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
