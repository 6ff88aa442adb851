"""Finding 1: bytes from the network given to ``marshal.loads``. A 12-byte marshal value
segfaults CPython 3.11; Pyro5 decodes a CONNECT with whatever serializer the client names
(marshal is id 2) before any passphrase is checked, and ``publishPacked`` hands its bytes to
marshal after the handshake. The fix: no network bytes ever reach ``marshal.loads``; a
CONNECT or request naming marshal is refused, by ``es``, by a Subscriber's callback daemon
and by the name server ``es`` embeds, and they all keep serving others."""

from __future__ import annotations

import marshal
import sys
import time

import pytest
import Pyro5.api
from Pyro5 import protocol

from conftest import HOST, wait_for
from hostilekit import (HANDSHAKE_TIMEOUT, assert_alive, MARSHAL_CRASH, MARSHAL_ID, Watch, crashes_bare_interpreter,
                        find_marshal_crash, handshake, listening_port, port_of, proxy, pyro_message, raw_connect,
                        read_reply, refused_or_closed, send_quietly, served)


def test_crash_bytes_still_kill_a_bare_interpreter():
    """Finding 1: MARSHAL_CRASH (12 bytes, see hostilekit) makes a bare ``python`` doing
    ``marshal.loads`` die by a signal. When this Python no longer crashes on it, the other
    tests still send it (they then only show that it is refused)."""
    signal_number = crashes_bare_interpreter(MARSHAL_CRASH)
    if signal_number is None:
        found = find_marshal_crash()
        pytest.skip(f"this Python ({sys.version.split()[0]}) survives marshal.loads(MARSHAL_CRASH)"
                    + (f"; another candidate still crashes it: {found.hex()}" if found else ""))
    assert signal_number in (11, 7, 6), f"died by signal {signal_number}"


def _marshal_connect() -> bytes:
    return pyro_message(protocol.MSG_CONNECT, MARSHAL_ID, MARSHAL_CRASH)


def _ns_lookup_within(ns_port: int, limit: float) -> float:
    begun = time.monotonic()
    ns = Pyro5.api.Proxy(f"PYRO:Pyro.NameServer@{HOST}:{ns_port}")
    ns._pyroTimeout = limit + 1
    with ns:
        uri = ns.lookup("Pyro.EventService")
    took = time.monotonic() - begun
    assert uri is not None and took < limit, f"name server lookup took {took:.2f}s"
    return took


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stage", ["connect", "request"])
def test_es_refuses_marshal(es, cluster, stage):
    """Finding 1 against ``es``: a CONNECT naming serializer 2 (marshal) carrying the crash
    bytes, or, after a proper serpent handshake, a request (MSG_INVOKE) naming serializer 2
    with the crash bytes as its payload. es refuses it (CONNECTFAIL / an error reply, or
    closes the connection) within the handshake timeout, stays alive, and a fresh client's
    bind + stats() + publish() and a name-server lookup still work within 1 s."""
    served(es.uri)
    sock = raw_connect(port_of(es.uri))
    try:
        if stage == "connect":
            send_quietly(sock, _marshal_connect())
            outcome, took = refused_or_closed(sock, HANDSHAKE_TIMEOUT)
        else:
            handshake(sock)
            send_quietly(sock, pyro_message(protocol.MSG_INVOKE, MARSHAL_ID, MARSHAL_CRASH, seq=1))
            kind, message, took = read_reply(sock, HANDSHAKE_TIMEOUT)
            assert kind != "silent", f"no answer to a marshal request within {HANDSHAKE_TIMEOUT}s"
            if kind == "message":
                assert message[1] & protocol.FLAGS_EXCEPTION, "a marshal request was served"
            outcome = kind
    finally:
        sock.close()
    assert_alive(es)
    took_served = served(es.uri)
    took_ns = _ns_lookup_within(cluster.ns_port, 1.0)
    print(f"{stage}: {outcome} after {took:.3f}s; then served in {took_served:.3f}s, ns lookup {took_ns:.3f}s")


@pytest.mark.timeout(60)
def test_subscriber_callback_daemon_refuses_marshal(es, cluster):
    """Finding 1 against a Subscriber's callback daemon (``es listen`` died): the crash
    bytes in a CONNECT naming marshal, sent to the port ``es listen`` serves its callbacks
    on. The daemon refuses it or closes the connection, ``es listen`` stays alive and still
    prints the next event published on its subject."""
    listener = cluster.es("listen", "hostile.listen", wait=False)
    listener.wait_line("listening on", 20, stream="stderr")
    port = listening_port(listener.pid)
    sock = raw_connect(port)
    try:
        send_quietly(sock, _marshal_connect())
        outcome, took = refused_or_closed(sock, HANDSHAKE_TIMEOUT)
    finally:
        sock.close()
    assert_alive(listener, "es listen")

    def printed() -> bool:
        assert_alive(listener, "es listen")
        with proxy(es.uri) as p:
            p.publish("hostile.listen", "after the crash bytes")
        return any("after the crash bytes" in line for line in listener.stdout)
    wait_for(printed, 15, "es listen to print an event published after the attack")
    assert_alive(listener, "es listen")
    print(f"callback daemon: {outcome} after {took:.3f}s; es listen alive and printing")


@pytest.mark.timeout(60)
def test_embedded_name_server_refuses_marshal(cluster):
    """Finding 1 against the name server ``es`` starts inside itself when none answers:
    the crash bytes in a CONNECT naming marshal, sent to that name server's port. It
    refuses or closes; ``es`` (the same process) stays alive; a name-server lookup of
    Pyro.EventService and a fresh client's stats()/publish() work within 1 s."""
    es = cluster.es()  # no name server runs: es starts one at PYRO_NS_PORT
    es.wait_line("no name server answered", 10)
    wait_for(lambda: cluster.ns_port in Watch(es.pid).listening_ports(), 10, "the embedded name server")
    served(es.uri)
    sock = raw_connect(cluster.ns_port)
    try:
        send_quietly(sock, _marshal_connect())
        outcome, took = refused_or_closed(sock, HANDSHAKE_TIMEOUT)
    finally:
        sock.close()
    assert_alive(es)
    took_ns = _ns_lookup_within(cluster.ns_port, 1.0)
    took_served = served(es.uri)
    print(f"embedded ns: {outcome} after {took:.3f}s; lookup {took_ns:.3f}s, served {took_served:.3f}s")


PACKED_GARBAGE = {
    "marshal crash bytes": MARSHAL_CRASH,
    "random bytes": bytes(range(7, 250, 3)),
    "today's marshal batch": marshal.dumps([(["hostile.packed"], "m")], 4),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(PACKED_GARBAGE))
def test_publish_packed_rejects_foreign_bytes(es, name):
    """Finding 1 after the handshake: ``publishPacked(data)`` called by a properly
    connected plain Pyro5 client (serpent) with bytes that are not the service's batch
    codec (the marshal crash bytes, random bytes, and a marshal-encoded batch, today's
    format) raises ValueError or TypeError in that caller; es stays alive and serves others."""
    data = PACKED_GARBAGE[name]
    refused = None
    with proxy(es.uri) as p:
        try:
            accepted = p.publishPacked(data)
        except (ValueError, TypeError) as exc:
            refused = exc
        except Exception:
            assert_alive(es)  # names the signal when es died of it
            raise
    assert_alive(es)
    assert refused is not None, f"publishPacked accepted {name} ({accepted!r} events)"
    served(es.uri)
    print(f"{name}: {type(refused).__name__}: {refused}")
