"""Request/reply: a responder answers requests on "calc.double"; a client asks and gets
the first answer back, or a NoResponderError (a TimeoutError) naming the subject when
nobody answers.

Run against an es found the usual Pyro5 way:  python examples/request_reply.py
"""

import sys

from eventservice import NoResponderError, Publisher, Subscriber


class Doubler(Subscriber):
    """A responder: whatever respond() returns is the answer (None too); what it raises
    reaches the requester as a RemoteError."""

    def respond(self, event):
        return event.msg * 2


def main() -> int:
    with Doubler() as doubler:
        doubler.subscribe("calc.double")
        doubler.start()
        with Publisher() as client:
            answer = client.request("calc.double", 21, timeout=5)
            print(f"asked calc.double to double 21: got {answer}")
            try:
                client.request("calc.nobody", 1, timeout=1)
                print("calc.nobody answered, but nobody listens there")
                return 1
            except NoResponderError as exc:
                print(f"asked {exc.subject}: {exc}")
    return 0 if answer == 42 else 1


if __name__ == "__main__":
    sys.exit(main())
