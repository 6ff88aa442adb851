"""Coming from aiodistbus: an asyncio bus, `*` wildcards on dotted event types, dataclass
events.

    aiodistbus                                   eventservice
    DEventBus(ip, port) (the server)             an `es`; clients find it by name
    EntryPoint().connect(...)                    AsyncSubscriber() / AsyncPublisher()
    await e.on("sensor.*", handler, Reading)     sub.on_glob("sensor.*", handler)  (a regex: on_match)
    await e.emit("sensor.temp", Reading(...))    await pub.publish("sensor.temp", Reading(...))
    a dataclass as the event's data              register_type(Reading) on both sides
    (a type only the sender knows)               a dict with "__es_type__"; event.type_name names it
    the pulse (is the server alive?)             on_disconnect= / on_reconnect=

Run against an es found the usual Pyro5 way:  python examples/coming_from/aiodistbus.py
"""

import asyncio
import sys
from dataclasses import dataclass

from Pyro5.errors import PyroError

from eventservice import AsyncPublisher, AsyncSubscriber, register_type


@register_type
@dataclass
class Reading:
    sensor: str
    value: float


async def main() -> int:
    got = []
    async with AsyncSubscriber() as sub:
        @sub.on_glob("sensor.*")
        async def on_reading(event):
            print(f"{event.subject}: {event.msg} (type {event.type_name})", flush=True)
            got.append(event.msg)

        async with sub.subscription("*", glob=True) as everything:
            await sub.flush()
            async with AsyncPublisher() as pub:
                await pub.publish("sensor.temp", Reading("temp", 21.5))
                await pub.publish("sensor.humidity.inside", Reading("humidity", 40.0))
                await pub.publish("door.open", {"door": "front"})
            subjects = [(await everything.get()).subject for _ in range(3)]
            print(f"'*' saw {subjects}", flush=True)
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.05)
    return 0 if got == [Reading("temp", 21.5), Reading("humidity", 40.0)] else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except (PyroError, OSError) as exc:
        print(f"cannot reach the event service: {exc}")
        sys.exit(1)
