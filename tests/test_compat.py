"""What eventservice assumes of its dependencies beyond their documented API
(eventservice/_compat): these fail loudly when an upstream change breaks an assumption."""

from __future__ import annotations

import struct
import zlib

import pytest
from Pyro5 import config, errors, protocol, serializers

import eventservice  # noqa: F401  (hardens Pyro5)
from eventservice._compat import pyro5 as compat
from eventservice.daemon import HEADER_FORMAT, HEADER_SIZE


def test_importing_eventservice_hardens_pyro5() -> None:
    assert compat.is_hardened()


def test_marshal_neither_encodes_nor_decodes() -> None:
    marshal = serializers.serializers_by_id[compat.MARSHAL_ID]
    assert serializers.serializers["marshal"] is marshal
    for call in (lambda: marshal.dumps([1]), lambda: marshal.loads(b"[\x00\x00\x00\x00"),
                 lambda: marshal.dumpsCall("obj", "m", (), {}), lambda: marshal.loadsCall(b"")):
        with pytest.raises(errors.SerializeError, match="marshal is disabled"):
            call()


def test_pyro5_still_keeps_its_serializers_where_we_replace_them() -> None:
    """Pyro5 looks serializers up in these two dicts (server.py, client.py, protocol)."""
    assert {1, 3, 4} <= set(serializers.serializers_by_id)
    assert serializers.serializers_by_id[1].serializer_id == 1


def test_the_wire_header_is_the_one_the_daemon_parses() -> None:
    assert (HEADER_FORMAT, HEADER_SIZE) == ("!4sHBBHHII16sHH", 40)
    header = protocol.SendingMessage(protocol.MSG_INVOKE, 0, 7, 1, b"payload").data[:HEADER_SIZE]
    fields = struct.unpack(HEADER_FORMAT, header)
    assert (fields[0], fields[2], fields[3], fields[5], fields[6]) == (b"PYRO", protocol.MSG_INVOKE, 1, 7, 7)


def test_decompression_stops_at_the_message_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 1 << 20)
    bomb = zlib.compress(b"\0" * (64 << 20))
    header = struct.pack(HEADER_FORMAT, b"PYRO", protocol.PROTOCOL_VERSION, protocol.MSG_RESULT, 1,
                         protocol.FLAGS_COMPRESSED, 1, len(bomb), 0, b"\0" * 16, 0, 0x4DC5)
    message = protocol.ReceivingMessage(header)
    with pytest.raises(errors.ProtocolError, match="inflates beyond"):
        message.add_payload(bomb)


def test_decompression_within_the_limit_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 1 << 20)
    data = zlib.compress(b"x" * 1000)
    header = struct.pack(HEADER_FORMAT, b"PYRO", protocol.PROTOCOL_VERSION, protocol.MSG_RESULT, 1,
                         protocol.FLAGS_COMPRESSED, 1, len(data), 0, b"\0" * 16, 0, 0x4DC5)
    message = protocol.ReceivingMessage(header)
    message.add_payload(data)
    assert bytes(message.data) == b"x" * 1000
