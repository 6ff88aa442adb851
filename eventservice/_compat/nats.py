"""nats-py, for the messages of several subscriptions in the order they came off the socket.
Tested with nats-py 2.6.0 and 2.16.0 (``tests/test_compat.py``).

NATS delivers the messages of one publishing connection to one subscribing connection in
order, across subjects; the backbone's per-origin sequence numbers rely on it (a lower seq
after a higher one is dropped as a duplicate). nats-py has no public way to receive the
messages of *several* subscriptions in that order:

- with a callback, each subscription has a task of its own (``Subscription._wait_for_msgs``)
  that takes messages from that subscription's queue; a task whose queue holds several
  messages hands them all to its callback before another subscription's task runs
  (``Queue.get`` on a non-empty queue does not yield), so messages A1 B2 A3 that came in
  one read reach the callbacks as A1 A3 B2 (reported as nats-io/nats.py issue #90);
- without one (``Subscription.next_msg``, ``Subscription.messages``), each subscription has
  a queue of its own, and nothing tells in which queue the next message in socket order is:
  a ``Msg`` carries no arrival number;
- one subscription on the whole space (``<name>.ev.>``) would keep the order but bring
  every event of the space to every ``es``, undoing interest routing.

So :class:`OrderedClient` overrides the one private method between the protocol parser and
those queues. It relies on exactly this:

- the protocol parser awaits ``Client._process_msg(sid, subject, reply, data, headers)``
  once for each MSG or HMSG, on the loop, in the order they came off the socket, with
  ``subject`` and ``data`` as bytes (``nats/protocol/parser.py``);
- ``Client.stats`` is a dict whose ``"in_msgs"`` and ``"in_bytes"`` nats-py counts in
  ``_process_msg`` (one and ``len(data)`` per message): the client keeps counting them for
  the messages it takes, so the stats read as nats-py's own.

Messages are told apart by subject, not by subscription id: an id is known only when
``subscribe()`` returns, and ``subscribe()`` may yield to the loop (waiting on the flusher's
queue), which may read messages for that id before it returns.
"""

from __future__ import annotations

from typing import Any, Callable

from nats.aio.client import Client

TESTED_VERSIONS = ("2.6.0", "2.16.0")


class OrderedClient(Client):
    """A nats-py ``Client`` that hands the payload of every message whose subject starts with
    ``prefix`` to ``on_message``, on the loop, in the order the messages came off the socket,
    instead of queueing it for a subscription. Subscriptions on such subjects are made
    without a callback (``await client.subscribe(subject)``); they only tell the server what
    to send, and their own queues stay empty. Messages on other subjects take nats-py's
    usual path. ``on_message`` must not block: it runs in the connection's read loop."""

    def __init__(self, prefix: str, on_message: Callable[[bytes], None]) -> None:
        super().__init__()
        self._es_prefix = prefix.encode()
        self._es_on_message = on_message

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes,
                           headers: Any, *more: Any) -> None:
        if subject.startswith(self._es_prefix):
            self.stats["in_msgs"] += 1
            self.stats["in_bytes"] += len(data)
            self._es_on_message(data)
            return
        await super()._process_msg(sid, subject, reply, data, headers, *more)
