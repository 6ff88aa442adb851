"""Pyro5, hardened for input from the network. Tested with Pyro5 5.15 to 5.17.

Importing :mod:`eventservice` calls :func:`harden` once, for the whole process:

- **marshal is refused.** Pyro5 decodes a message with whatever serializer its sender
  names, and ``marshal.loads`` of crafted bytes crashes CPython. Pyro5 keeps its
  serializers in the public module dicts ``serializers`` and ``serializers_by_id``; the
  marshal entry is replaced by one that refuses to encode or decode, so no message in this
  process, sent or received, is ever marshal.
- **decompression is bounded.** ``ReceivingMessage.add_payload`` inflates a compressed
  message with ``zlib.decompress``, whatever it inflates to. The module's ``zlib`` is
  replaced by one whose ``decompress`` stops at ``config.MAX_MESSAGE_SIZE`` bytes.
"""

from __future__ import annotations

import zlib as _zlib
from typing import Any

from Pyro5 import config, errors, protocol, serializers

TESTED_VERSIONS = ("5.15", "5.16", "5.17")
MARSHAL_ID = 2  # Pyro5's serializer id of marshal
REFUSED = ("marshal is disabled in processes that use eventservice: decoding it from the network can crash "
           "Python; use serpent, json or msgpack")


class RefusedSerializer(serializers.MarshalSerializer):
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
        serializers.serializers_by_id[MARSHAL_ID] = refused  # type: ignore[assignment]
        serializers.serializers["marshal"] = refused  # type: ignore[assignment]
    if not isinstance(protocol.zlib, BoundedZlib):
        protocol.zlib = BoundedZlib()  # type: ignore[assignment]


def is_hardened() -> bool:
    """True when :func:`harden` is in effect (the tests check it against upstream changes)."""
    return isinstance(serializers.serializers_by_id.get(MARSHAL_ID), RefusedSerializer) and \
        isinstance(protocol.zlib, BoundedZlib)
