"""Typed events: registered classes travel as themselves between eventservice clients, as
dicts to everybody else; unregistered classes are refused before anything is sent."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import logging
import uuid
from typing import Any, Dict, List, Optional

import pytest

from conftest import wait_for
from eventservice import Event, Publisher, Subscriber, register_type
from eventservice import typed
from eventservice.typed import TYPE_KEY, decode, encode, unregister_type
from helpers.cl_support import shared_cluster


@dataclasses.dataclass
class Quote:
    symbol: str
    price: float


@dataclasses.dataclass(frozen=True)
class Frozen:
    key: str
    count: int = 0
    note: str = dataclasses.field(default="", init=False)


@dataclasses.dataclass
class Order:
    quote: Quote
    history: List[Quote] = dataclasses.field(default_factory=list)
    extra: Optional[Dict[str, Any]] = None


@dataclasses.dataclass
class Nobody:
    x: int


class Point:
    """Not a dataclass: registered with its own codec."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class Color(enum.Enum):
    RED = 1


@pytest.fixture(autouse=True)
def registered():
    register_type(Quote)
    register_type(Frozen, "frozen")
    register_type(Order)
    register_type(Point, to_dict=lambda p: {"x": p.x, "y": p.y}, from_dict=lambda d: Point(d["x"], d["y"]))
    yield
    for cls in (Quote, Frozen, Order, Point):
        unregister_type(cls)


# -- the codec on its own --------------------------------------------------------------------------
def test_wire_form_is_a_plain_dict_with_the_marker():
    assert encode(Quote("SUN", 1.5)) == {TYPE_KEY: "Quote", "symbol": "SUN", "price": 1.5}
    frozen = Frozen("k", 2)
    object.__setattr__(frozen, "note", "set later")
    assert encode(frozen) == {TYPE_KEY: "frozen", "key": "k", "count": 2, "note": "set later"}
    assert encode(Point(1, 2)) == {TYPE_KEY: "Point", "x": 1, "y": 2}


def test_round_trip_nested_in_fields_lists_tuples_and_dicts():
    order = Order(Quote("SUN", 1.0), [Quote("IBM", 2.0), Quote("HP", 3.0)], {"point": Point(1, 2)})
    msg = {"orders": [order, (Quote("A", 0.5), 3)], "n": 1}
    wire = encode(msg)
    assert wire["orders"][0]["quote"] == {TYPE_KEY: "Quote", "symbol": "SUN", "price": 1.0}
    assert isinstance(wire["orders"][1], tuple)
    assert decode(wire) == msg
    frozen = Frozen("k", 2)
    object.__setattr__(frozen, "note", "later")
    back = decode(encode(frozen))
    assert back == frozen and back.note == "later"


def test_values_without_typed_instances_are_passed_as_they_are():
    for msg in ({"a": 1, "b": [1, 2, {"c": "d"}]}, [1, (2, 3)], "text", None, 1.5, b"raw"):
        assert encode(msg) is msg
        assert decode(msg) is msg
    # types the serializer carries itself are fine
    for value in (datetime.datetime.now(), decimal.Decimal("1.5"), uuid.uuid4(), Color.RED, ValueError("x"),
                  Event("s", 1, 2.0), {1, 2}, frozenset({"a"})):
        assert encode({"v": value}) == {"v": value}


def test_unregistered_classes_are_a_clear_type_error():
    with pytest.raises(TypeError, match=r"dataclass nobody registered.*register_type\(Nobody\)"):
        encode(Nobody(1))
    with pytest.raises(TypeError, match="Nobody"):
        encode({"deep": [1, (2, {"x": Nobody(1)})]})
    with pytest.raises(TypeError, match="Nobody"):
        encode(Order(Quote("A", 1.0), extra={"bad": Nobody(2)}))  # inside a registered one
    with pytest.raises(TypeError, match="could not decode"):
        encode([object()])
    with pytest.raises(TypeError, match="dict key or in a set"):
        encode({Frozen("k"): 1})
    with pytest.raises(TypeError, match="dict key or in a set"):
        encode({Frozen("k")})


def test_decoding_is_lenient_about_versions(caplog):
    assert decode({TYPE_KEY: "Quote", "symbol": "S", "price": 1.0, "added_later": 5}) == Quote("S", 1.0)
    assert decode({TYPE_KEY: "frozen", "key": "k"}) == Frozen("k", 0)
    with caplog.at_level(logging.WARNING, logger="eventservice.typed"):
        left = decode({TYPE_KEY: "Quote", "symbol": "S"})  # price missing
    assert left == {TYPE_KEY: "Quote", "symbol": "S"} and "could not become a Quote" in caplog.text
    assert decode({TYPE_KEY: "unknown", "a": 1}) == {TYPE_KEY: "unknown", "a": 1}


def test_registration_rules():
    assert register_type(Quote) is Quote  # again: harmless

    @register_type(name="renamed")
    @dataclasses.dataclass
    class Local:
        a: int

    try:
        assert typed.registered_types()["renamed"] is Local
        assert encode(Local(1))[TYPE_KEY] == "renamed"

        @dataclasses.dataclass
        class Quote2:
            a: int
        with pytest.raises(ValueError, match="taken"):
            register_type(Quote2, "Quote")
        with pytest.raises(TypeError, match="not a dataclass"):
            register_type(Point)
        with pytest.raises(TypeError, match="both"):
            register_type(Point, to_dict=lambda p: {})
        with pytest.raises(TypeError):
            register_type(Quote("a", 1))  # type: ignore[call-overload]
    finally:
        unregister_type(Local)
    assert "renamed" not in typed.registered_types()


# -- between real processes ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared():
    with shared_cluster() as (cluster, es):
        yield cluster, es


def record(sub: Subscriber, subject: str) -> List[Any]:
    got: List[Any] = []
    sub.on(subject, lambda event: got.append(event.msg))
    return got


@pytest.mark.parametrize("batch", [False, True])
def test_instances_travel_as_themselves_between_eventservice_clients(shared, batch):
    subject = f"typed.{uuid.uuid4().hex[:8]}"
    order = Order(Quote("SUN", 22.44), [Quote("SUN", 22.40)], {"when": "now"})
    with Subscriber() as sub, Publisher(batch=batch) as pub:
        sub.start()
        got = record(sub, subject)
        pub.publish(subject, order)
        pub.publish(subject, [Quote("A", 1.0), Point(3, 4)])
        pub.publish(subject, "plain")
        pub.flush()
        wait_for(lambda: len(got) == 3, 10, "three events")
    assert got == [order, [Quote("A", 1.0), Point(3, 4)], "plain"]
    assert type(got[0].quote) is Quote


@pytest.mark.parametrize("batch", [False, True])
def test_an_unregistered_class_raises_before_anything_is_sent(shared, batch):
    _, es = shared
    subject = f"typed.{uuid.uuid4().hex[:8]}"
    with Subscriber() as sub, Publisher(batch=batch) as pub:
        sub.start()
        got = record(sub, subject)
        published = es.proxy().stats()["published"]
        with pytest.raises(TypeError, match="Nobody"):
            pub.publish(subject, {"x": Nobody(1)})
        pub.flush()  # nothing was queued either: no error to report
        assert es.proxy().stats()["published"] == published
        pub.publish(subject, "after")
        pub.flush()
        wait_for(lambda: got == ["after"], 10, "the next event")


def test_a_plain_pyro5_client_receives_a_dict(shared):
    cluster, _ = shared
    subject = f"typed.{uuid.uuid4().hex[:8]}"
    plain = cluster.python("cl_plain_subscriber.py", subject)
    try:
        plain.wait_line("^subscribed")
        with Publisher() as pub:
            pub.publish(subject, Order(Quote("SUN", 1.5)))
        line = plain.wait_line(r"^EVENT (.*)")
    finally:
        plain.kill()
    import json
    received = json.loads(line.group(1))
    assert received["type"] == "dict" and received["subject"] == subject
    assert received["msg"] == {TYPE_KEY: "Order", "quote": {TYPE_KEY: "Quote", "symbol": "SUN", "price": 1.5},
                               "history": [], "extra": None}


def test_a_dict_with_the_marker_from_a_plain_client_becomes_the_class(shared):
    _, es = shared
    subject = f"typed.{uuid.uuid4().hex[:8]}"
    with Subscriber() as sub:
        sub.start()
        got = record(sub, subject)
        es.proxy().publish(subject, {TYPE_KEY: "Quote", "symbol": "IBM", "price": 2.5})
        wait_for(lambda: got, 10, "the event")
    assert got == [Quote("IBM", 2.5)]


def test_a_subscriber_that_did_not_register_the_class_receives_the_dict(shared):
    subject = f"typed.{uuid.uuid4().hex[:8]}"
    with Subscriber() as sub, Publisher() as pub:
        sub.start()
        got = record(sub, subject)
        wire_before = encode(Quote("SUN", 1.0))
        unregister_type(Quote)
        pub.publish(subject, wire_before)  # what a publisher that registered it sends
        wait_for(lambda: got, 10, "the event")
    assert got == [{TYPE_KEY: "Quote", "symbol": "SUN", "price": 1.0}]
