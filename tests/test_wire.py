"""The wire forms of eventservice.wire: values arrive as they were sent, and anything else
(garbage, marshal, forged envelopes, lengths that lie, nesting without end) is a clear
error, quickly, with no more memory than the input."""

from __future__ import annotations

import datetime
import marshal
import time

import msgpack
import pytest

from eventservice import Event, wire

VALUES = [
    None, True, 0, -1, 2**63 - 1, -2**63, 2**64, -(2**200), 1.5, float("inf"), "text", "ünïcødé", b"\x00\xffbytes",
    [], [1, [2, [3]]], (), (1, (2, "x")), {"a": 1, "b": [1, 2]}, {1: "int key", (1, 2): "tuple key", b"k": None},
    {1, 2, 3}, frozenset({"a", "b"}), [(1, 2), {3: (4, 5)}], {"nested": {"deep": [{"x": (1,)}]}},
]


def same(a, b):
    """Equal and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_message_arrives_as_the_same_python_value(value):
    items = [("subject", value, 1234.5)]
    [(subject, msg, when)] = wire.unpack(wire.pack(items))
    assert (subject, when) == ("subject", 1234.5)
    assert same(msg, value)


def test_publish_batches_keep_subjects_and_messages_in_order():
    pairs = [("a", 1), (["b", "c"], (2, 3)), ("d", {"x": {1, 2}})]
    assert [(s, m) for s, m in wire.unpack_publish(wire.pack_publish(pairs))] == pairs


@pytest.mark.parametrize("value", [datetime.datetime(2026, 1, 1), Event("s", 1, 2.0), object(),
                                   [1, {"deep": datetime.date(2026, 1, 1)}]], ids=lambda v: type(v).__name__)
def test_what_the_codec_cannot_carry_packs_to_none(value):
    assert wire.pack([("s", value, 1.0)]) is None
    assert wire.pack_publish([("s", value)]) is None


# bytes an attacker may send instead of a batch
HOSTILE = {
    "marshal of a list": marshal.dumps([("s", 1, 1.0)]),
    "marshal tuple claiming 2**30 items": b"(" + (0x40000000).to_bytes(4, "little"),
    "array claiming 2**32-1 items": b"\xdd\xff\xff\xff\xff",
    "map claiming 2**32-1 items": b"\xdf\xff\xff\xff\xff",
    "bin claiming 4 GiB": b"\xc6\xff\xff\xff\xff",
    "truncated": wire.pack([("s", "x" * 100, 1.0)])[:-10],
    "trailing garbage": wire.pack([("s", 1, 1.0)]) + b"\x00",
    "nested arrays 100,000 deep": b"\x91" * 100_000 + b"\xc0",
    "unknown extension": msgpack.packb([msgpack.ExtType(99, b"x"), 1, 1.0]),
    "unhashable key": b"\x81\x91\x01\x02",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bytes_are_a_clear_error_at_once(name):
    began = time.perf_counter()
    with pytest.raises(ValueError):
        wire.unpack(HOSTILE[name])
    with pytest.raises(ValueError):
        wire.unpack_publish(HOSTILE[name])
    assert time.perf_counter() - began < 0.5


def test_tuples_nested_without_end_are_refused():
    value = "end"
    for _ in range(wire.MAX_EXT_DEPTH + 5):
        value = (value,)
    data = msgpack.packb(["s", 0, 1.0])  # a valid batch...
    deep = wire.dumps(["s", value, 1.0])  # ...and one whose message nests too deep
    assert deep is not None and wire.unpack(data)
    with pytest.raises(wire.WireError, match="nested deeper"):
        wire.unpack(deep)


@pytest.mark.parametrize("data", [["s", 1], [1, 1, 1.0], ["s", 1, "not a time"], {"a": 1}, "text"], ids=repr)
def test_wrong_shapes_are_refused(data):
    with pytest.raises(ValueError):
        wire.unpack(msgpack.packb(data))


def test_something_else_than_bytes_is_a_type_error():
    with pytest.raises(TypeError):
        wire.unpack(["s", 1, 1.0])


# -- envelopes ----------------------------------------------------------------------------------
KEY = b"k" * 32
ITEMS = [("news", {"n": 1}, 1.0), ("news", (1, 2), 2.0)]


def test_a_signed_envelope_opens_with_the_same_key():
    data = wire.pack_envelope("origin", 7, ITEMS, KEY, {"user": "alice"})
    assert wire.unpack_envelope(data, KEY) == ("origin", 7, {"user": "alice"}, ITEMS)


def test_an_unsigned_envelope_opens_without_a_key():
    assert wire.unpack_envelope(wire.pack_envelope("o", 1, ITEMS), None)[3] == ITEMS


@pytest.mark.parametrize("sent_with, opened_with", [(None, KEY), (b"w" * 32, KEY), (KEY, None)],
                         ids=["unsigned", "wrong key", "signed, no key here"])
def test_envelopes_without_the_right_signature_are_forged(sent_with, opened_with):
    with pytest.raises(wire.ForgedError):
        wire.unpack_envelope(wire.pack_envelope("o", 1, ITEMS, sent_with), opened_with)


def test_a_changed_byte_breaks_the_signature():
    data = bytearray(wire.pack_envelope("o", 1, ITEMS, KEY))
    data[-1] ^= 1
    with pytest.raises(wire.ForgedError):
        wire.unpack_envelope(bytes(data), KEY)


@pytest.mark.parametrize("data", [b"", b"M1" + marshal.dumps(("o", 1, ITEMS)), b"E3\x00m\xdd\xff\xff\xff\xff",
                                  b"E3\x07", b"E3\x00q" + b"x" * 10, b"E3\x00m" + msgpack.packb([1, 2, 3, 4])],
                         ids=["empty", "the old marshal form", "lying length", "bad flag", "bad body kind",
                              "bad fields"])
def test_malformed_envelopes_are_wire_errors(data):
    with pytest.raises(wire.WireError):
        wire.unpack_envelope(data, None)


def test_an_envelope_carries_what_msgpack_cannot_in_serpent():
    items = [("s", Event("inner", 1, 2.0), 3.0)]
    [(subject, msg, when)] = wire.unpack_envelope(wire.pack_envelope("o", 1, items, KEY), KEY)[3]
    assert (subject, when) == ("s", 3.0) and msg == Event("inner", 1, 2.0)


@pytest.mark.parametrize("data", [{"subject": "s", "msg": 1, "time": 2.0},
                                  {"__class__": wire.EVENT_CLASS_TAG, "subject": "s", "msg": 1, "time": 2}])
def test_an_event_dict_becomes_an_event(data):
    assert Event.from_dict(data) == Event("s", 1, data["time"])


@pytest.mark.parametrize("data", [{"subject": 1, "msg": 1, "time": 2.0}, {"subject": "s", "time": 2.0},
                                  {"subject": "s", "msg": 1, "time": "now"}, ["s", 1, 2.0]], ids=repr)
def test_a_dict_that_is_no_event_is_a_value_error(data):
    with pytest.raises(ValueError):
        Event.from_dict(data)


@pytest.mark.parametrize("count", [0, 1, 5, 6, 1000, 21_846])  # array headers: fixarray, array 16, array 32
def test_events_packed_one_by_one_join_into_the_same_batch(count):
    items = [(f"s{n}", {"n": n, "t": (n, "x")}, float(n)) for n in range(count)]
    joined = wire.pack_parts([wire.pack_event(*item) for item in items])
    assert joined == wire.pack(items) and wire.unpack(joined) == items
