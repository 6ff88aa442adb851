"""The habits of aiodistbus users and of Pyro 3's pickled objects, against a real ``es``:
glob-style subscriptions, the type name of a typed event a receiver did not register, and
namedtuples that keep their type when registered."""

from __future__ import annotations

import asyncio
import uuid
from collections import namedtuple
from typing import Any, List

import pytest

from conftest import wait_for
from eventservice import AsyncPublisher, AsyncSubscriber, Event, Publisher, Subscriber, register_type
from eventservice.patterns import glob_pattern
from eventservice.typed import TYPE_KEY, encode, unregister_type

Point = namedtuple("Point", "x y")


def test_glob_patterns_translate_to_anchored_regex_patterns():
    assert glob_pattern("sensor.*") == r"sensor\..*$"
    assert glob_pattern("*") == ".*$"
    assert glob_pattern("a?c**") == "a.c.*$"
    assert glob_pattern("x[1]+") == r"x\[1\]\+$"


def test_glob_subscriptions_and_handlers(es):
    base = f"g{uuid.uuid4().hex[:6]}"
    got: List[Any] = []
    handled: List[Any] = []
    class Recording(Subscriber):
        def event(self, event: Event) -> None:
            got.append(event.subject)
            self.call_handlers(event)

    def on_end(event: Event) -> None:
        handled.append(event.subject)

    with Recording() as sub, Publisher() as pub:
        sub.start()
        sub.subscribe(f"{base}.sensor.*", glob=True)
        sub.on_glob(f"{base}.?.end", on_end)
        for subject in ("sensor.temp", "sensor.a.b", "SENSOR.x", "sensorx", "other.x", "b.end", "bb.end"):
            pub.publish(f"{base}.{subject}", 1)
        pub.publish(f"{base}.sensor.fence", 1)
        wait_for(lambda: f"{base}.sensor.fence" in got, 10, "the fence")
        assert got == [f"{base}.{s}" for s in ("sensor.temp", "sensor.a.b", "SENSOR.x", "b.end", "sensor.fence")]
        assert handled == [f"{base}.b.end"]
        sub.unsubscribe(f"{base}.sensor.*", glob=True)
        assert es.proxy().stats()["pattern_subscriptions"] == 1  # the handler's glob is left
        assert sub.remove_handler(on_end, glob_pattern(f"{base}.?.end"))
        assert es.proxy().stats()["pattern_subscriptions"] == 0


def test_an_async_glob_subscription_takes_every_subject(es):
    base = f"a{uuid.uuid4().hex[:6]}"

    async def main() -> List[str]:
        async with AsyncSubscriber() as sub:
            async with sub.subscription(f"{base}*", glob=True) as everything:
                async with AsyncPublisher() as pub:
                    for subject in ("x", ".y.z", "-w"):
                        await pub.publish(base + subject, None)
                return [(await everything.get()).subject for _ in range(3)]
    assert asyncio.run(main()) == [f"{base}x", f"{base}.y.z", f"{base}-w"]


def test_a_type_registered_only_by_the_sender_arrives_as_a_dict_that_names_it(es, cluster, make_subscriber):
    subject = f"typed.{uuid.uuid4().hex[:6]}"
    register_type(Point)
    try:
        sub = make_subscriber()
        sub.subscribe(subject)
        sender = cluster.python("typed_sender.py", subject)
        assert sender.wait_exit(30) == 0, sender.output()
        reading, point = sub.recorder.wait_count(2)
        assert reading.msg == {TYPE_KEY: "Reading", "sensor": "temp", "value": 21.5}
        assert reading.type_name == "Reading"
        assert point.msg == Point(1, 2) and type(point.msg) is Point, "a registered namedtuple keeps its type"
        assert point.type_name == "Point"
    finally:
        unregister_type(Point)
    assert Event("s", {"plain": 1}, 0.0).type_name is None and Event("s", (1, 2), 0.0).type_name is None


def test_an_unregistered_class_error_shows_the_line_that_registers_it():
    class Trade:
        def __init__(self, symbol: str) -> None:
            self.symbol = symbol

    with pytest.raises(TypeError) as raised:
        encode(Trade("SUN"))
    line = "eventservice.register_type(" + Trade.__qualname__ + ", to_dict=vars, from_dict=lambda d: "
    assert line in str(raised.value), str(raised.value)
    register_type(Trade, to_dict=vars, from_dict=lambda d: Trade(**d))  # the line works as shown
    try:
        assert encode(Trade("SUN"))["symbol"] == "SUN"
    finally:
        unregister_type(Trade)
    assert encode(Point(1, 2)) == (1, 2), "an unregistered namedtuple is a plain tuple"
