"""Content filters: a subscription carries a condition on the message's fields, given as
plain data; the service evaluates it, and events that fail it are never sent.

Run against an es found the usual Pyro5 way:  python examples/filters.py
"""

import sys
import time

from eventservice import Publisher, Subscriber

QUOTES = [{"symbol": "SUN", "price": 19.5}, {"symbol": "SUN", "price": 22.4}, {"symbol": "IBM", "price": 30.0},
          {"symbol": "SUN", "price": 25.1}, {"symbol": "SUN"}, {"symbol": "SUN", "price": 99.0, "last": True}]
EXPENSIVE_SUN = ["and", ["==", "symbol", "SUN"], [">", "price", 20]]


class Printer(Subscriber):
    def __init__(self):
        super().__init__()
        self.got = []

    def event(self, event):
        print(f"got {event.msg}")
        self.got.append(event.msg)


def main() -> int:
    with Printer() as printer:
        printer.subscribe("quotes", filter=EXPENSIVE_SUN)
        printer.start()
        print(f"subscribed to quotes where {EXPENSIVE_SUN}")
        with Publisher() as publisher:
            for quote in QUOTES:
                publisher.publish("quotes", quote)
        expected = [q for q in QUOTES if q.get("symbol") == "SUN" and q.get("price", 0) > 20]
        # events from one publisher arrive in order: once the last quote is in, all are
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(q.get("last") for q in printer.got):
            time.sleep(0.05)
        return 0 if printer.got == expected else 1


if __name__ == "__main__":
    sys.exit(main())
