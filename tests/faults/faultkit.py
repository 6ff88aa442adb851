"""Small tools shared by the fault tests (not a test module): reading helper output,
finding a subscriber process's key in ``stats(True)``, sampling an ``es`` process with psutil,
timing calls."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil
import Pyro5.api

from conftest import HOST, Proc, wait_for


def proxy(uri: str, timeout: float = 10.0) -> Pyro5.api.Proxy:
    """A plain Pyro5 proxy of the service with a call timeout."""
    p = Pyro5.api.Proxy(uri)
    p._pyroTimeout = timeout
    return p


def timed(fn: Callable[[], Any]) -> Tuple[Any, float]:
    """(result, seconds) of one call."""
    begun = time.monotonic()
    result = fn()
    return result, time.monotonic() - begun


def events_of(proc: Proc) -> List[Dict[str, Any]]:
    """The events a ``subscriber.py`` process printed so far (its JSON lines)."""
    found = []
    for line in list(proc.stdout):
        if line.startswith("{"):
            item = json.loads(line)
            if "msg" in item:
                found.append(item)
    return found


def seqs_of(proc: Proc, src: Optional[str] = None) -> List[int]:
    """The ``seq`` of each event a ``subscriber.py`` process printed, in arrival order
    (only messages from publisher ``src`` when given)."""
    return [e["msg"]["seq"] for e in events_of(proc)
            if isinstance(e["msg"], dict) and (src is None or e["msg"].get("src") == src)]


def done_line(proc: Proc, timeout: float = 60.0) -> Dict[str, Any]:
    """The JSON of a helper's ``DONE {...}`` line, waiting for it."""
    return json.loads(proc.wait_line(r"^DONE (\{.*\})$", timeout).group(1))


def listening_port(pid: int) -> int:
    """The TCP port a process listens on (a subscriber process has exactly one daemon)."""
    def port() -> Optional[int]:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                return conn.laddr.port
        return None
    return wait_for(port, 10, f"process {pid} to listen")


def key_of(per_subscriber: Dict[str, Any], port: int) -> Optional[str]:
    """The key (callback URI) in ``stats(True)["per_subscriber"]`` of the subscriber on ``port``."""
    for key in per_subscriber:
        if key.endswith(f"@{HOST}:{port}"):
            return key
    return None


def quiescent(counters: Dict[str, Any]) -> bool:
    """Nothing queued or in a call: every posted event is delivered or dropped."""
    return counters["queued"] == 0 and counters["posted"] == counters["delivered"] + counters["dropped"]


def connection_count(pid: int) -> int:
    """Open TCP sockets of a process (listening and connected)."""
    return len(psutil.Process(pid).net_connections(kind="tcp"))


class Sampler(threading.Thread):
    """Samples a process every ``interval`` seconds: RSS (bytes), threads, TCP sockets."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(name="sampler", daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: List[Tuple[float, int, int, int]] = []  # (t, rss, threads, sockets)
        self.halt = threading.Event()
        self.error: Optional[BaseException] = None

    def sample(self) -> Tuple[float, int, int, int]:
        with self.process.oneshot():
            return (time.monotonic(), self.process.memory_info().rss, self.process.num_threads(),
                    len(self.process.net_connections(kind="tcp")))

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.samples.append(self.sample())
            except psutil.Error as exc:  # the process died: the test will say so
                self.error = exc
                return
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)

    def thirds(self, column: int) -> Tuple[List[int], List[int], List[int]]:
        values = [s[column] for s in self.samples]
        n = len(values) // 3
        return values[:n], values[n:len(values) - n], values[len(values) - n:]


def mb(n: float) -> float:
    return round(n / 2**20, 1)


def raw_connect(uri: str) -> socket.socket:
    """A raw TCP connection to the daemon of ``uri``."""
    location = Pyro5.api.URI(uri)
    sock = socket.create_connection((location.host, location.port), timeout=5)
    return sock


def wait_eof(sock: socket.socket, timeout: float) -> float:
    """Seconds until the far side closed ``sock`` (EOF or reset), reading and discarding
    whatever it sends first; AssertionError if it stays open ``timeout`` seconds."""
    begun = time.monotonic()
    deadline = begun + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"connection still open after {timeout}s")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout}s") from None
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - begun
        if not data:
            return time.monotonic() - begun
