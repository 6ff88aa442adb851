"""Subscribers that die, freeze, raise or hang, beside healthy ones (real processes)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from eventservice import Publisher

from conftest import wait_for
from faultkit import events_of, key_of, listening_port, proxy, quiescent, seqs_of

SUBJECT = "faults.stream"
QUEUE = 50
DELIVERY_TIMEOUT = 2.0
BLOCK_TIMEOUT = 1.0
PHASE_ONE = 200  # events before the faults
AFTER_FAULTS = 8.0  # seconds the stream goes on after the faults (several delivery timeouts)
PACE = 0.005  # seconds between events of the stream
HANG_ON = 230  # the seq on which the hanging subscriber's event() never returns
RAISE_ON = 7


def _stream(pub: Publisher, gate: threading.Event, sent: list, durations: list, stop_after: float) -> None:
    """Publish 0, 1, 2, ...: PHASE_ONE events, then (paced) until ``stop_after`` seconds
    after ``gate`` was set, and at least 300 events after it."""
    seq = 0
    gate_time = None
    while True:
        if gate.is_set() and gate_time is None:
            gate_time, gate_seq = time.monotonic(), seq
        if gate_time is not None and time.monotonic() - gate_time >= stop_after and seq - gate_seq >= 300:
            return
        begun = time.monotonic()
        pub.publish(SUBJECT, {"seq": seq, "src": "stream"})
        durations.append((seq, time.monotonic() - begun, gate.is_set()))
        sent.append(seq)
        seq += 1
        if seq >= PHASE_ONE:
            gate.wait(30)  # after phase one the stream waits for the faults, then goes on paced
            time.sleep(PACE)  # pacing of the load, not a wait for a condition


@pytest.mark.timeout(150)
@pytest.mark.parametrize("policy", ["drop", "block"])
def test_faulty_subscribers_beside_healthy_ones(cluster, policy):
    """Six subscriber processes on one subject, es with --queue-size 50 and
    --delivery-timeout 2 (``policy``: --overflow drop, or block with --block-timeout 1), and
    --heartbeat 0 (no liveness check: the queue policy alone governs the frozen one):

    - a healthy project Subscriber and a healthy plain Pyro5 subscriber receive every event
      exactly once and in order;
    - a plain subscriber whose event() raises on one event still receives every event
      exactly once, in order (the rest of the batch is sent again), and is not removed;
    - a subscriber SIGKILLed mid-stream is removed from its subscriptions and counted:
      ``stats()["removed"] == 1`` (and nobody else is removed);
    - a subscriber frozen with SIGSTOP mid-stream keeps its subscription and falls under the
      queue policy: its events beyond the queue are dropped and counted in
      ``stats(True)["per_subscriber"]``; with "block" no publish waits longer than the
      block timeout; after SIGCONT it receives again;
    - a subscriber whose event() never returns for one event is not removed, the batch that
      timed out is counted as dropped, and later events reach it;
    - at the end every subscriber's counters add up: posted = delivered + dropped + queued.
    """
    cluster.start_ns()
    extra = ["--block-timeout", str(BLOCK_TIMEOUT)] if policy == "block" else []
    es = cluster.es("--queue-size", str(QUEUE), "--overflow", policy,
                    "--delivery-timeout", str(DELIVERY_TIMEOUT), "--heartbeat", "0", *extra)
    subs = {
        "good": cluster.python("subscriber.py", SUBJECT, name="good"),
        "plain": cluster.python("subscriber.py", "--plain", SUBJECT, name="plain"),
        # pinned to serpent: there the service learns exactly where a batch stopped (see
        # test_raising_subscriber_called_back_in_marshal for the default)
        "raiser": cluster.python("subscriber.py", "--plain", "--serializer", "serpent", "--raise-on", str(RAISE_ON),
                                 SUBJECT, name="raiser"),
        "hanger": cluster.python("subscriber.py", "--hang-on", str(HANG_ON), SUBJECT, name="hanger"),
        "victim": cluster.python("subscriber.py", SUBJECT, name="victim"),
        "frozen": cluster.python("subscriber.py", SUBJECT, name="frozen"),
    }
    for proc in subs.values():
        proc.wait_line("READY", 30)
    ports = {name: listening_port(proc.pid) for name, proc in subs.items()}
    service = proxy(es.uri)
    assert service.stats()["subscribers"] == 6

    gate = threading.Event()
    sent: list = []
    durations: list = []
    failure: list = []
    pub = Publisher()

    def run() -> None:
        try:
            _stream(pub, gate, sent, durations, AFTER_FAULTS)
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)

    publisher = threading.Thread(target=run, daemon=True)
    publisher.start()
    # mid-stream: the victim and the frozen one have had all of phase one
    for name in ("victim", "frozen"):
        wait_for(lambda: len(seqs_of(subs[name])) >= PHASE_ONE, 30, f"{name} to receive phase one")
    subs["victim"].signal(signal.SIGKILL)
    subs["frozen"].signal(signal.SIGSTOP)
    gate.set()
    publisher.join(120)
    assert not publisher.is_alive(), "the publisher never finished"
    assert not failure, f"publishing failed: {failure[0]!r}"
    total = len(sent)
    expected = list(range(total))

    for name in ("good", "plain", "raiser"):
        wait_for(lambda: len(seqs_of(subs[name])) >= total, 30,
                 f"{name} to receive all {total} events (has {len(seqs_of(subs[name]))})")
        assert seqs_of(subs[name]) == expected, f"{name} did not get every event exactly once, in order"
    assert [e["type"] for e in events_of(subs["plain"])][:1] == ["dict"]

    # the killed subscriber is removed and counted; the frozen and hanging ones are not
    wait_for(lambda: service.stats()["removed"] >= 1, 15, "the killed subscriber to be removed")
    stats = service.stats(True)
    per = stats["per_subscriber"]
    assert stats["removed"] == 1, stats
    assert stats["subscribers"] == 5, stats
    assert key_of(per, ports["victim"]) is None
    for name in ("good", "plain", "raiser", "hanger", "frozen"):
        assert key_of(per, ports[name]) is not None, f"{name} lost its subscription"
    frozen_key = key_of(per, ports["frozen"])
    assert per[frozen_key]["dropped"] > 0, per[frozen_key]
    assert per[frozen_key]["queued"] <= QUEUE

    # the hanging one: the timed-out batch was dropped, later events reach it
    hanger_key = key_of(per, ports["hanger"])
    wait_for(lambda: service.stats(True)["per_subscriber"][hanger_key]["dropped"] > 0, 15,
             "the hanging subscriber's timed-out batch to be counted")
    wait_for(lambda: (seqs_of(subs["hanger"]) or [-1])[-1] == total - 1, 30,
             "the hanging subscriber to receive the last event")
    got = seqs_of(subs["hanger"])
    assert got[:HANG_ON] == list(range(HANG_ON))
    assert HANG_ON not in got  # its event() never returned, so it never printed it

    if policy == "block":
        # the policy engaged (the publisher waited for a full queue) and no single publish
        # waited longer than the block timeout
        slow = [d for _, d, after in durations if after and d >= 0.8 * BLOCK_TIMEOUT]
        assert slow, "the publisher never waited for room: the block policy did not engage"
        assert max(d for _, d, _ in durations) < BLOCK_TIMEOUT + 1.5, max(d for _, d, _ in durations)

    # thaw: the frozen one receives again; then every subscriber's counters add up
    subs["frozen"].signal(signal.SIGCONT)
    pub.publish(SUBJECT, {"seq": total, "src": "after"})
    for name in ("good", "plain", "raiser", "frozen", "hanger"):
        wait_for(lambda: any(e["msg"].get("src") == "after" for e in events_of(subs[name])), 30,
                 f"{name} to receive an event after the thaw")
    wait_for(lambda: all(quiescent(c) for c in service.stats(True)["per_subscriber"].values()), 30,
             "every queue to be empty and settled")
    per = service.stats(True)["per_subscriber"]
    for name in ("good", "plain", "raiser", "hanger", "frozen"):
        c = per[key_of(per, ports[name])]
        assert c["posted"] == c["delivered"] + c["dropped"] + c["queued"], (name, c)
        assert c["posted"] == total + 1, (name, c)
    for name in ("good", "plain", "raiser"):
        c = per[key_of(per, ports[name])]
        assert c["dropped"] == 0 and c["delivered"] == total + 1, (name, c)
    assert service.stats()["removed"] == 1
    pub.close()


@pytest.mark.timeout(90)
def test_frozen_subscriber_costs_a_publisher_one_wait(cluster):
    """es --overflow block --block-timeout 1 --queue-size 50 --delivery-timeout 2 --heartbeat 0
    (no liveness check: es retries the frozen one every delivery timeout), one healthy
    and one frozen (SIGSTOP) project Subscriber process, a publisher publishing paced events
    for 6 s (three delivery timeouts): the contract says "once a subscriber's queue has stayed
    full that long, further events for it are dropped at once ... until it takes an event
    again, so a frozen subscriber costs a publisher one wait". The publisher may wait about
    one block timeout once; more waits mean the frozen subscriber costs one per retry. The
    healthy subscriber gets every event in order all the same."""
    cluster.start_ns()
    es = cluster.es("--queue-size", str(QUEUE), "--overflow", "block", "--block-timeout", str(BLOCK_TIMEOUT),
                    "--delivery-timeout", str(DELIVERY_TIMEOUT), "--heartbeat", "0")
    good = cluster.python("subscriber.py", SUBJECT, name="good")
    frozen = cluster.python("subscriber.py", "--quiet", SUBJECT, name="frozen")
    good.wait_line("READY", 30)
    frozen.wait_line("READY", 30)
    frozen.signal(signal.SIGSTOP)
    waits = []
    seq = 0
    with Publisher() as pub:
        begun = time.monotonic()
        while time.monotonic() - begun < 3 * DELIVERY_TIMEOUT or seq < 2 * QUEUE:
            started = time.monotonic()
            pub.publish(SUBJECT, {"seq": seq, "src": "p"})
            took = time.monotonic() - started
            if took >= 0.8 * BLOCK_TIMEOUT:
                waits.append((seq, round(took, 2)))
            seq += 1
            time.sleep(PACE)  # pacing of the load
    wait_for(lambda: len(seqs_of(good)) >= seq, 30, "the healthy subscriber to receive every event")
    assert seqs_of(good) == list(range(seq))
    per = proxy(es.uri).stats(True)["per_subscriber"]
    assert per[key_of(per, listening_port(frozen.pid))]["dropped"] > 0
    frozen.signal(signal.SIGCONT)
    assert len(waits) <= 1, f"{len(waits)} waits of ~{BLOCK_TIMEOUT}s for one frozen subscriber: {waits}"


def test_raising_subscriber_called_back_in_marshal(es, cluster):
    """A plain subscriber that chose no serializer is called back in marshal; when its
    event() raises, Pyro5 cannot marshal the batch's results, so the service cannot tell how
    far the batch got: it switches that subscriber to serpent and goes on. The subscriber
    never gets an event twice nor out of order, and gets every event published after that
    batch; a healthy subscriber beside it gets everything."""
    raiser = cluster.python("subscriber.py", "--plain", "--raise-on", str(RAISE_ON), SUBJECT, name="raiser")
    good = cluster.python("subscriber.py", "--plain", SUBJECT, name="good")
    raiser.wait_line("READY", 30)
    good.wait_line("READY", 30)
    with Publisher() as pub:
        for seq in range(200):
            pub.publish(SUBJECT, {"seq": seq, "src": "p"})
        wait_for(lambda: len(seqs_of(good)) >= 200, 30, "the healthy subscriber's events")
        for seq in range(200, 300):
            pub.publish(SUBJECT, {"seq": seq, "src": "p"})
    wait_for(lambda: 299 in seqs_of(raiser), 30, "the raiser to get the last event")
    got = seqs_of(raiser)
    assert got == sorted(set(got)), "no event twice, none out of order"
    assert got[:RAISE_ON + 1] == list(range(RAISE_ON + 1)), "up to the failing event, all"
    assert list(range(200, 300)) == [s for s in got if s >= 200], "every event after the failing batch"
    assert seqs_of(good) == list(range(300))
