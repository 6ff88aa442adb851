"""Coming from leap.common.events: the same calls, with `es` in the place of leap's events
server (it needs no fixed ports: clients find it through the name server).

    leap                                              eventservice
    register(catalog.CLIENT_UID, callback=mycbk)      register("CLIENT_UID", mycbk)
    def mycbk(event, *content)                        the same: the subject, then the content
    emit(catalog.CLIENT_UID, "a", "b")                emit("CLIENT_UID", "a", "b")
    register(..., uid="x", replace=True)              the same
    unregister(event) / unregister(event, uid="x")    the same

Run against an es found the usual Pyro5 way:  python examples/coming_from/leap.py
"""

import sys
import threading

from Pyro5.errors import PyroError

from eventservice import emit, register, unregister

CLIENT_UID = "catalog.CLIENT_UID"
got = []
both = threading.Event()


def mycbk(event, *content):
    print(f"{event}: {content}", flush=True)
    got.append(content)
    if len(got) == 2:
        both.set()


def main() -> int:
    try:
        register(CLIENT_UID, callback=mycbk, uid="printer")
        emit(CLIENT_UID)
        emit(CLIENT_UID, "alice@example.org", 42)
    except (PyroError, OSError) as exc:
        print(f"cannot reach the event service: {exc}")
        return 1
    arrived = both.wait(10)
    unregister(CLIENT_UID, uid="printer")
    return 0 if arrived and got == [(), ("alice@example.org", 42)] else 1


if __name__ == "__main__":
    sys.exit(main())
