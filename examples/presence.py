"""Presence: the service publishes on the reserved subjects es.presence.* when a
subscriber appears, changes its subscriptions or leaves. A watcher subscribes to them
like to any subject.

Run against an es found the usual Pyro5 way:  python examples/presence.py
"""

import sys
import time

from eventservice import Subscriber


class Watcher(Subscriber):
    def __init__(self):
        super().__init__()
        self.seen = []

    def event(self, event):
        who = event.msg.get("subscriber", "the service")
        print(f"{event.subject}: {who} subjects={event.msg.get('subjects')} patterns={event.msg.get('patterns')}")
        self.seen.append((event.subject, who))


def main() -> int:
    with Watcher() as watcher:
        watcher.subscribeMatch(r"es\.presence\.subscriber\..*")
        watcher.start()
        with Subscriber() as visitor:
            visitor.subscribe("news")                # joined
            visitor.subscribeMatch(r"weather\..*")   # changed
            key = visitor.uri
        # leaving the with block unsubscribed it from everything: left
        wanted = ["es.presence.subscriber.joined", "es.presence.subscriber.changed", "es.presence.subscriber.left"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [s for s, who in watcher.seen if who == key] != wanted:
            time.sleep(0.05)
        return 0 if [s for s, who in watcher.seen if who == key] == wanted else 1


if __name__ == "__main__":
    sys.exit(main())
