"""The backbone's pure parts, without an engine: URLs and their masking, names, engine
messages (packing, splitting, encoding, checks on the way in, duplicates, own messages)."""

from __future__ import annotations

import marshal

import msgpack
import pytest

from eventservice import Event
from eventservice.backbone import (MAX_EVENTS_PER_MESSAGE, BackboneError, check_name, engine_of, mask_url,
                                   open_backbone, split_urls)

pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[test]')")


def backbone(name: str = "space", key: "str | None" = None) -> object:
    return open_backbone(["nats://127.0.0.1:4222"], name, key=key)


@pytest.mark.parametrize("url,shown", [
    ("nats://user:pw@host:4222", "nats://user:***@host:4222"),
    ("nats://token@host:4222", "nats://***@host:4222"),
    ("tls://u:p%40ss@h:1", "tls://u:***@h:1"),
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://user:pw@host:6379", "rediss://user:***@host:6379"),
    ("redis://user@host:6379", "redis://user@host:6379"),
    ("nats://host:4222", "nats://host:4222"),
    ("error at nats://a:b@h:1, then redis://:c@h:2", "error at nats://a:***@h:1, then redis://:***@h:2"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_urls_names_and_engines() -> None:
    assert split_urls(["nats://a:1, nats://b:2", "nats://c:3", ""]) == ["nats://a:1", "nats://b:2", "nats://c:3"]
    assert engine_of("TLS://a:1") == "nats" and engine_of("rediss://a:1") == "redis"
    with pytest.raises(ValueError, match="scheme"):
        engine_of("amqp://a:1")
    assert check_name("es-prod.eu_1") == "es-prod.eu_1"
    for bad in ("", "a b", "a..b", ".a", "a.", "a*", "a>", "x" * 101):
        with pytest.raises(ValueError):
            check_name(bad)
    with pytest.raises(ValueError, match="one URL"):
        open_backbone(["redis://a:1", "redis://b:2"])
    with pytest.raises(ValueError, match="no backbone URL"):
        open_backbone([" "])


def test_secrets_are_scrubbed_from_any_text() -> None:
    bb = open_backbone(["nats://user:p%40ss@h:1", "nats://tok3n@h:2"], "x")
    assert bb.url == "nats://user:***@h:1,nats://***@h:2"
    assert bb.scrub("refused p@ss and p%40ss and tok3n") == "refused *** and *** and ***"


def test_packing_keeps_order_and_batches_runs() -> None:
    bb, rx = backbone(), backbone()
    items = [("A", 1, 1.0), ("a", 2, 1.0), ("b", 3, 1.0), ("A", 4, 1.0)] + [("c", n, 2.0) for n in range(2500)]
    messages = bb.packer.pack([(None, items[:2]), (None, items[2:])])
    # case-insensitive subjects share an engine subject; runs are never reordered
    assert [n for _, _, n in messages] == [2, 1, 1, MAX_EVENTS_PER_MESSAGE, MAX_EVENTS_PER_MESSAGE, 500]
    assert messages[0][0] == messages[2][0] == bb.channel_of("a") and messages[1][0] == bb.channel_of("B")
    assert bb.channel_of("A").startswith("space.ev.") and " " not in bb.channel_of("with space. and dots")
    out = []
    for _, payload, _ in messages:
        out += rx.unpacker.take(payload)
    assert out == items


def test_serpent_only_for_events_msgpack_cannot_carry() -> None:
    bb, rx = backbone(), backbone()
    run = [("s", b"\x00", 1.0), ("s", Event("inner", 1, 2.0), 1.0), ("s", {"b": b"\x02", "t": (1, 2)}, 1.0)]
    messages = bb.packer.pack([(None, run)])
    # an unsigned envelope: b"E3", no signature, then the body's kind (msgpack or serpent)
    assert [(payload[:4], n) for _, payload, n in messages] == [(b"E3\x00m", 1), (b"E3\x00s", 1), (b"E3\x00m", 1)]
    out = []
    for _, payload, _ in messages:
        out += rx.unpacker.take(payload)
    assert out == run  # bytes stay bytes, tuples tuples, the Event an Event


def test_too_large_event_is_left_out() -> None:
    bb = backbone()
    bb.packer.max_payload = lambda: 1000
    messages = bb.packer.pack([(None, [("s", "x" * 10, 1.0), ("s", "y" * 5000, 1.0), ("s", "z", 1.0)])])
    assert [n for _, _, n in messages] == [1, 1]


def test_checks_on_the_way_in() -> None:
    bb, rx = backbone(), backbone()

    def envelope(origin: str, seq: int, flat: list) -> bytes:
        return b"E3\x00m" + msgpack.packb([origin, seq, {}, flat])
    assert rx.unpacker.take(b"garbage") is None and rx.unpacker.take(b"E3\x00mgarbage") is None
    assert rx.unpacker.take(b"E3\x00m" + msgpack.packb([1, 2, 3])) is None
    assert rx.unpacker.take(b"M1" + marshal.dumps(("other", 1, [("ok", 1, 1.0)]), 4)) is None  # never marshal
    assert rx.unpacker.invalid == 4
    good = rx.unpacker.take(envelope("other", 1, ["ok", 1, 1.0, "list", 2, 2, "ES.Presence.x", 3, 1.0,
                                            "", 4, 1.0, "t", 5, "now", 1, 2, 3]))
    assert good == [("ok", 1, 1.0), ("list", 2, 2)] and rx.unpacker.invalid == 4 + 4
    assert rx.unpacker.take(envelope("other", 2, ["ok", 1, 1.0, "short"])) is None and rx.unpacker.invalid == 4 + 4 + 1
    # a seq not above the last one from that origin is a duplicate; own messages are dropped
    assert rx.unpacker.take(envelope("other", 1, ["ok", 1, 1.0])) is None and rx.unpacker.duplicates == 1
    assert rx.unpacker.take(envelope("other", 5, ["ok", 1, 1.0])) == [("ok", 1, 1.0)]
    assert rx.unpacker.take(envelope("third", 1, ["ok", 1, 1.0])) == [("ok", 1, 1.0)]
    own = bb.packer.pack([(None, [("ok", 1, 1.0)])])[0][1]
    assert bb.unpacker.take(own) is None and rx.unpacker.take(own) == [("ok", 1, 1.0)]


def test_with_a_key_only_envelopes_signed_with_it_are_taken() -> None:
    signer, stranger = backbone(key="s3cret"), backbone()
    checker, other_key = backbone(key="s3cret"), backbone(key="another")
    signed = signer.packer.pack([(None, [("ok", 1, 1.0)])])[0][1]
    unsigned = stranger.packer.pack([(None, [("ok", 2, 1.0)])])[0][1]
    assert checker.unpacker.take(signed) == [("ok", 1, 1.0)]
    assert checker.unpacker.take(unsigned) is None and checker.unpacker.forged == 1
    assert other_key.unpacker.take(signed) is None and other_key.unpacker.forged == 1
    assert stranger.unpacker.take(signed) is None and stranger.unpacker.forged == 1  # a key it does not have
    assert checker.unpacker.invalid == other_key.unpacker.invalid == 0
    assert checker.stats()["forged"] == 1 and checker.stats()["signed"] is True


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    real = builtins.__import__

    def refuse(name: str, *args: object, **kwargs: object) -> object:
        if name == "redis.asyncio" or name.startswith("redis"):
            raise ImportError("no redis here")
        return real(name, *args, **kwargs)
    monkeypatch.delitem(__import__("sys").modules, "eventservice.backbone.redis", raising=False)
    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(BackboneError, match=r'pip install "eventservice\[redis\]"'):
        open_backbone(["redis://127.0.0.1:6379"])
