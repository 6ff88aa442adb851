"""A client process for the tests of the seed systems' habits; it runs until killed.

    seed_client.py publisher NAME                     an announced Publisher that waits
    seed_client.py subscriber NAME SUBJECT [GROUP]    a Subscriber (in GROUP) printing "got MSG" per event

Each prints "ready" once it is connected (subscribed).
"""

import sys
import threading

from eventservice import Publisher, Subscriber


def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Printer(Subscriber):
    def event(self, event):
        say(f"got {event.msg}")


role, name = sys.argv[1], sys.argv[2]
if role == "publisher":
    client = Publisher(name=name, announce=True)
else:
    client = Printer(name=name)
    client.start()
    client.subscribe(sys.argv[3], group=sys.argv[4] if len(sys.argv) > 4 else None)
say("ready")
threading.Event().wait()
