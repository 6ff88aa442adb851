"""An asyncio publisher and subscriber exchanging dataclass events.

    python asyncio_typed.py          # needs a running es (found through the name server)

The subscriber has a coroutine handler for trades and iterates over the quotes with
``async for``; the publisher sends Quote and Trade instances, which arrive as themselves.
Exits 0 when everything arrived as it should, 1 otherwise.
"""

import asyncio
import sys
from dataclasses import dataclass, field
from typing import List

from Pyro5.errors import PyroError

from eventservice import AsyncPublisher, AsyncSubscriber, register_type

DEADLINE = 10.0  # seconds to wait for the events


@register_type  # once per class, in the publisher and in every subscriber
@dataclass
class Quote:
    symbol: str
    price: float


@register_type
@dataclass
class Trade:
    symbol: str
    quantity: int
    fills: List[Quote] = field(default_factory=list)  # registered types nest


@dataclass
class Unregistered:  # nobody called register_type for it
    note: str


async def main():
    trades = []
    trades_done = asyncio.Event()

    async with AsyncSubscriber() as subscriber:
        @subscriber.on("trades")
        async def on_trade(event):  # a coroutine handler: its own task, one event at a time
            trade = event.msg
            print(f"  trade: {trade}", flush=True)
            trades.append(trade)
            if len(trades) == 2:
                trades_done.set()

        await subscriber.flush()  # the handler's subscription reached the service
        async with subscriber.subscription(r"quotes\.", match=True) as quotes:
            async with AsyncPublisher(batch=True) as publisher:  # queue, send in batches
                for price in (22.44, 22.46, 22.50):
                    await publisher.publish("quotes.SUN", Quote("SUN", price))
                await publisher.flush()
            async with AsyncPublisher() as publisher:  # returns once the service accepted it
                await publisher.publish("trades", Trade("SUN", 100, [Quote("SUN", 22.46)]))
                await publisher.publish("trades", Trade("IBM", 5))
                try:
                    await publisher.publish("trades", Unregistered("never sent"))
                    print("  an unregistered class went out", flush=True)
                    return 1
                except TypeError as exc:
                    print(f"  refused before sending: {exc}", flush=True)

            received = []

            async def three_quotes():
                async for event in quotes:
                    print(f"  quote: {event.subject} {event.msg}", flush=True)
                    received.append(event.msg)
                    if len(received) == 3:
                        return

            try:
                await asyncio.wait_for(three_quotes(), DEADLINE)
                await asyncio.wait_for(trades_done.wait(), DEADLINE)
            except asyncio.TimeoutError:
                print("  timed out", flush=True)
                return 1
            print(f"  dropped by the quotes buffer: {quotes.dropped}", flush=True)

    ok = (received == [Quote("SUN", 22.44), Quote("SUN", 22.46), Quote("SUN", 22.50)]
          and trades == [Trade("SUN", 100, [Quote("SUN", 22.46)]), Trade("IBM", 5)]
          and all(isinstance(t.fills, list) for t in trades))
    print("dataclass events arrived as themselves" if ok else "SOMETHING WAS WRONG", flush=True)
    return 0 if ok else 1


def run():
    try:
        return asyncio.run(main())
    except (PyroError, OSError) as exc:
        print(f"cannot reach the event service: {exc}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(run())
