"""Requests between real processes: a responder's error reaches the requester as RemoteError
(type name and text) at once, None is an answer, "no reply in time" stays a TimeoutError, and
only a subscriber that answers is a responder (the others get the request as an event)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, List

import Pyro5.api
import pytest

from eventservice import AsyncPublisher, AsyncSubscriber, NoResponderError, Publisher, RemoteError, Subscriber, wire

class QuoteError(Exception):
    """An error class of the responder's own."""


def test_a_raising_responder_is_a_remote_error_at_once_and_none_is_an_answer(es, make_subscriber):
    class Desk(Subscriber):
        def respond(self, event):
            if event.msg == "bad":
                raise QuoteError("no quote for bad")
            if event.msg == "zero":
                return 1 / 0
            return None  # an answer like any other

    make_subscriber(cls=Desk).subscribe("quote")
    with Publisher() as client:
        started = time.monotonic()
        with pytest.raises(RemoteError) as raised:
            client.request("quote", "bad", timeout=5)
        assert time.monotonic() - started < 2, "the error came at once, not at the timeout"
        assert (raised.value.type_name, raised.value.message) == (f"{__name__}.QuoteError", "no quote for bad")
        assert not isinstance(raised.value, TimeoutError)
        with pytest.raises(RemoteError, match="ZeroDivisionError: division by zero") as raised:
            client.request("quote", "zero", timeout=5)
        assert raised.value.type_name == "ZeroDivisionError"
        assert client.request("quote", "fine", timeout=5) is None
        with pytest.raises(NoResponderError):
            client.request("nobody.here", None, timeout=0.5)


def test_responder_handlers_answer_and_raise_and_plain_handlers_do_not(es, make_subscriber):
    sub = make_subscriber()
    sub.on("calc", lambda event: event.msg * 2, respond=True)
    seen: List[Any] = []
    sub.on("calc", seen.append)  # a plain handler on the same subject answers nothing

    @sub.on_match(r"fail\.", respond=True)
    def fail(event):
        raise ValueError(f"cannot {event.subject}")

    with Publisher() as client:
        assert client.request("calc", 21) == 42
        with pytest.raises(RemoteError, match="ValueError: cannot fail.now") as raised:
            client.request("fail.now")
        assert raised.value.type_name == "ValueError"
    assert seen == [], "a request goes to the responder, not to the plain handlers as well"


def test_a_subscriber_that_only_overrides_event_gets_the_request_as_an_event(es, make_subscriber):
    listener = make_subscriber()  # overrides event() only (the fixture's recorder)
    listener.subscribe("jobs")
    with Publisher() as client:
        started = time.monotonic()
        with pytest.raises(NoResponderError, match="no responder") as raised:
            client.request("jobs", {"n": 1}, timeout=5)
        assert time.monotonic() - started < 3 and raised.value.timeout is None
    events = listener.recorder.wait_count(1)
    assert [(e.subject, e.msg) for e in events] == [("jobs", {"n": 1})]


def test_an_async_subscriber_answers_with_group_and_filter(es):
    async def main() -> List[Any]:
        async with AsyncSubscriber() as first, AsyncSubscriber() as second:
            async def double(event):
                await asyncio.sleep(0)
                return ["first", event.msg["n"] * 2]
            first.on("work", double, respond=True, group="calc", filter=[">", "n", 0])
            second.on("work", lambda event: ["second", event.msg["n"] * 2], respond=True, group="calc",
                      filter=[">", "n", 0])

            @first.on("boom", respond=True)
            async def boom(event):
                raise KeyError("missing")
            await first.flush()
            await second.flush()
            async with AsyncPublisher() as client:
                answers = [await client.request("work", {"n": n}) for n in range(1, 7)]
                with pytest.raises(NoResponderError):
                    await client.request("work", {"n": -1}, timeout=0.5)  # the filter lets nobody answer
                with pytest.raises(RemoteError) as raised:
                    await client.request("boom")
                assert raised.value.type_name == "KeyError"
        return answers
    answers = asyncio.run(main())
    assert [n for _, n in answers] == [2, 4, 6, 8, 10, 12]
    assert {who for who, _ in answers} == {"first", "second"}, "the group shares the requests"


@Pyro5.api.expose
class PlainResponder:
    """A plain Pyro5 responder."""

    def event(self, event: Any) -> None:
        pass

    def respond(self, request: Any) -> Any:
        if request["msg"] == "builtin":
            raise LookupError("nothing there")
        if request["msg"] == "own":
            raise QuoteError("mine")
        return None


def test_plain_pyro5_responders_and_requesters(es):
    daemon = Pyro5.api.Daemon(host="127.0.0.1")
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    try:
        service = es.proxy()
        service.subscribe("plain", Pyro5.api.Proxy(daemon.register(PlainResponder())))
        assert service.request("plain", "none", 5) is None
        with pytest.raises(RuntimeError, match="raised LookupError: nothing there"):
            service.request("plain", "builtin", 5)
        with Publisher() as client:
            with pytest.raises(RemoteError) as raised:
                client.request("plain", "builtin")
            assert (raised.value.type_name, raised.value.message) == ("LookupError", "nothing there")
            with pytest.raises(RemoteError, match=r"QuoteError") as raised:
                client.request("plain", "own")  # a class es cannot decode: named in the text
            assert raised.value.type_name == "SerializeError"
        with pytest.raises(TimeoutError, match="no responder"):
            service.request("nobody", None, 1)
    finally:
        daemon.shutdown()
        thread.join(5)


def test_junk_packed_requests_are_a_value_error_and_the_service_keeps_answering(es, make_subscriber):
    make_subscriber().on("echo", lambda event: event.msg, respond=True)
    service = es.proxy()
    service._pyroSerializer = "msgpack"
    for junk in (b"", b"x", b"m\xc1", wire.pack_value(["echo", 1]), wire.pack_value([1, 2, 3])):
        with pytest.raises(ValueError):
            service.requestPacked(junk)
    with pytest.raises(TypeError):
        service.requestPacked("not bytes")
    kind, answer = wire.unpack_reply(service.requestPacked(wire.pack_request("echo", {"a": 1}, 5)))
    assert (kind, answer) == (wire.ANSWERED, {"a": 1})
