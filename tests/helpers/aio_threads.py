"""An asyncio program that receives events three ways and ends each way the issue named
(aclose(), leaving async with, cancelling a task in async for); after each it prints the
threads still running once they had 2 s to end ("after <way>: threads [...]"), and exits 0
when none but the main thread was left after all three."""

import asyncio
import sys
import threading
import time

from eventservice import AsyncPublisher, AsyncSubscriber

SUBJECT = "aio.threads"


def others():
    return sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())


async def settle(way):
    deadline = time.monotonic() + 2
    while others() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    print(f"after {way}: threads {others()}", flush=True)
    return not others()


async def receive(sub):
    async with sub.subscription(SUBJECT) as events:
        async with AsyncPublisher() as pub:
            await pub.publish(SUBJECT, 1)
        async for _ in events:
            return


async def by_aclose():
    sub = AsyncSubscriber()
    await sub.start()
    await receive(sub)
    await sub.aclose()


async def by_async_with():
    async with AsyncSubscriber() as sub:
        await receive(sub)


async def by_cancelling():
    started = asyncio.Event()

    async def consume():
        async with AsyncSubscriber() as sub:
            async with sub.subscription(SUBJECT) as events:
                started.set()
                async for _ in events:
                    pass
    task = asyncio.ensure_future(consume())
    await started.wait()
    async with AsyncPublisher() as pub:
        await pub.publish(SUBJECT, 1)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def main():
    clean = True
    for way, run in (("aclose()", by_aclose), ("async with", by_async_with), ("cancelling", by_cancelling)):
        await run()
        clean = await settle(way) and clean
    return 0 if clean else 1


sys.exit(asyncio.run(main()))
