"""How much an :class:`~eventservice.aio.AsyncSubscriber` delays its event loop while events
arrive: :func:`measure_loop_lag`, for ``es bench`` and the README's Performance section.

The lag is how late a periodic ``await asyncio.sleep(tick)`` wakes up, measured while a
publisher in a child process publishes at a steady ``rate`` and the subscriber consumes
every event with ``async for`` over a :class:`~eventservice.aio.Subscription`. The child is
``python -m eventservice.looplag SUBJECT`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, Coroutine, Dict, List, Optional

from .aio import AsyncSubscriber
from .bench.stats import quantile
from .clients import Publisher

DEFAULT_RATE = 10_000  # events per second the child publishes
DEFAULT_SECONDS = 5.0  # seconds the child publishes (and the lag is measured)
DEFAULT_TICK = 0.001  # seconds asked of asyncio.sleep between two lag samples
PUBLISH_STEP = 0.002  # seconds between two bursts of the child publisher
END = "end"  # the message that ends a measurement
START_TIMEOUT = 30.0  # seconds to wait for the first event


def measure_loop_lag(esURI: Any = None, ident: Optional[str] = None, *, rate: int = DEFAULT_RATE,
                     seconds: float = DEFAULT_SECONDS, tick: float = DEFAULT_TICK, use_uvloop: bool = False,
                     repeat: int = 1, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Measure the event loop's lag while ``rate`` events/s arrive for ``seconds``, ``repeat``
    times (each in a fresh loop: uvloop's with ``use_uvloop``), against the Event Service at
    ``esURI`` (or found by name; ``env`` is the child publisher's environment, default ours).
    Blocking; call it outside any running loop.

    Returns ``p50_ms``, ``p99_ms``, ``max_ms`` (the median over the runs of each run's
    figure), ``runs`` (each run's figures: also ``samples``, ``received``, ``dropped``,
    ``achieved_rate``), ``rate``, ``seconds``, ``tick_ms`` and ``loop``."""
    runs = [_run_loop(lambda: _measure(esURI, ident, rate, seconds, tick, env), use_uvloop) for _ in range(repeat)]
    result: Dict[str, Any] = {"loop": "uvloop" if use_uvloop else "asyncio", "rate": rate, "seconds": seconds,
                              "tick_ms": tick * 1000, "runs": runs}
    for key in ("p50_ms", "p99_ms", "max_ms", "achieved_rate"):
        result[key] = statistics.median(run[key] for run in runs)
    result["received"] = sum(run["received"] for run in runs)
    result["dropped"] = sum(run["dropped"] for run in runs)
    return result


def _run_loop(make: Callable[[], Coroutine[Any, Any, Dict[str, Any]]], use_uvloop: bool) -> Dict[str, Any]:
    if not use_uvloop:
        return asyncio.run(make())
    import uvloop  # optional: only for this measurement
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(make())
    finally:
        loop.close()


async def _measure(esURI: Any, ident: Optional[str], rate: int, seconds: float, tick: float,
                   env: Optional[Dict[str, str]]) -> Dict[str, Any]:
    subject = f"looplag.{uuid.uuid4().hex}"
    lags: List[float] = []
    async with AsyncSubscriber(ident, esURI) as sub:
        async with sub.subscription(subject) as events:
            child_env = dict(env if env is not None else os.environ)
            if ident:
                child_env["EVENTSERVICE_IDENT"] = ident
            args = [sys.executable, "-m", "eventservice.looplag", subject, "--rate", str(rate),
                    "--seconds", str(seconds)]
            if esURI is not None:
                args += ["--esuri", str(esURI)]
            child = subprocess.Popen(args, env=child_env, stdin=subprocess.DEVNULL)
            try:
                first = await asyncio.wait_for(events.get(), START_TIMEOUT)
                if first.msg == END:  # nothing was published (rate 0)
                    raise ValueError("the publisher published no events: give a rate of at least 1")
                received = 1
                started = time.monotonic()
                stop = asyncio.Event()

                async def sample() -> None:
                    loop = asyncio.get_running_loop()
                    while not stop.is_set():
                        before = loop.time()
                        await asyncio.sleep(tick)
                        lags.append(max(0.0, loop.time() - before - tick))

                async def consume() -> int:
                    count = 0
                    async for event in events:
                        if event.msg == END:
                            break
                        count += 1
                    return count

                sampler = asyncio.ensure_future(sample())
                try:
                    received += await asyncio.wait_for(consume(), seconds + START_TIMEOUT)
                finally:
                    elapsed = time.monotonic() - started
                    stop.set()
                    await sampler
            finally:
                if child.poll() is None:
                    child.kill()
                while child.poll() is None:
                    await asyncio.sleep(0.01)
            dropped = events.dropped
    ordered = sorted(lags)

    def ms(value: Optional[float]) -> float:
        return value * 1000 if value is not None else float("nan")  # nan: no sample
    return {"p50_ms": ms(quantile(ordered, 0.50)), "p99_ms": ms(quantile(ordered, 0.99)),
            "max_ms": ms(ordered[-1] if ordered else None), "samples": len(ordered),
            "received": received, "dropped": dropped, "achieved_rate": received / elapsed if elapsed > 0 else 0.0}


def publish_at_rate(subject: str, rate: int, seconds: float, esURI: Any = None) -> int:
    """Publish small dict messages on ``subject`` at ``rate`` events/s for ``seconds``, then
    the message ``"end"``; returns how many events were published (the child's job)."""
    published = 0
    with Publisher(esURI=esURI, batch=True) as publisher:
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= seconds:
                break
            due = int(elapsed * rate)
            while published < due:
                publisher.publish(subject, {"seq": published, "t": time.time()})
                published += 1
            time.sleep(PUBLISH_STEP)
        publisher.publish(subject, END)
        publisher.flush()
    return published


def main(args: Optional[List[str]] = None) -> int:
    """``python -m eventservice.looplag SUBJECT [--rate N] [--seconds S] [--esuri URI]``: the
    publisher of :func:`measure_loop_lag`."""
    parser = argparse.ArgumentParser(prog="python -m eventservice.looplag", description=main.__doc__)
    parser.add_argument("subject")
    parser.add_argument("--rate", type=int, default=DEFAULT_RATE)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--esuri", default=None)
    options = parser.parse_args(args)
    publish_at_rate(options.subject, options.rate, options.seconds, options.esuri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
