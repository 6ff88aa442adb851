"""Load: 1,000 clients connected at once; a 60-s flood by 20 publisher processes with
subscribers joining and leaving (the soak), watched with psutil."""

from __future__ import annotations

import os
import re
import signal
import time

import psutil
import pytest

from eventservice import Publisher

from conftest import wait_for
from faultkit import Sampler, done_line, key_of, listening_port, mb, proxy, quiescent, timed

CLIENT_PROCS = 4
CLIENTS_EACH = 250


@pytest.mark.timeout(180)
def test_thousand_clients_connected_at_once(cluster, es):
    """4 processes each open 250 plain Pyro5 proxies to es and bind them: 1,000 real TCP
    connections with completed handshakes, held open. es holds them all (a thread and a
    socket each), a fresh client from this process still gets a publish and a stats()
    answered within 3 s each, and then every one of the 1,000 connections makes a ping()
    call over its own connection. When the clients are gone es's threads return to their
    earlier level."""
    es_proc = psutil.Process(es.pid)
    with proxy(es.uri) as p:
        p.stats()
    baseline = es_proc.num_threads()
    helpers = [cluster.python("fault_clients.py", es.uri, str(CLIENTS_EACH), name=f"clients{n}")
               for n in range(CLIENT_PROCS)]
    bound = []
    for h in helpers:
        m = h.wait_line(r"^BOUND (\d+) ([\d.]+)$", 120)
        bound.append((int(m.group(1)), float(m.group(2))))
    assert [b[0] for b in bound] == [CLIENTS_EACH] * CLIENT_PROCS, [h.output() for h in helpers]
    held_threads = es_proc.num_threads()
    held_sockets = len(es_proc.net_connections(kind="tcp"))
    # a thread per connection (the pool's few idle workers at the start take the first ones)
    assert held_threads >= baseline + CLIENT_PROCS * CLIENTS_EACH - 10, (baseline, held_threads)
    assert held_sockets >= CLIENT_PROCS * CLIENTS_EACH, held_sockets

    # a fresh client meanwhile
    with Publisher() as pub:
        _, publish_took = timed(lambda: pub.publish("fresh.client", "hello"))
    with proxy(es.uri) as fresh:
        stats, stats_took = timed(fresh.stats)
    assert publish_took < 3 and stats_took < 3, (publish_took, stats_took)
    assert stats["published"] >= 1

    for h in helpers:
        h.signal(signal.SIGUSR1)
    called = []
    for h in helpers:
        m = h.wait_line(r"^CALLED (\d+) (\d+) ([\d.]+)$", 120)
        called.append((int(m.group(1)), int(m.group(2)), float(m.group(3))))
    assert [c[:2] for c in called] == [(CLIENTS_EACH, 0)] * CLIENT_PROCS, [h.output() for h in helpers]
    for h in helpers:
        h.kill()
    wait_for(lambda: es_proc.num_threads() <= baseline + 2, 30,
             f"es threads to return to ~{baseline} (have {es_proc.num_threads()})")
    print(f"bind times {[b[1] for b in bound]}s; es threads {baseline} -> {held_threads} -> "
          f"{es_proc.num_threads()}, sockets {held_sockets}; fresh publish {publish_took:.3f}s, stats "
          f"{stats_took:.3f}s; slowest ping per helper {[c[2] for c in called]}s; RSS "
          f"{mb(es_proc.memory_info().rss)} MB")


SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
FLOOD_PUBLISHERS = 20
FLOOD_SUBSCRIBERS = 3
FLOOD_SUBJECT = "flood"
RSS_CAP = 300 * 2**20


def _settle(process: psutil.Process, quiet: float = 3.0):
    """(threads, TCP sockets) of ``process`` once they stayed the same for ``quiet`` seconds."""
    state = {"value": None, "since": 0.0}

    def steady():
        value = (process.num_threads(), len(process.net_connections(kind="tcp")))
        now = time.monotonic()
        if value != state["value"]:
            state["value"], state["since"] = value, now
        return now - state["since"] >= quiet and value
    return wait_for(steady, 60, "es's threads and sockets to settle")


def _slope_mb_per_min(samples) -> float:
    """Least-squares slope of RSS over time, MB per minute."""
    ts = [s[0] for s in samples]
    ys = [s[1] / 2**20 for s in samples]
    n = len(ts)
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts) or 1.0
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_SECONDS) + 240)
def test_flood_and_soak(cluster):
    """Flood and soak in one run of SOAK_SECONDS (60 in CI; set SOAK_SECONDS=600 by hand):
    es with ``--overflow drop`` (default queue 10,000) under 20 publisher processes at full
    speed (10 plain Publishers, 10 Publisher(batch=True) flushing every 500 events) on one
    subject, 3 project Subscriber processes on it, and a churn process creating and closing
    a Subscriber and a Publisher in a loop (clients joining and leaving). es is sampled every
    second with psutil. It shows:

    - memory stays bounded: the max RSS of the last third of the run is not much above the
      max of the first third (at most 25 % + 16 MB), and always under 300 MB;
    - threads and TCP sockets do not grow: the max of the last third is at most a few above
      the max of the first third;
    - es answers a stats() call within 5 s at the end of the flood, while it still runs;
    - counters add up: no publisher saw a failure; es's ``published`` equals what the
      publishers (and the churn and warm-up processes) report they published; for each of the 3
      subscribers posted = delivered + dropped + queued, posted = every flood event, and
      what the subscriber process counted agrees with ``delivered``;
    - every churn cycle's probe arrived;
    - after all clients are gone, es's threads and TCP sockets return to the level they had
      after a warm-up client cycle, before the run (no leaked threads or connections).
    """
    cluster.start_ns()
    es = cluster.es("--overflow", "drop")
    es_proc = psutil.Process(es.pid)

    def ask(method, *args):
        """One call on a connection of its own, closed at once (an open connection holds a
        thread of es's pool: the baseline and final counts are taken with none open)."""
        with proxy(es.uri, timeout=30) as p:
            return getattr(p, method)(*args)
    # warm-up: one client cycle, so that whatever es starts on first use is in the baseline
    warm = cluster.python("fault_churn.py", "--name", "warmup", name="warmup")
    warm.wait_line("READY", 60)
    wait_for(lambda: ask("stats")["published"] >= 2, 60, "the warm-up cycles")
    warm.signal(signal.SIGTERM)
    warmed = done_line(warm)
    assert warmed["errors"] == {}, warmed
    wait_for(lambda: ask("stats")["subscribers"] == 0, 30, "the warm-up subscriber to leave")
    base_threads, base_sockets = _settle(es_proc)
    base_rss = es_proc.memory_info().rss

    subs = [cluster.python("subscriber.py", "--quiet", FLOOD_SUBJECT, name=f"sub{n}") for n in range(FLOOD_SUBSCRIBERS)]
    for sub in subs:
        sub.wait_line("READY", 60)
    ports = [listening_port(sub.pid) for sub in subs]
    churn = cluster.python("fault_churn.py", name="churn")
    pubs = []
    for n in range(FLOOD_PUBLISHERS):
        mode = ["--mode", "plain"] if n % 2 == 0 else ["--mode", "batch", "--window", "500"]
        pubs.append(cluster.python("fault_publisher.py", FLOOD_SUBJECT, *mode, "--quiet", "--name", f"p{n}",
                                   name=f"publisher{n}"))
    for p in [churn, *pubs]:
        p.wait_line("READY", 120)

    sampler = Sampler(es.pid, 1.0)
    sampler.start()
    began = time.monotonic()
    deadline = began + SOAK_SECONDS
    while time.monotonic() < deadline:  # the load runs for its set duration; watch that es lives
        assert es.proc.poll() is None, f"es died under the flood:\n{es.output()}"
        assert sampler.error is None, sampler.error
        sampler.halt.wait(min(1.0, max(0.0, deadline - time.monotonic())))
    sampler.stop()
    _, answer_took = timed(lambda: ask("stats"))
    assert answer_took < 5, f"es took {answer_took:.1f}s to answer stats() under the flood"

    for p in [churn, *pubs]:
        p.signal(signal.SIGTERM)
    reports = [done_line(p, 120) for p in pubs]
    churned = done_line(churn, 60)
    flood_seconds = time.monotonic() - began

    # counters
    assert all(r["failed"] == 0 for r in reports), [r for r in reports if r["failed"]]
    flood_total = sum(r["accepted"] for r in reports)
    assert all(r["accepted"] == r["total"] for r in reports)
    wait_for(lambda: all(quiescent(c) for c in ask("stats", True)["per_subscriber"].values()), 120,
             "the subscribers' queues to drain")
    stats = ask("stats", True)
    assert stats["published"] == flood_total + churned["published"] + warmed["published"], \
        (stats["published"], flood_total, churned, warmed)
    per = stats["per_subscriber"]
    for sub, port in zip(subs, ports):
        c = per[key_of(per, port)]
        assert c["posted"] == c["delivered"] + c["dropped"] + c["queued"], c
        assert c["posted"] == flood_total, (c, flood_total)
        counted = max([int(m.group(1)) for m in (re.match(r'^\{"count": (\d+)\}$', line) for line in list(sub.stdout))
                       if m] or [0])
        assert c["delivered"] - 1000 < counted <= c["delivered"], (sub.name, counted, c)
    assert churned["cycles"] >= 3 and churned["arrived"] == churned["published"] == churned["cycles"], churned
    assert not churned["errors"], churned

    # memory, threads, sockets during the run
    rss_first, _, rss_last = sampler.thirds(1)
    thr_first, _, thr_last = sampler.thirds(2)
    sock_first, _, sock_last = sampler.thirds(3)
    rss_all = [s[1] for s in sampler.samples]
    assert len(sampler.samples) >= 0.8 * SOAK_SECONDS, len(sampler.samples)
    assert max(rss_all) < RSS_CAP, f"RSS reached {mb(max(rss_all))} MB"
    assert max(rss_last) <= 1.25 * max(rss_first) + 16 * 2**20, (mb(max(rss_first)), mb(max(rss_last)))
    assert max(thr_last) <= max(thr_first) + 5, (max(thr_first), max(thr_last))
    assert max(sock_last) <= max(sock_first) + 5, (max(sock_first), max(sock_last))

    # after the clients are gone: the subscribers are killed and found gone on the next event
    for sub in subs:
        sub.kill()
    with Publisher() as pub:
        pub.publish(FLOOD_SUBJECT, "anyone?")
    wait_for(lambda: ask("stats")["subscribers"] == 0, 30, "the killed subscribers to be removed")

    final_threads, final_sockets = _settle(es_proc)
    assert final_threads <= base_threads, f"es threads {base_threads} before, {final_threads} after"
    assert final_sockets <= base_sockets, f"es TCP sockets {base_sockets} before, {final_sockets} after"
    rate = flood_total / flood_seconds
    print(f"\nflood+soak {SOAK_SECONDS:.0f}s: {flood_total} events accepted ({rate:.0f}/s; "
          f"{sum(r['accepted'] for r in reports[0::2])} by plain, {sum(r['accepted'] for r in reports[1::2])} by batch "
          f"publishers), published {stats['published']}, delivered {stats['delivered']}, dropped {stats['dropped']}; "
          f"churn {churned}; stats() at end {answer_took:.3f}s; RSS base {mb(base_rss)} MB, "
          f"min {mb(min(rss_all))} max {mb(max(rss_all))} MB, first-third max {mb(max(rss_first))} last-third max "
          f"{mb(max(rss_last))} MB, slope {_slope_mb_per_min(sampler.samples):+.2f} MB/min; threads base "
          f"{base_threads}, run {min(s[2] for s in sampler.samples)}-{max(s[2] for s in sampler.samples)}, final "
          f"{final_threads}; sockets base {base_sockets}, run {min(s[3] for s in sampler.samples)}-"
          f"{max(s[3] for s in sampler.samples)}, final {final_sockets}")
