"""Filters and groups belong to handlers (threaded and asyncio), applied in the service: one
subscriber carries many filtered handlers, the service sends only what some handler wants,
and each handler gets only what passes its own filter. Against a real ``es``."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, List

import pytest

from conftest import wait_for
from eventservice import AsyncPublisher, AsyncSubscriber, Publisher, Subscriber

USERS = [{"user": "bob", "role": "user"}, {"user": "susan", "role": "admin"}, {"user": "al", "role": "user"},
         {"user": "root", "role": "admin"}, {"user": "guest", "role": "visitor"}]


def unique(prefix: str = "f") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def delivered(es, uri: str) -> int:
    return es.proxy().stats(True)["per_subscriber"].get(uri, {}).get("delivered", 0)


def test_one_subscriber_many_filtered_handlers(es):
    subject = unique("user.created.")
    got: List[Any] = []
    with Subscriber() as sub, Publisher() as pub:
        sub.start()
        sub.on(subject, lambda e: got.append(("users", e.msg["user"])), filter=["==", "role", "user"])
        sub.on(subject, lambda e: got.append(("admins", e.msg["user"])), filter=["==", "role", "admin"])

        @sub.on_match(r"user\.created\.", filter=["in", "user", ["bob", "root"]])
        def chosen(event):
            got.append(("chosen", event.msg["user"]))
        for user in USERS:
            pub.publish(subject, user)
        pub.publish(subject, {"user": "fence", "role": "user"})
        wait_for(lambda: ("users", "fence") in got, 10, "the fence")
        # four users and the fence; the visitor passes no handler's filter: the service never sent it
        wait_for(lambda: delivered(es, sub.uri) >= 5, 10, "the count of deliveries")
        assert delivered(es, sub.uri) == 5
    assert sorted(got) == sorted([("users", "bob"), ("admins", "susan"), ("users", "al"), ("admins", "root"),
                                  ("chosen", "bob"), ("chosen", "root"), ("users", "fence")])


def test_a_handler_without_filter_next_to_filtered_ones_gets_everything(es):
    subject = unique()
    every: List[Any] = []
    admins: List[Any] = []
    with Subscriber() as sub, Publisher() as pub:
        sub.start()
        sub.on(subject, lambda e: admins.append(e.msg["user"]), filter=["==", "role", "admin"])
        sub.on(subject, lambda e: every.append(e.msg["user"]), filter=["exists", "user"])
        for user in USERS:
            pub.publish(subject, user)
        wait_for(lambda: len(every) == len(USERS), 10, "every user")
        assert admins == ["susan", "root"]
        with pytest.raises(ValueError):
            sub.on(subject, print, filter=["~", "role", "x"])  # a bad filter: refused before sending


def test_handler_groups_share_the_events_between_subscribers(es):
    subject = unique("jobs.")
    counts: List[List[int]] = [[], []]
    with Subscriber() as one, Subscriber() as two, Publisher() as pub:
        for sub, got in zip((one, two), counts):
            sub.start()
            sub.on(subject, lambda e, got=got: got.append(e.msg), group="workers")
        with pytest.raises(ValueError, match="one group"):
            one.on(subject, print, group="others")
        for n in range(20):
            pub.publish(subject, n)
        wait_for(lambda: len(counts[0]) + len(counts[1]) == 20, 10, "the jobs")
    assert sorted(counts[0] + counts[1]) == list(range(20)) and counts[0] and counts[1]


def test_async_handlers_and_subscriptions_take_filters(es):
    subject = unique()

    async def main() -> None:
        async with AsyncSubscriber() as sub:
            admins: List[Any] = []

            @sub.on(subject, filter=["==", "role", "admin"])
            async def admin(event):
                admins.append(event.msg["user"])
            async with sub.subscription(subject, filter=["==", "role", "user"]) as users:
                await sub.flush()
                async with AsyncPublisher() as pub:
                    for user in USERS:
                        await pub.publish(subject, user)
                names = [(await users.get()).msg["user"] for _ in range(2)]
                assert names == ["bob", "al"]
                for _ in range(200):
                    if len(admins) == 2:
                        break
                    await asyncio.sleep(0.02)
                assert admins == ["susan", "root"]
                assert users.pending == 0
                for _ in range(200):  # a delivery is counted once its call returned
                    if delivered(es, sub.uri) >= 4:
                        break
                    await asyncio.sleep(0.02)
                assert delivered(es, sub.uri) == 4  # the visitor was never sent
    asyncio.run(main())
