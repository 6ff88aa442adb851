"""Pyro5 beyond its documented API. Tested with Pyro5 5.15 and 5.17.

Importing :mod:`eventservice` calls :func:`harden` once, for the whole process:

- **marshal is refused.** Pyro5 decodes a message with whatever serializer its sender
  names, and ``marshal.loads`` of crafted bytes crashes CPython. Pyro5 keeps its
  serializers in the public module dicts ``serializers`` and ``serializers_by_id``; the
  marshal entry is replaced by one that refuses to encode or decode, so no message in this
  process, sent or received, is ever marshal.
- **decompression is bounded.** ``ReceivingMessage.add_payload`` inflates a compressed
  message with the ``zlib`` module global of ``Pyro5.protocol``, whatever it inflates to;
  that global is replaced by one whose ``decompress`` stops at ``config.MAX_MESSAGE_SIZE``
  bytes.

The rest of the package reaches Pyro5's internals only through this module, which relies on:

- ``protocol._header_format`` / ``_header_size``: the wire header (:data:`HEADER_FORMAT`),
  whose fields the guarded daemon unpacks in this order: tag, version, type, serializer id,
  flags, seq, data size, annotations size, correlation id, reserved, magic;
- ``Daemon._handshake(conn, denied_reason=None) -> bool``: called by the socket servers
  (``svr_threads``, ``svr_multiplex``) for every new connection (:class:`ConnectionHook`);
- ``Daemon.objectsById[core.DAEMON_NAME].get_metadata(object_id)``: what Pyro5's own
  handshake answers as ``"meta"`` (:func:`metadata`);
- ``Daemon._sendExceptionResponse(conn, seq, serializer_id, exc, tbinfo)``: answers a
  request with an exception (:func:`send_exception`);
- ``Proxy._pyroInvoke(method, vargs, kwargs)``: sends a call whatever the object's metadata
  says, also from ``_pyroValidateHandshake``, where the connection is already set
  (:func:`invoke`);
- ``SerializerBase.__custom_class_to_dict_registry`` (name-mangled): the classes given to
  ``register_class_to_dict`` (:func:`dict_classes`).

Elsewhere the package uses, as Pyro5's own examples do, proxy attributes that Pyro5 reserves
for itself without documenting them (``_pyroUri``, ``_pyroMethods``, ``_pyroConnection``)
and the transport servers' ``wakeup()``; ``tests/test_compat.py`` checks those too.
"""

from __future__ import annotations

import zlib as _zlib
from typing import Any, Dict, Optional, Tuple

from Pyro5 import config, core, errors, protocol, serializers
from Pyro5.client import Proxy

TESTED_VERSIONS = ("5.15", "5.17")
MARSHAL_ID = 2  # Pyro5's serializer id of marshal
REFUSED = ("marshal is disabled in processes that use eventservice: decoding it from the network can crash "
           "Python; use serpent, json or msgpack")


class RefusedSerializer(serializers.MarshalSerializer):  # type: ignore[misc]
    """Stands in for marshal: encoding and decoding raise ``SerializeError`` (registrations
    of types, which Pyro5 makes on every serializer, still work)."""

    def dumps(self, data: Any) -> bytes:
        raise errors.SerializeError(REFUSED)

    def dumpsCall(self, obj: Any, method: Any, vargs: Any, kwargs: Any) -> bytes:
        raise errors.SerializeError(REFUSED)

    def loads(self, data: Any) -> Any:
        raise errors.SerializeError(REFUSED)

    def loadsCall(self, data: Any) -> Any:
        raise errors.SerializeError(REFUSED)


class BoundedZlib:
    """``zlib`` for Pyro5's protocol module: ``decompress`` refuses to inflate beyond
    ``config.MAX_MESSAGE_SIZE`` bytes."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_zlib, name)

    @staticmethod
    def decompress(data: Any, *args: Any, **kwargs: Any) -> bytes:
        limit = config.MAX_MESSAGE_SIZE
        inflater = _zlib.decompressobj()
        try:
            out = inflater.decompress(data, limit + 1)
        except _zlib.error as exc:
            raise errors.ProtocolError(f"compressed message is not valid: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise errors.ProtocolError(f"compressed message inflates beyond {limit} bytes (the message size limit)")
        if not inflater.eof:
            raise errors.ProtocolError("compressed message is truncated")
        return out


def harden() -> None:
    """Refuse marshal and bound decompression in this process (idempotent)."""
    refused = RefusedSerializer()
    if serializers.serializers_by_id.get(MARSHAL_ID) is not None and \
            not isinstance(serializers.serializers_by_id[MARSHAL_ID], RefusedSerializer):
        serializers.serializers_by_id[MARSHAL_ID] = refused
        serializers.serializers["marshal"] = refused
    if not isinstance(protocol.zlib, BoundedZlib):
        protocol.zlib = BoundedZlib()


def is_hardened() -> bool:
    """True when :func:`harden` is in effect (the tests check it against upstream changes)."""
    return isinstance(serializers.serializers_by_id.get(MARSHAL_ID), RefusedSerializer) and \
        isinstance(protocol.zlib, BoundedZlib)


# -- beyond the documented API (see the module) ----------------------------------------------
HEADER_FORMAT: str = protocol._header_format
HEADER_SIZE: int = protocol._header_size


class ConnectionHook:
    """For a class deriving from ``Pyro5.server.Daemon``: routes the call Pyro5's socket
    servers make for every new connection to :meth:`on_connect`, which the class defines as
    ``on_connect(conn, denied_reason=None) -> bool``. ``denied_reason`` set: the server
    refuses the connection (its pool is full) and the answer must say so. True: the
    connection is served; False: it is closed. ``on_connect`` then does the whole handshake
    (read the client's MSG_CONNECT, answer it), as Pyro5's own ``_handshake`` would."""

    def _handshake(self, conn: Any, denied_reason: Optional[str] = None) -> bool:
        return self.on_connect(conn, denied_reason)  # type: ignore[attr-defined, no-any-return]


def metadata(daemon: Any, object_id: str) -> Dict[str, Any]:
    """The metadata of ``object_id`` in ``daemon`` (what a handshake answers as ``"meta"``)."""
    return daemon.objectsById[core.DAEMON_NAME].get_metadata(object_id)  # type: ignore[no-any-return]


def send_exception(daemon: Any, conn: Any, seq: int, serializer_id: int, error: BaseException) -> None:
    """Answer the request ``seq`` on ``conn`` with ``error`` (raised in the caller), without a
    server-side traceback."""
    daemon._sendExceptionResponse(conn, seq, serializer_id, error, None)


def invoke(proxy: Proxy, method: str, args: Tuple[Any, ...]) -> Any:
    """Call ``method`` with ``args`` through ``proxy``, whether or not the object's metadata
    lists it; usable from ``_pyroValidateHandshake`` (the proxy's connection is set then)."""
    return proxy._pyroInvoke(method, args, {})


def dict_classes() -> Tuple[type, ...]:
    """The classes registered with ``SerializerBase.register_class_to_dict``; () if Pyro5 no
    longer keeps them where this module looks (``tests/test_compat.py`` tells)."""
    registry = getattr(serializers.SerializerBase, "_SerializerBase__custom_class_to_dict_registry", None)
    return tuple(registry) if registry is not None else ()
