"""Who the service's clients are, for presence events and stats: what a client said about
itself in its handshake (:func:`eventservice.auth.hello_of`, kept on its connection by the
daemon), and the publishers that asked to be announced.

An announced publisher (``Publisher(announce=True)``) is announced on
``es.presence.publisher.joined`` once its connection is authenticated and on
``es.presence.publisher.left`` when that connection closes (it closed the publisher, its
process ended, or the connection broke), each with the ``publisher`` (the connection's
address as the service sees it) and the ``name`` it gave.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from Pyro5.callcontext import current_context

from .config import PRESENCE_PREFIX

PUBLISHER_JOINED = PRESENCE_PREFIX + "publisher.joined"
PUBLISHER_LEFT = PRESENCE_PREFIX + "publisher.left"

Announce = Callable[[str, Dict[str, Any]], None]  # (presence subject, message fields)


def caller_hello() -> Dict[str, Any]:
    """What the client making the current remote call said about itself (``name``...);
    empty outside a call or for a client that said nothing."""
    hello: Dict[str, Any] = getattr(getattr(current_context, "client", None), "es_hello", None) or {}
    return hello


def caller_name() -> Optional[str]:
    """The name the client making the current remote call gave, or None."""
    name: Optional[str] = caller_hello().get("name")
    return name


class Publishers:
    """Announces publishers that asked for it: give :meth:`changed` to the daemon as its
    ``on_hello``; ``announce(subject, fields)`` publishes a presence event."""

    def __init__(self, announce: Announce) -> None:
        self.announce = announce

    def changed(self, kind: str, conn: Any) -> None:
        """``conn`` of an announced client was authenticated ("joined") or closed ("left")."""
        if kind == "joined":
            try:
                host, port = conn.sock.getpeername()[:2]
                conn.es_peer = f"{host}:{port}"
            except (OSError, ValueError):
                conn.es_peer = None
        subject = PUBLISHER_JOINED if kind == "joined" else PUBLISHER_LEFT
        self.announce(subject, {"publisher": getattr(conn, "es_peer", None), "name": conn.es_hello.get("name")})
