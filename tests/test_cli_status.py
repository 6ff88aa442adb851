"""``es stats`` (human units, rates, tables, --watch, --json), ``es subjects`` and ``es ping``,
against a real service; and the remote methods behind them, as plain Pyro5 clients call them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading

import pytest
from Pyro5.api import Proxy

from cli_kit import ES, Terminal, ok, run_all
from conftest import wait_for
from eventservice import Publisher


def busy(es, make_subscriber):
    """Two subscribers, and events on two subjects (more on one)."""
    subs = [make_subscriber() for _ in range(2)]
    subs[0].subscribe(["quotes.sun", "quotes.ibm"])
    subs[1].subscribe("quotes.sun")
    subs[1].subscribeMatch(r"quotes\..*")
    with Publisher() as publisher:
        for n in range(30):
            publisher.publish("quotes.SUN", n)
        publisher.publish("quotes.ibm", 0)
    wait_for(lambda: es.proxy().stats()["delivered"] == 62, 20, "the deliveries")
    return subs


def test_stats_shows_uptime_rates_subscribers_and_busiest_subjects(es, cluster, make_subscriber):
    busy(es, make_subscriber)
    text = ok(cluster.cli("stats", "--interval", "0.3")).stdout
    assert re.search(r"^started\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(up \d+\.\ds\)$", text, re.M), text
    assert re.search(r"^published\s+31$", text, re.M) and re.search(r"^delivered\s+62$", text, re.M), text
    assert re.search(r"^queue_size\s+10,000$", text, re.M), text
    assert re.search(r"^rates over the last 0\.\ds: published 0/s, delivered 0/s, dropped 0/s, requests 0/s$",
                     text, re.M), text
    rows = text.split("SUBSCRIBER")[1].splitlines()
    assert re.search(r"QUEUED\s+DELIVERED\s+DROPPED\s+SLOW", rows[0])
    held = sorted(re.sub(r"^PYRO:\S+\s+", "", row) for row in rows[1:3])
    assert re.fullmatch(r"quotes\.ibm, quotes\.sun\s+0\s+31\s+0\s+-", held[0]), held
    assert re.fullmatch(r"quotes\.sun, quotes\\\.\.\*\s+0\s+31\s+0\s+-", held[1]), held
    subjects = text.split("SUBJECT ")[1].splitlines()
    assert re.fullmatch(r"\s*SUBSCRIBERS\s+EVENTS\s+RATE", subjects[0])
    assert re.fullmatch(r"quotes\.SUN\s+2\s+30\s+[\d.,]+/s", subjects[1]), subjects
    assert re.fullmatch(r"quotes\.ibm\s+2\s+1\s+[\d.,]+/s", subjects[2]), subjects


def test_stats_rates_count_what_happened_in_the_interval(es, cluster):
    """Events published at a steady 50/s (after 100 at once, before es stats starts) show as
    about 50/s: a rate over the interval, not an average since the start."""
    service = es.proxy()
    for n in range(100):
        service.publish("rated", n)
    stop = threading.Event()

    def steady() -> None:
        with Publisher() as publisher:
            while not stop.wait(0.02):
                publisher.publish("rated", "tick")
    pacer = threading.Thread(target=steady)
    pacer.start()
    try:
        out = ok(cluster.cli("stats", "--interval", "2")).stdout
    finally:
        stop.set()
        pacer.join()
    match = re.search(r"^rates over the last (\d\.\d)s: published ([\d.]+)/s", out, re.M)
    assert match, out
    assert 25 <= float(match.group(2)) <= 60, out


def test_stats_watch_refreshes_in_place_on_a_terminal_and_appends_when_piped(es, cluster):
    terminal = Terminal(cluster, ["stats", "--watch", "0.2"], streams=("stdout",))
    wait_for(lambda: terminal.screen.count("\x1b[H\x1b[2J") >= 3, 20, "three screens")
    terminal.proc.send_signal(signal.SIGINT)
    code, screen, _ = terminal.finish()
    assert code == 130 and "Traceback" not in screen
    assert "every 0.2s, Ctrl-C stops" in screen and screen.count("rates over the last") >= 2
    piped = subprocess.Popen([*ES, "stats", "--watch", "0.2"], env=cluster.env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while sum(line.startswith("Event Service") for line in lines) < 3:
        lines.append(piped.stdout.readline())
    piped.send_signal(signal.SIGTERM)
    assert piped.wait(10) == 143 and "Traceback" not in piped.stderr.read()
    assert not any("\x1b" in line for line in lines)


def test_stats_json_and_subjects(es, cluster, make_subscriber):
    busy(es, make_subscriber)
    as_json, table, only_ibm, listed, nothing = run_all(cluster, [
        ["stats", "--json"], ["subjects"], ["subjects", "QUOTES.i"], ["subjects", "--json", "--limit", "1"],
        ["subjects", "nothing.here"]])
    stats = json.loads(ok(as_json).stdout)
    assert stats["published"] == 31 and len(stats["per_subscriber"]) == 2
    assert [s["subject"] for s in stats["subjects"]] == ["quotes.SUN", "quotes.ibm"]
    assert ok(table).stdout.splitlines()[1].split()[:3] == ["quotes.SUN", "2", "30"]
    assert [line.split()[0] for line in ok(only_ibm).stdout.splitlines()[1:]] == ["quotes.ibm"]
    [busiest] = json.loads(ok(listed).stdout)
    assert busiest["subject"] == "quotes.SUN" and busiest["events"] == 30 and busiest["subscribers"] == 2
    assert ok(nothing).stdout == "" and "no subjects" in nothing.stderr


def test_ping_times_round_trips(es, cluster):
    done = ok(cluster.cli("ping", "--count", "3", "--interval", "0"))
    lines = done.stdout.splitlines()
    assert re.fullmatch(rf"connected to {re.escape(es.uri)} \(run [0-9a-f]{{12}}\) in [\d.]+ ms", lines[0]), lines
    assert [re.fullmatch(r"ping (\d): [\d.]+ ms", line).group(1) for line in lines[1:4]] == ["1", "2", "3"]
    assert re.fullmatch(r"3 pings: min [\d.]+ ms, average [\d.]+ ms, max [\d.]+ ms", lines[4]), lines


# -- the remote methods ------------------------------------------------------------------------

def test_subjects_counts_published_and_subscribed_subjects_and_validates(es, make_subscriber):
    sub = make_subscriber()
    sub.subscribe(["Only.Subscribed", "both"])
    service = es.proxy()
    for _ in range(3):
        service.publish("both", 1)
    service.publish("Only.Published", 1)
    found = {s["subject"].casefold(): (s["subscribers"], s["events"]) for s in service.subjects()}
    assert found == {"both": (1, 3), "only.published": (0, 1), "only.subscribed": (1, 0)}
    assert [s["subject"] for s in service.subjects("only", 1)] == ["Only.Published"]
    for args, error in (((1,), TypeError), (("(",), ValueError), ((None, 0), ValueError), ((None, True), TypeError),
                        ((None, "5"), TypeError), ((None, 10_001), ValueError)):
        with pytest.raises(error):
            service.subjects(*args)


def test_publish_returns_the_subscribers_reached(es, make_subscriber):
    subs = [make_subscriber() for _ in range(3)]
    for sub in subs:
        sub.subscribe("reach")
    subs[0].subscribeMatch("re.*")
    service = es.proxy()
    assert service.publish("reach", 1) == 3
    assert service.publish(["reach", "re.other"], 1) == 3  # distinct subscribers, not deliveries
    assert service.publish("nobody", 1) == 0


def test_tap_validates_and_is_ended_by_unsubscribe(es, make_subscriber):
    sub = make_subscriber()
    service = es.proxy()
    callback = Proxy(sub.uri)
    for args, error in (((callback, 1), TypeError), ((callback, "("), ValueError), (("not a proxy",), TypeError)):
        with pytest.raises(error):
            service.tap(*args)
    assert service.stats()["subscribers"] == 0  # nothing changed
    service.tap(callback, "x.*")
    service.publish("x.1", "seen")
    wait_for(lambda: any(e.msg == "seen" for e in sub.recorder.events), 10, "the tapped event")
    assert service.stats(True)["per_subscriber"][str(callback._pyroUri)]["patterns"] == ["x.*"]
    service.unsubscribe("x.*", callback)
    assert service.stats()["subscribers"] == 0
