"""Support for the client-side tests (handlers, asyncio, typed events): one name server and
``es`` shared by a module's tests, running a coroutine under a chosen loop, and counting
this process's threads and sockets."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Callable, Coroutine, Iterator, List, Tuple

import psutil
import Pyro5
import pytest

from conftest import HOST, Cluster, EsProc, wait_for

LOOPS = ["asyncio", "uvloop"]


@contextlib.contextmanager
def shared_cluster() -> Iterator[Tuple[Cluster, EsProc]]:
    """A name server and an ``es`` for a whole module; Pyro5 in this process points there."""
    cluster = Cluster()
    with pytest.MonkeyPatch.context() as mp:
        for key in ("PYRO_NS_HOST", "PYRO_NS_PORT", "PYRO_NS_BCPORT", "PYRO_HOST"):
            mp.setenv(key, cluster.env[key])
        mp.delenv("EVENTSERVICE_IDENT", raising=False)
        mp.setattr(Pyro5.config, "NS_HOST", HOST)
        mp.setattr(Pyro5.config, "NS_PORT", cluster.ns_port)
        mp.setattr(Pyro5.config, "NS_BCPORT", int(cluster.env["PYRO_NS_BCPORT"]))
        mp.setattr(Pyro5.config, "HOST", HOST)
        try:
            cluster.start_ns()
            yield cluster, cluster.es("--heartbeat", "0")
        finally:
            cluster.close()


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]], loop: str, timeout: float = 60) -> Any:
    """Run ``coro_fn()`` to completion in a fresh loop of kind ``loop`` ("asyncio" or "uvloop")."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)
    if loop == "asyncio":
        return asyncio.run(bounded())
    uvloop = pytest.importorskip("uvloop")
    ev = uvloop.new_event_loop()
    try:
        return ev.run_until_complete(bounded())
    finally:
        ev.run_until_complete(ev.shutdown_asyncgens())
        ev.close()


async def until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Await until ``condition()`` is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.002
    while True:
        result = condition()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


PROCESS_WIDE_THREADS = {"es-reaper"}  # eventservice.daemon's one deadline thread per process, not per client


def threads() -> List[str]:
    """Names of this process's live threads (except the process-wide ones)."""
    return sorted(t.name for t in threading.enumerate() if t.name not in PROCESS_WIDE_THREADS)


def sockets() -> List[Any]:
    """This process's open inet sockets (psutil)."""
    proc = psutil.Process()
    getter = getattr(proc, "net_connections", None) or proc.connections
    return sorted((c.laddr, c.raddr, c.status) for c in getter(kind="inet"))


def wait_back_to(baseline_threads: List[str], baseline_sockets: List[Any], timeout: float = 10.0) -> None:
    """Wait until threads and sockets are those of the baseline (TIME_WAIT does not count)."""
    def settled() -> bool:
        open_now = [s for s in sockets() if s[2] != psutil.CONN_TIME_WAIT]
        settled = [s for s in baseline_sockets if s[2] != psutil.CONN_TIME_WAIT]
        return threads() == baseline_threads and open_now == settled
    try:
        wait_for(settled, timeout, "threads and sockets back to the baseline")
    except AssertionError:
        raise AssertionError(f"threads {threads()} (baseline {baseline_threads}); "
                             f"sockets {sockets()} (baseline {baseline_sockets})") from None
