"""Coming from pysig: senders, listeners, connect/disconnect events and requests.

    pysig                                              eventservice
    ClientRouter(carrier) to a ServerRouter             an `es`; clients find it by name
    sender = router.addSender("timer", ["tick"])        Publisher(name="timer", announce=True)
    sender.getSignal("tick").trigger(data)              publisher.publish("timer.tick", data)
    addListener(cb, "timer", "tick")                    subscriber.on("timer.tick", cb)
    addListener(cb, "timer", None)  (sender broadcast)  subscriber.on_match(r"timer\\.", cb)
    addListener(cb, None, "tick")   (channel)           subscriber.on_match(r"[^.]+\\.tick$", cb)
    sig.EVENT_CONNECT / EVENT_DISCONNECT                 es.presence.publisher.joined / .left
    request_handler=... ; router.request("timer", m)     on(..., respond=True) ; publisher.request
    (a request handler's error)                          RemoteError in the requester

Run against an es found the usual Pyro5 way:  python examples/coming_from/pysig.py
"""

import sys
import threading

from Pyro5.errors import PyroError

from eventservice import Publisher, RemoteError, Subscriber


def main() -> int:
    lines = []
    seen = threading.Condition()

    def say(line):
        print(line, flush=True)
        with seen:
            lines.append(line)
            seen.notify_all()

    try:
        with Subscriber(name="listener") as listener:
            listener.start()
            listener.on("es.presence.publisher.joined", lambda e: say(f"{e.msg['name']} is now connected"))
            listener.on("es.presence.publisher.left", lambda e: say(f"{e.msg['name']} is now disconnected"))
            listener.on_match(r"timer\.", lambda e: say(f"[{e.subject}] event received with data {e.msg!r}"))

            def weather(event):  # a request handler: its answer, or its error, goes to the requester
                if event.msg.get("when") == "now":
                    return 20.2
                raise LookupError(f"no weather for {event.msg.get('when')!r}")
            listener.on("timer.getWeather", weather, respond=True)

            with Publisher(name="timer", announce=True) as sender:
                sender.publish("timer.tick", "server data")
                say(f"weather now: {sender.request('timer.getWeather', {'when': 'now'})}")
                try:
                    sender.request("timer.getWeather", {"when": "tomorrow"})
                except RemoteError as exc:
                    say(f"request failed: {exc.type_name}: {exc.message}")
            with seen:
                seen.wait_for(lambda: "timer is now disconnected" in lines, 10)
    except (PyroError, OSError) as exc:
        print(f"cannot reach the event service: {exc}")
        return 1
    wanted = ["timer is now connected", "[timer.tick] event received with data 'server data'",
              "weather now: 20.2", "timer is now disconnected"]
    return 0 if all(line in lines for line in wanted) else 1


if __name__ == "__main__":
    sys.exit(main())
