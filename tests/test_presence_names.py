"""Presence names its clients, against a real ``es``: subscribers by the name their client gave
(also in ``stats(True)``), ``left`` repeats what the subscriber held, and publishers that ask
for it are announced when they connect and when their connection closes (also by a kill)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any, Dict, List

import pytest

from conftest import wait_for
from eventservice import AsyncPublisher, AsyncSubscriber, Event, Publisher, Subscriber
from eventservice.config import client_name


class Watcher(Subscriber):
    def __init__(self) -> None:
        super().__init__(name="watcher")
        self.seen: List[Event] = []

    def event(self, event: Event) -> None:
        self.seen.append(event)

    def about(self, field: str, value: Any) -> List[Dict[str, Any]]:
        return [dict(e.msg, kind=e.subject.rsplit(".", 2)[-2] + "." + e.subject.rsplit(".", 1)[-1])
                for e in list(self.seen) if e.msg.get(field) == value]


@pytest.fixture
def watcher(es):
    with Watcher() as w:
        w.start()
        w.subscribeMatch(r"es\.presence\.(subscriber|publisher)\.")
        yield w


def test_the_default_name_is_program_at_host_pid():
    import os
    import socket
    name = client_name()
    assert name.endswith(f"@{socket.gethostname()}:{os.getpid()}") and "@" in name
    assert client_name("mine") == "mine"
    assert Publisher(esURI="PYRO:nobody@127.0.0.1:1").name.endswith(f":{os.getpid()}")


def test_subscribers_are_named_and_left_repeats_what_they_held(es, watcher):
    subject = f"news.{uuid.uuid4().hex[:6]}"
    with Subscriber(name="reader") as sub:
        sub.subscribe(subject)
        sub.subscribeMatch(r"weather\..*")
        key = sub.uri
        stats = es.proxy().stats(True)["per_subscriber"]
        assert stats[key]["name"] == "reader" and stats[watcher.uri]["name"] == "watcher"
    wait_for(lambda: [m["kind"] for m in watcher.about("subscriber", key)] ==
             ["subscriber.joined", "subscriber.changed", "subscriber.left"], 10, "joined, changed, left")
    joined, changed, left = watcher.about("subscriber", key)
    assert {joined["name"], changed["name"], left["name"]} == {"reader"}
    assert (left["subjects"], left["patterns"]) == ([subject], [r"weather\..*"]), left


def test_announced_publishers_join_and_leave_plain_ones_do_not_show(es, watcher):
    with Publisher(name="ticker", announce=True):
        wait_for(lambda: watcher.about("name", "ticker"), 10, "the publisher joined")
        with Publisher(name="quiet") as quiet:
            quiet.publish("x", 1)
    wait_for(lambda: len(watcher.about("name", "ticker")) == 2, 10, "the publisher left")
    joined, left = watcher.about("name", "ticker")
    assert (joined["kind"], left["kind"]) == ("publisher.joined", "publisher.left")
    assert joined["publisher"] == left["publisher"] and ":" in joined["publisher"]
    assert not watcher.about("name", "quiet")

    async def main() -> None:
        async with AsyncSubscriber(name="async-reader") as sub:
            sub.on("y", print)
            await sub.flush()
            async with AsyncPublisher(name="async-ticker", announce=True):
                wait_for(lambda: watcher.about("name", "async-ticker"), 10, "the async publisher")
    asyncio.run(main())
    assert watcher.about("name", "async-reader")[0]["kind"] == "subscriber.joined"


def test_a_killed_announced_publisher_leaves_at_once(es, cluster, watcher):
    proc = cluster.python("seed_client.py", "publisher", "doomed")
    wait_for(lambda: watcher.about("name", "doomed"), 15, "the publisher process joined")
    proc.signal(signal.SIGKILL)
    wait_for(lambda: len(watcher.about("name", "doomed")) == 2, 1.5, "the killed publisher left")
    assert watcher.about("name", "doomed")[1]["kind"] == "publisher.left"
