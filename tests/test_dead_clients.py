"""Dead clients are noticed at once, against a real ``es`` and subscriber processes: a killed
subscriber is announced ``removed`` within 1 s (heartbeat 10 s), also one that never got an
event; a frozen one keeps its subscriptions until the heartbeat finds it; the group events a
dead member held go to a live member of the group."""

from __future__ import annotations

import signal
import time
from typing import Any, List

import Pyro5.api

from conftest import wait_for
from eventservice import Event, Publisher, Subscriber


class Watcher(Subscriber):
    def __init__(self) -> None:
        super().__init__()
        self.removed: List[Any] = []

    def event(self, event: Event) -> None:
        self.removed.append((time.monotonic(), event.msg))

    def names(self) -> List[str]:
        return [msg["name"] for _, msg in self.removed]


def start_member(cluster, name: str, subject: str, *group: str) -> Any:
    proc = cluster.python("seed_client.py", "subscriber", name, subject, *group, name=name)
    proc.wait_line("^ready$")
    return proc


def test_a_killed_subscriber_is_removed_within_a_second(cluster):
    cluster.start_ns()
    es = cluster.es("--heartbeat", "10")
    with Watcher() as watcher, Publisher() as pub:
        watcher.start()
        watcher.subscribe("es.presence.subscriber.removed")
        served = start_member(cluster, "served", "news")
        idle = start_member(cluster, "idle", "weather")  # never gets an event before it dies
        pub.publish("news", "hello")
        served.wait_line("^got hello$")
        for proc in (served, idle):
            killed = time.monotonic()
            proc.signal(signal.SIGKILL)
            wait_for(lambda: proc.name in watcher.names(), 1.0, f"{proc.name} removed")
            when, msg = watcher.removed[-1]
            assert when - killed < 1.0 and msg["reason"].startswith("disconnected"), msg
        assert [msg["subjects"] for _, msg in watcher.removed] == [["news"], ["weather"]]
        assert es.proxy().stats()["subscribers"] == 1  # the watcher


def test_a_frozen_subscriber_is_found_by_the_heartbeat_not_before(cluster):
    cluster.start_ns()
    cluster.es("--heartbeat", "2")
    with Watcher() as watcher, Publisher() as pub:
        watcher.start()
        watcher.subscribe("es.presence.subscriber.removed")
        frozen = start_member(cluster, "frozen", "news")
        pub.publish("news", "hello")
        frozen.wait_line("^got hello$")
        frozen.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            wait_for(lambda: watcher.names() == ["frozen"], 15, "the heartbeat to remove it")
            took = watcher.removed[0][0] - stopped
            assert took > 1.5, f"a frozen subscriber's connection stays open: removed after {took:.1f}s"
            assert "heartbeat" in watcher.removed[0][1]["reason"]
        finally:
            frozen.signal(signal.SIGKILL)


def test_group_events_of_a_dead_member_go_to_a_live_one(cluster):
    cluster.start_ns()
    es = cluster.es("--heartbeat", "10")
    service = es.proxy()
    live, frozen = (start_member(cluster, name, "jobs", "crew") for name in ("live", "frozen"))
    frozen.signal(signal.SIGSTOP)
    with Publisher() as pub:
        for n in range(40):
            pub.publish("jobs", n)

    def posted_to(name: str) -> int:
        stats = service.stats(True)["per_subscriber"].values()
        return sum(s["posted"] for s in stats if s["name"] == name)
    wait_for(lambda: posted_to("live") + posted_to("frozen") == 40, 10, "all jobs handed out")
    assert posted_to("frozen") > 0, "the test needs jobs stuck at the frozen member"
    frozen.signal(signal.SIGKILL)

    def done() -> List[int]:
        return sorted(int(line.split()[1]) for line in live.stdout if line.startswith("got "))
    wait_for(lambda: len(done()) >= 40, 10, "every job at the live member")
    assert done() == list(range(40))
    assert service.stats()["dropped"] == 0


@Pyro5.api.expose
class Nobody:
    def event(self, event: Any) -> None:
        pass


def test_a_subscriber_gone_before_the_service_reached_it_is_removed_at_once(es):
    daemon = Pyro5.api.Daemon(host="127.0.0.1")  # never serves: closed before anything reaches it
    uri = daemon.register(Nobody())
    daemon.close()
    service = es.proxy()
    started = time.monotonic()
    service.subscribe("never", Pyro5.api.Proxy(uri))
    wait_for(lambda: service.stats()["subscribers"] == 0, 1.0, "the unreachable subscriber removed")
    assert time.monotonic() - started < 1.0
