"""Coming from twisted_event_dispatcher: handlers with keyword match specs, events that are
namedtuples.

    twisted_event_dispatcher                           eventservice
    EventDispatcher(allowed_match_spec_keywords=...)    an `es` (any field of a dict message)
    add_event_handler(notify_admin, 'during')           sub.on("user.created", notify_admin)
    add_event_handler(h, 'during', role='user')         sub.on(..., h, filter=["==", "role", "user"])
    fire_event(event, event_type=..., role=...)         publisher.publish("user.created", event)
    remove_event_handler(handler_id)                    sub.remove_handler(h)
    a namedtuple event                                  register_type(UserEvent) on both sides

The filters run in the service: one subscriber carries all the filtered handlers, and an
event no handler wants is not sent.

Run against an es found the usual Pyro5 way:  python examples/coming_from/twisted_dispatcher.py
"""

import sys
import time
from collections import namedtuple

from Pyro5.errors import PyroError

from eventservice import Publisher, Subscriber, register_type

UserEvent = register_type(namedtuple("UserEvent", ("event_type", "user", "role", "other_data")))


def main() -> int:
    calls = []
    with Subscriber() as sub, Publisher() as publisher:
        sub.start()

        def notify_admin(event):
            print(f"notify_admin: {event.msg}", flush=True)
            calls.append(("admin", event.msg.user))

        def welcome_user(event):
            print(f"welcome_user: {event.msg}", flush=True)
            calls.append(("user", event.msg.user))

        sub.on("user.created", notify_admin, filter=["==", "role", "admin"])
        sub.on("user.created", welcome_user, filter=["==", "role", "user"])
        for event in (UserEvent("user_created", "bob", "user", "1234"),
                      UserEvent("user_created", "susan", "admin", "4567"),
                      UserEvent("user_created", "guest", "visitor", "0")):
            publisher.publish("user.created", event)
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        sub.remove_handler(notify_admin)
    return 0 if sorted(calls) == [("admin", "susan"), ("user", "bob")] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (PyroError, OSError) as exc:
        print(f"cannot reach the event service: {exc}")
        sys.exit(1)
