"""Plain functions as handlers: attached by a call or a decorator, to exact subjects and
patterns, removed again; a handler that raises; then the two-line shortcut.

    python handlers.py          # needs a running es (found through the name server)

Exits 0 when every handler saw what it should, 1 otherwise.
"""

import sys
import threading
import time

from Pyro5.errors import PyroError

import eventservice
from eventservice import Publisher, Subscriber

DEADLINE = 10.0  # seconds to wait for the events


def say(text):
    """Print one line in one write (handlers print from other threads)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Seen:
    """What the handlers saw, and a way to wait for it."""

    def __init__(self):
        self.lines = []
        self.changed = threading.Condition()

    def add(self, line):
        with self.changed:
            self.lines.append(line)
            self.changed.notify_all()
        say("  " + line)

    def wait_for(self, count):
        with self.changed:
            return self.changed.wait_for(lambda: len(self.lines) >= count, DEADLINE)


def handlers_on_a_subscriber(seen):
    say("1. handlers on a Subscriber")
    with Subscriber() as subscriber, Publisher() as publisher:
        subscriber.start()  # listen in a background thread

        def sun(event):  # a plain function, attached by a call
            seen.add(f"sun: {event.subject} {event.msg}")

        subscriber.on("stockquotes.SUN", sun)

        @subscriber.on_match(r"stockquotes\.")  # a decorator, with a pattern
        def every_quote(event):
            seen.add(f"every quote: {event.subject} {event.msg}")

        @subscriber.on("stockquotes.IBM")
        def broken(event):
            raise RuntimeError("this handler is broken (on purpose)")

        # the error callback gets what a handler raised; the others run anyway
        subscriber.on_error = lambda exc, event, handler: seen.add(f"error callback: {handler.__name__}: {exc}")

        publisher.publish("stockquotes.SUN", 22.44)  # sun and every_quote: once each
        publisher.publish("stockquotes.IBM", 101.5)  # every_quote, and broken raises
        if not seen.wait_for(4):
            return False

        subscriber.remove_handler(every_quote)  # sun stays
        subscriber.remove_handler(broken)
        publisher.publish("stockquotes.SUN", 22.50)
        publisher.publish("stockquotes.IBM", 102.0)  # nobody wants it any more
        if not seen.wait_for(5):
            return False
        say(f"   handlers left: {[h.__name__ for h in subscriber.handlers()]}")
    expected = {"sun: stockquotes.SUN 22.44", "every quote: stockquotes.SUN 22.44",
                "every quote: stockquotes.IBM 101.5",
                "error callback: broken: this handler is broken (on purpose)", "sun: stockquotes.SUN 22.5"}
    return set(seen.lines) == expected and len(seen.lines) == 5


def two_line_shortcut():
    say("2. the two-line shortcut")
    greeted = threading.Event()

    eventservice.register("greetings", lambda event: (say(f"  got {event.msg!r}"), greeted.set()))
    eventservice.emit("greetings", "hello from handlers.py")

    return greeted.wait(DEADLINE)  # the shared clients are closed at exit


def main():
    started = time.monotonic()
    try:
        ok = handlers_on_a_subscriber(Seen())
        ok = two_line_shortcut() and ok
    except (PyroError, OSError) as exc:
        say(f"cannot reach the event service: {exc}")
        return 1
    say(f"{'all handlers saw what they should' if ok else 'SOMETHING WAS MISSING'} "
        f"({time.monotonic() - started:.1f}s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
