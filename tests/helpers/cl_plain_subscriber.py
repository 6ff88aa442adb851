"""A plain Pyro5 subscriber that never imports eventservice: subscribes to the subjects given
and prints each event's message as one JSON line (``EVENT <json>``).

    python cl_plain_subscriber.py SUBJECT...
"""

import json
import sys

import Pyro5.api


@Pyro5.api.expose
class Plain:
    def event(self, event):
        print("EVENT " + json.dumps({"type": type(event).__name__, "msg": event["msg"],
                                     "subject": event["subject"]}), flush=True)


def main():
    assert "eventservice" not in sys.modules
    daemon = Pyro5.api.Daemon()
    uri = daemon.register(Plain())
    service = Pyro5.api.Proxy("PYRONAME:Pyro.EventService")
    service.subscribe(sys.argv[1:], Pyro5.api.Proxy(uri))
    service._pyroRelease()
    print("subscribed", flush=True)
    daemon.requestLoop()


if __name__ == "__main__":
    main()
