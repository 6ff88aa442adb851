"""A Pyro5 daemon that checks the passphrase and does not wait forever for a hello.

Both the Event Service and each ``Subscriber`` serve through it.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Optional

from Pyro5 import config, errors
from Pyro5.server import Daemon

from .config import DEFAULT_HANDSHAKE_TIMEOUT

log = logging.getLogger(__name__)


def passphrase_matches(presented: Any, ident: str) -> bool:
    """Constant-time comparison of a presented handshake with the passphrase."""
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(presented.encode("utf-8"), ident.encode("utf-8"))


class GuardedDaemon(Daemon):
    """A :class:`Pyro5.server.Daemon` that refuses connections whose handshake does not
    carry ``ident`` (when one is set), and closes connections that do not complete the
    handshake within ``handshake_timeout`` seconds."""

    def __init__(self, host: Optional[str] = None, port: int = 0, ident: Optional[str] = None,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, **kwargs: Any) -> None:
        self._ident = ident
        self._handshake_timeout = handshake_timeout
        super().__init__(host=host, port=port, **kwargs)

    def validateHandshake(self, conn: Any, data: Any) -> Any:
        if self._ident is not None and not passphrase_matches(data, self._ident):
            raise errors.SecurityError("passphrase refused")
        return "hello"

    def _handshake(self, conn: Any, denied_reason: Optional[str] = None) -> bool:
        if not self._handshake_timeout:
            return super()._handshake(conn, denied_reason)
        conn.timeout = self._handshake_timeout
        try:
            return super()._handshake(conn, denied_reason)
        except OSError:  # includes socket.timeout: the client said nothing in time
            log.debug("connection closed: no handshake within %.1fs", self._handshake_timeout)
            return False
        finally:
            try:
                conn.timeout = config.COMMTIMEOUT or None
            except OSError:
                pass
