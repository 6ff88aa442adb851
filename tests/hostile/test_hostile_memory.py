"""Finding 2: memory and CPU spent on a connection before it is authenticated, and
decompression past --max-message-size after. The fix: before authentication a connection
costs at most a small fixed amount (at most 64 KiB read, no decompression, no decoding
beyond the handshake); after it, decompressed bytes count against --max-message-size."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict

import pytest
from Pyro5 import protocol
from Pyro5.serializers import serializers

from hostilekit import (HANDSHAKE_TIMEOUT, MARSHAL_ID, MB, SERPENT_ID, Watch, assert_alive, handshake,
                        marshal_huge_tuple, marshal_self_referencing, mb, port_of, pyro_message, raw_connect,
                        read_reply, refused_or_closed, send_quietly, served, zlib_bomb)

RSS_SLACK = 64 * MB
CPU_SLACK = 1.0  # seconds of es CPU time one hostile connection may cost
SLACK_TIME = 1.0  # beyond the handshake timeout, for a noisy machine
GIB = 2 ** 30
STREAMED = 256 * MB  # bytes actually sent after a header announcing 1 GiB


def _compressed_bomb(sock: Any) -> None:
    bomb = zlib_bomb(GIB)  # about 1 MB
    send_quietly(sock, pyro_message(protocol.MSG_CONNECT, SERPENT_ID, bomb, flags=protocol.FLAGS_COMPRESSED))


def _announce_1gib(sock: Any) -> None:
    """A header announcing a 1 GiB CONNECT, then as much of it as the far side takes
    (STREAMED bytes at most), from a thread so that the test can watch the connection."""
    sent = [0]

    def stream() -> None:
        if not send_quietly(sock, pyro_message(protocol.MSG_CONNECT, SERPENT_ID, b"", data_size=GIB - 1)):
            return
        chunk = bytes(MB)
        while sent[0] < STREAMED:
            if not send_quietly(sock, chunk):
                return
            sent[0] += len(chunk)
    threading.Thread(target=stream, daemon=True, name="streamer").start()
    _announce_1gib.sent = sent  # type: ignore[attr-defined]


def _marshal_tuple(sock: Any) -> None:
    send_quietly(sock, pyro_message(protocol.MSG_CONNECT, MARSHAL_ID, marshal_huge_tuple()))


def _marshal_self_reference(sock: Any) -> None:
    send_quietly(sock, pyro_message(protocol.MSG_CONNECT, MARSHAL_ID, marshal_self_referencing(22)))


ATTACKS: Dict[str, Callable[[Any], None]] = {
    "compressed CONNECT inflating to 1 GiB": _compressed_bomb,
    "CONNECT announcing 1 GiB": _announce_1gib,
    "5-byte marshal tuple of 2**27 slots": _marshal_tuple,
    "self-referencing marshal (2**22 visits)": _marshal_self_reference,
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_unauthenticated_connection_costs_little(es, attack):
    """Finding 2, before authentication: one connection to a fresh es sends a compressed
    CONNECT of about 1 MB that inflates to 1 GiB; a CONNECT header announcing 1 GiB followed
    by 256 MiB of it; a 5-byte marshal tuple announcing 2**27 slots; a 196-byte marshal
    value that Pyro5 walks 2**22 times. es answers (CONNECTFAIL) or closes within the
    handshake timeout (5 s, +1 s of slack), its peak RSS (VmHWM) stays within +64 MB of its
    RSS before, its CPU time within +1 s, it stays alive and serves a fresh client within 1 s."""
    watch = Watch(es.pid)
    served(es.uri)
    if attack.startswith("compressed"):
        zlib_bomb(GIB)  # made before measuring: it takes seconds here
    rss_before, cpu_before = watch.rss(), watch.cpu()
    watch.reset_peak()
    sock = raw_connect(port_of(es.uri), timeout=30)
    begun = time.monotonic()
    try:
        ATTACKS[attack](sock)
        try:
            outcome, _ = refused_or_closed(sock, max(0.5, begun + HANDSHAKE_TIMEOUT + SLACK_TIME - time.monotonic()))
        except AssertionError as exc:
            outcome = f"not answered: {exc}"
        took = time.monotonic() - begun
    finally:
        sock.close()
    assert_alive(es)
    peak, cpu = watch.peak_rss(), watch.cpu() - cpu_before
    sent = getattr(_announce_1gib, "sent", [0])[0] if attack == "CONNECT announcing 1 GiB" else None
    report = (f"{attack}: {outcome} after {took:.2f}s; RSS {mb(rss_before)} MB, peak {mb(peak)} MB "
              f"(+{mb(peak - rss_before)}); CPU +{cpu:.2f}s" + (f"; {mb(sent)} MB sent" if sent is not None else ""))
    print(report)
    assert not outcome.startswith("not answered"), report
    assert peak - rss_before < RSS_SLACK, report
    assert cpu < CPU_SLACK, report
    served(es.uri)


@pytest.mark.timeout(90)
def test_decompressed_request_counts_against_the_limit(cluster):
    """Finding 2, after authentication: es --max-message-size 1048576; a client that made a
    proper handshake sends a request of about 261 KB, flagged compressed, that inflates to
    256 MiB. The caller gets an error reply carrying a ValueError, es's peak RSS stays
    within +64 MB, es stays alive and serves a fresh client within 1 s."""
    cluster.start_ns()
    es = cluster.es("--max-message-size", "1048576")
    watch = Watch(es.pid)
    served(es.uri)
    bomb = zlib_bomb(256 * MB)
    assert len(bomb) < 1048576
    rss_before = watch.rss()
    watch.reset_peak()
    sock = raw_connect(port_of(es.uri), timeout=30)
    try:
        handshake(sock)
        send_quietly(sock, pyro_message(protocol.MSG_INVOKE, SERPENT_ID, bomb, flags=protocol.FLAGS_COMPRESSED, seq=1))
        kind, message, took = read_reply(sock, HANDSHAKE_TIMEOUT + SLACK_TIME)
    finally:
        sock.close()
    assert_alive(es)
    peak = watch.peak_rss()
    error: Any = None
    if kind == "message" and message[1] & protocol.FLAGS_EXCEPTION:
        error = serializers["serpent"].loads(message[3])
    report = (f"{kind} after {took:.2f}s: {type(error).__name__}: {error}; RSS {mb(rss_before)} MB, "
              f"peak {mb(peak)} MB (+{mb(peak - rss_before)})")
    print(report)
    assert isinstance(error, ValueError), f"the caller got no ValueError: {report}"
    assert peak - rss_before < RSS_SLACK, report
    served(es.uri)
