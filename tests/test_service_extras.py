"""Beyond Pyro 3 in the service: work-queue groups, content filters, request/reply,
presence and liveness, through a real es and plain Pyro5 subscribers (in this process,
each object served by a real Pyro5 daemon) and subscriber processes."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any, List

import Pyro5.api
import pytest

from conftest import wait_for


class Plain:
    """A plain Pyro5 subscriber: records events; answers requests when told to."""

    def __init__(self, name: str, answer: Any = None) -> None:
        self.name = name
        self.answer = answer
        self.events: List[Any] = []
        self.requests: List[Any] = []
        self.lock = threading.Lock()

    def msgs(self) -> List[Any]:
        with self.lock:
            return [e["msg"] if isinstance(e, dict) else e.msg for e in self.events]

    def subjects(self) -> List[str]:
        with self.lock:
            return [e["subject"] if isinstance(e, dict) else e.subject for e in self.events]


@Pyro5.api.expose
class Listener(Plain):
    def event(self, event: Any) -> None:
        with self.lock:
            self.events.append(event)


@Pyro5.api.expose
class Responder(Listener):
    def respond(self, request: Any) -> Any:
        with self.lock:
            self.requests.append(request)
        if callable(self.answer):
            return self.answer(request)
        return self.answer


@pytest.fixture
def daemon():
    """A Pyro5 daemon serving test objects from a thread."""
    d = Pyro5.api.Daemon(host="127.0.0.1")
    thread = threading.Thread(target=d.requestLoop, daemon=True)
    thread.start()
    yield d
    d.shutdown()
    thread.join(5)


def without(marker, msgs):
    return [m for m in msgs if m != marker]


def serve(daemon, obj):
    return Pyro5.api.Proxy(daemon.register(obj))


def marker_seen(service, obj, marker):
    """Publish a marker on 'marker' until ``obj`` has it (delivery is asynchronous; it may
    arrive more than once: compare with :func:`without`)."""
    def seen():
        if marker in obj.msgs():
            return True
        service.publish("marker", marker)
        return False
    wait_for(seen, 15, f"marker {marker!r} at {obj.name}")


# -- work queues -----------------------------------------------------------------------------

def test_group_members_share_events_each_once(es, daemon):
    service = es.proxy()
    members = [Listener(f"m{i}") for i in range(3)]
    outsider = Listener("outsider")
    for m in members:
        service.subscribe("jobs", serve(daemon, m), group="workers")
    service.subscribe("jobs", serve(daemon, outsider))
    for i in range(300):
        service.publish("jobs", i)
    wait_for(lambda: sum(len(m.msgs()) for m in members) >= 300 and len(outsider.msgs()) >= 300, 15, "300 events")
    got = sorted(x for m in members for x in m.msgs())
    assert got == list(range(300)), "each event to exactly one member"
    assert all(len(m.msgs()) >= 50 for m in members), [len(m.msgs()) for m in members]
    assert outsider.msgs() == list(range(300)), "a subscriber outside the group gets every event"
    for m in members:
        assert m.msgs() == sorted(m.msgs()), "per-publisher order within a member"


def test_group_member_killed_the_others_take_every_later_event(es, cluster, daemon):
    service = es.proxy()
    survivors = [Listener("a"), Listener("b")]
    for m in survivors:
        service.subscribe(["jobs", "marker"], serve(daemon, m), group="workers")
    victim = cluster.python("subscriber.py", "--plain", "jobs", name="victim")
    victim.wait_line("READY", 30)
    # the helper subscribes without a group: subscribe its object again, in the group
    stats = service.stats(True)
    [victim_key] = [k for k in stats["per_subscriber"] if "127.0.0.1" in k and k not in
                    {str(Pyro5.api.Proxy(daemon.uriFor(m))._pyroUri) for m in survivors}]
    service.subscribe("jobs", Pyro5.api.Proxy(victim_key), group="workers")
    for i in range(30):
        service.publish("jobs", {"seq": i})
    victim.kill()
    for i in range(30, 200):
        service.publish("jobs", {"seq": i})
    wait_for(lambda: service.stats()["removed"] >= 1, 20, "the killed member to be removed")
    for i in range(200, 300):
        service.publish("jobs", {"seq": i})
    later = sorted(x["seq"] for m in survivors for x in m.msgs() if isinstance(x, dict) and x["seq"] >= 200)
    wait_for(lambda: len(sorted(x["seq"] for m in survivors for x in m.msgs()
                                if isinstance(x, dict) and x["seq"] >= 200)) >= 100, 15, "later events")
    later = sorted(x["seq"] for m in survivors for x in m.msgs() if isinstance(x, dict) and x["seq"] >= 200)
    assert later == list(range(200, 300)), "every later event reaches one survivor, none twice"


def test_bad_group_is_refused_and_changes_nothing(es, daemon):
    service = es.proxy()
    obj = serve(daemon, Listener("x"))
    before = service.stats()
    with pytest.raises(TypeError):
        service.subscribe("jobs", obj, group=5)
    with pytest.raises(ValueError):
        service.subscribe("jobs", obj, group="")
    after = service.stats()
    assert after["subscribers"] == before["subscribers"] == 0
    assert after["subject_subscriptions"] == 0


# -- content filters -------------------------------------------------------------------------

def test_filter_sends_only_passing_events(es, daemon):
    service = es.proxy()
    cheap = Listener("cheap")
    sun = Listener("sun")
    service.subscribe(["quotes", "marker"], serve(daemon, cheap), filter=["or", ["<", "price", 10],
                                                                          ["==", "msg", "marker"]])
    sun_proxy = serve(daemon, sun)
    service.subscribe("quotes", sun_proxy, filter=["and", ["in", "symbol", ["SUN", "IBM"]], ["exists", "price"]])
    service.subscribe("marker", sun_proxy)
    quotes = [{"symbol": "SUN", "price": 5}, {"symbol": "SUN", "price": 50}, {"symbol": "XYZ", "price": 1},
              {"symbol": "IBM"}, "not a dict"]
    for q in quotes:
        service.publish("quotes", q)
    marker_seen(service, sun, "end")
    assert without("end", sun.msgs()) == [{"symbol": "SUN", "price": 5}, {"symbol": "SUN", "price": 50}]
    wait_for(lambda: len(cheap.msgs()) >= 2, 10, "cheap quotes")
    assert cheap.msgs()[:2] == [{"symbol": "SUN", "price": 5}, {"symbol": "XYZ", "price": 1}]


def test_filter_that_matches_nothing_sends_nothing(es, daemon):
    service = es.proxy()
    picky = Listener("picky")
    proxy = serve(daemon, picky)
    service.subscribe("quotes", proxy, filter=["==", "symbol", "NONE"])
    service.subscribe("marker", proxy)
    for i in range(50):
        service.publish("quotes", {"symbol": "SUN", "seq": i})
    marker_seen(service, picky, "end")
    assert without("end", picky.msgs()) == []
    # a delivery is counted once its call returned, a moment after the event arrived
    wait_for(lambda: list(service.stats(True)["per_subscriber"].values())[0]["delivered"] >= len(picky.msgs()),
             10, "the deliveries to be counted")
    [counters] = service.stats(True)["per_subscriber"].values()
    assert counters["posted"] == counters["delivered"] == len(picky.msgs()), counters


@pytest.mark.parametrize("bad", [["bogus", "a", 1], ["==", "a"], ["and"], "price > 3", ["==", 5, 1],
                                 ["in", "a", 5], ["==", "a", {"x": 1}], ["not", ["==", "a", 1], ["==", "b", 2]]])
def test_bad_filter_is_a_value_error_and_changes_nothing(es, daemon, bad):
    service = es.proxy()
    obj = serve(daemon, Listener("x"))
    with pytest.raises(ValueError):
        service.subscribe("quotes", obj, filter=bad)
    assert service.stats()["subject_subscriptions"] == 0


# -- request/reply ---------------------------------------------------------------------------

def test_request_gets_the_answer_of_a_responder(es, daemon):
    service = es.proxy()
    responder = Responder("r", answer=lambda req: {"echo": req["msg"], "subject": req["subject"]})
    service.subscribe("time.now", serve(daemon, responder))
    assert service.request("time.now", 42, 5) == {"echo": 42, "subject": "time.now"}


def test_request_without_responder_times_out_naming_the_subject(es, daemon):
    service = es.proxy()
    listener = Listener("l")
    service.subscribe("nobody.home", serve(daemon, listener))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="nobody.home"):
        service.request("nobody.home", 1, 1)
    assert time.monotonic() - started < 5
    with pytest.raises(TimeoutError, match="empty.subject"):
        service.request("empty.subject", 1, 1)
    wait_for(lambda: listener.msgs() == [1], 10, "the request as an ordinary event at a non-responder")


def test_request_to_a_slow_responder_times_out(es, daemon):
    service = es.proxy()
    release = threading.Event()
    slow = Responder("slow", answer=lambda req: release.wait(10) and "late")
    service.subscribe("slow", serve(daemon, slow))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="slow"):
        service.request("slow", None, 1)
    release.set()
    assert time.monotonic() - started < 5


def test_requests_are_not_mixed_into_other_subscribers_streams(es, daemon):
    service = es.proxy()
    bystander = Listener("bystander")
    service.subscribeMatch(["other.*", "marker"], serve(daemon, bystander))
    service.subscribe("ask", serve(daemon, Responder("r", answer="yes")))
    assert service.request("ask", 1, 5) == "yes"
    marker_seen(service, bystander, "end")
    assert without("end", bystander.msgs()) == []


def test_requests_to_a_group_are_load_balanced(es, daemon):
    service = es.proxy()
    members = [Responder(f"r{i}", answer=f"r{i}") for i in range(3)]
    for m in members:
        service.subscribe("work", serve(daemon, m), group="pool")
    answers = [service.request("work", i, 5) for i in range(30)]
    assert sorted(set(answers)) == ["r0", "r1", "r2"]
    assert all(len(m.requests) >= 5 for m in members), [len(m.requests) for m in members]
    assert sum(len(m.requests) for m in members) == 30, "each request asked one member"


@pytest.mark.parametrize("args,error", [((5, None, 1), TypeError), (("es.presence.x", None, 1), ValueError),
                                        (("a", None, 0), ValueError), (("a", None, "soon"), TypeError),
                                        (("a", None, 10_000), ValueError)])
def test_bad_request_arguments(es, args, error):
    with pytest.raises(error):
        es.proxy().request(*args)


def test_es_request_command(es, cluster, daemon):
    service = es.proxy()
    service.subscribe("calc.double", serve(daemon, Responder("r", answer=lambda req: req["msg"] * 2)))
    done = cluster.cli("request", "--json", "calc.double", "21")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == 42
    done = cluster.cli("request", "-t", "0.5", "calc.nobody")
    assert done.returncode != 0 and "calc.nobody" in done.stderr and "Traceback" not in done.stderr


# -- presence --------------------------------------------------------------------------------

def presence_watcher(service, daemon):
    watcher = Listener("watcher")
    service.subscribeMatch(r"es\.presence\..*", serve(daemon, watcher))
    return watcher


def test_presence_joined_changed_left(es, daemon):
    service = es.proxy()
    watcher = presence_watcher(service, daemon)
    other = serve(daemon, Listener("other"))
    service.subscribe("a", other)
    service.subscribeMatch("b.*", other)
    service.unsubscribe(["a", "b.*"], other)
    key = str(other._pyroUri)

    def about_other():
        with watcher.lock:
            return [(e["subject"], e["msg"]) if isinstance(e, dict) else (e.subject, e.msg)
                    for e in watcher.events
                    if (e["msg"] if isinstance(e, dict) else e.msg).get("subscriber") == key]
    wait_for(lambda: len(about_other()) >= 3, 10, "three presence events about the other subscriber")
    about_other = about_other()
    assert [s for s, _ in about_other] == ["es.presence.subscriber.joined", "es.presence.subscriber.changed",
                                           "es.presence.subscriber.left"]
    assert about_other[0][1]["subjects"] == ["a"]
    assert about_other[1][1]["patterns"] == ["b.*"]


def test_presence_for_a_subscriber_removed_as_dead(es, cluster, daemon):
    service = es.proxy()
    watcher = presence_watcher(service, daemon)
    victim = cluster.python("subscriber.py", "--plain", "news", name="victim")
    victim.wait_line("READY", 30)
    victim.kill()
    service.publish("news", "to the dead")
    wait_for(lambda: "es.presence.subscriber.removed" in watcher.subjects(), 20, "a removed event")
    removed = [m for s, m in zip(watcher.subjects(), watcher.msgs()) if s == "es.presence.subscriber.removed"]
    assert removed[0]["subjects"] == ["news"] and "reason" in removed[0]


def test_presence_subjects_are_reserved_and_not_matched_by_ordinary_patterns(es, daemon):
    service = es.proxy()
    with pytest.raises(ValueError):
        service.publish("es.presence.subscriber.joined", "fake")
    with pytest.raises(ValueError):
        service.publish(["ok", "ES.Presence.x"], "fake")
    everything = Listener("everything")
    service.subscribeMatch(".*", serve(daemon, everything))
    service.subscribe("x", serve(daemon, Listener("x")))
    marker_seen(service, everything, "end")
    assert not [s for s in everything.subjects() if s.startswith("es.presence")]


def test_presence_service_stopped_reaches_subscribers(cluster, daemon):
    cluster.start_ns()
    es = cluster.es()
    watcher = Listener("watcher")
    es.proxy().subscribe("es.presence.service.stopped", serve(daemon, watcher))
    es.signal(signal.SIGTERM)
    assert es.wait_exit(10) == 0
    wait_for(lambda: watcher.subjects() == ["es.presence.service.stopped"], 10, "service.stopped")


# -- liveness --------------------------------------------------------------------------------

def test_frozen_idle_subscriber_is_removed_by_heartbeat(cluster, daemon):
    cluster.start_ns()
    es = cluster.es("--heartbeat", "1")
    service = es.proxy()
    watcher = Listener("watcher")
    service.subscribe("es.presence.subscriber.removed", serve(daemon, watcher))
    frozen = cluster.python("subscriber.py", "--plain", "quiet.subject", name="frozen")
    frozen.wait_line("READY", 30)
    healthy = Listener("healthy")
    service.subscribe("quiet.subject", serve(daemon, healthy))
    frozen.signal(signal.SIGSTOP)
    started = time.monotonic()
    wait_for(lambda: service.stats()["removed"] >= 1, 15, "the frozen subscriber to be removed")
    assert time.monotonic() - started < 10, "within a bound of a few heartbeat intervals"
    assert service.stats()["subscribers"] == 2, "the healthy one and the watcher stay"
    wait_for(lambda: watcher.msgs() and "heartbeat" in watcher.msgs()[0]["reason"], 10, "the reason")


def test_idle_healthy_subscriber_is_not_removed(cluster, daemon):
    cluster.start_ns()
    es = cluster.es("--heartbeat", "0.5")
    service = es.proxy()
    sub = cluster.python("subscriber.py", "quiet.subject", name="idle")
    sub.wait_line("READY", 30)
    deadline = time.monotonic() + 3  # six heartbeat intervals
    while time.monotonic() < deadline:
        assert service.stats()["removed"] == 0
        time.sleep(0.2)
    service.publish("quiet.subject", "still here")
    sub.wait_line("still here", 10)


# -- the same through eventservice's own clients ---------------------------------------------

def test_subscriber_groups_and_filters_through_the_client(es, make_subscriber):
    from eventservice import Publisher
    members = [make_subscriber() for _ in range(2)]
    for m in members:
        m.subscribe("jobs", group="crew")
    picky = make_subscriber()
    picky.subscribeMatch(r"jobs|marker", filter=["or", ["==", "urgent", True], ["==", "end", True]])
    with Publisher() as pub:
        for i in range(40):
            pub.publish("jobs", {"seq": i, "urgent": i % 10 == 0})
        pub.publish("marker", {"end": True})
    got = lambda sub: [e.msg["seq"] for e in sub.recorder.events if "seq" in e.msg]  # noqa: E731
    wait_for(lambda: len(got(members[0])) + len(got(members[1])) >= 40, 15, "the crew's jobs")
    assert sorted(got(members[0]) + got(members[1])) == list(range(40))
    assert got(members[0]) and got(members[1])
    picky.recorder.wait_count(5)
    assert got(picky) == [0, 10, 20, 30]


def test_subscription_options_survive_an_es_restart(cluster, make_subscriber):
    from eventservice import Publisher
    cluster.start_ns()
    old = cluster.es()
    sub = make_subscriber()
    sub.subscribe("quotes", filter=[">", "price", 10])
    old.kill()
    cluster.es()

    def filtered_again():
        with Publisher() as pub:
            pub.publish("quotes", {"price": 1})
            pub.publish("quotes", {"price": 11})
        return any(e.msg == {"price": 11} for e in sub.recorder.events)
    wait_for(filtered_again, 20, "the subscriber to subscribe again, filter and all")
    assert all(e.msg["price"] > 10 for e in sub.recorder.events), [e.msg for e in sub.recorder.events]


def test_publisher_request_and_subscriber_respond(es, make_subscriber):
    from eventservice import Event, Publisher, Subscriber

    class Clock(Subscriber):
        def respond(self, event: Event):
            return {"asked": event.msg, "subject": event.subject}

    clock = make_subscriber(cls=Clock)
    clock.subscribe("time.NOW")
    handlers_only = make_subscriber()
    handlers_only.on("time.echo", lambda event: f"echo {event.msg}", respond=True)
    with Publisher() as client:
        assert client.request("TIME.now", 7) == {"asked": 7, "subject": "TIME.now"}
        assert client.request("time.echo", "hi", timeout=3) == "echo hi"
        with pytest.raises(TimeoutError, match="time.never"):
            client.request("time.never", None, timeout=0.5)
        with pytest.raises(TypeError):
            client.request(5)
    assert not [e for e in clock.recorder.events], "a responder answers; it is not sent the event as well"


def test_request_may_wait_longer_than_a_call_timeout(es, make_subscriber):
    from eventservice import Publisher, Subscriber
    from eventservice.config import DEFAULT_CLIENT_TIMEOUT

    class Slow(Subscriber):
        def respond(self, event):
            time.sleep(event.msg)  # the load of this test: a responder that takes its time
            return "done"

    slow = make_subscriber(cls=Slow)
    slow.subscribe("slow.job")
    with Publisher() as client:
        assert client.request("slow.job", DEFAULT_CLIENT_TIMEOUT + 1, timeout=DEFAULT_CLIENT_TIMEOUT + 5) == "done"


def test_async_publisher_request(es, make_subscriber):
    import asyncio

    from eventservice import AsyncPublisher, Subscriber

    class Echo(Subscriber):
        def respond(self, event):
            time.sleep(0.2)  # a responder that takes its time: the loop must go on meanwhile
            return ["echo", event.msg]

    make_subscriber(cls=Echo).subscribe("echo")

    async def ask():
        async with AsyncPublisher() as client:
            ticks = 0

            async def tick():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.001)
                    ticks += 1
            ticker = asyncio.ensure_future(tick())
            answer = await client.request("echo", 1, timeout=5)
            with pytest.raises(TimeoutError):
                await client.request("nobody", 1, timeout=0.5)
            ticker.cancel()
            return answer, ticks
    answer, ticks = asyncio.run(ask())
    assert answer == ["echo", 1]
    assert ticks > 10, "the loop ran while the requests waited"


def test_many_equality_filters_each_get_what_passes(es, daemon):
    """Equality filters are looked up, not run one by one: the result must be the same as
    running each: every subscriber gets exactly the events its filter passes."""
    service = es.proxy()
    specs = [["==", "symbol", s] for s in ("SUN", "IBM", "ACME")] + [["==", "n", 1], ["==", "n", True],
                                                                      ["==", "deep.x", "y"], ["==", "none", None]]
    listeners = []
    for spec in specs:
        listener = Listener(repr(spec))
        proxy = serve(daemon, listener)
        service.subscribe("q", proxy, filter=spec)
        service.subscribe("marker", proxy)
        listeners.append((spec, listener))
    both = Listener("both")
    both_proxy = serve(daemon, both)
    service.subscribe("q", both_proxy, filter=["==", "symbol", "IBM"])
    service.subscribeMatch("Q", both_proxy, filter=["==", "symbol", "SUN"])  # one subscriber, two filters
    service.subscribe("marker", both_proxy)
    messages = [{"symbol": "SUN"}, {"symbol": "IBM", "n": 1}, {"n": 1.0}, {"n": True}, {"deep": {"x": "y"}},
                {"none": None}, {"symbol": ["SUN"]}, "no dict", {"symbol": "XYZ"}, {"n": 2}]
    for m in messages:
        service.publish("q", m)
    from eventservice.filters import compile_filter
    for spec, listener in listeners + [(["or", ["==", "symbol", "IBM"], ["==", "symbol", "SUN"]], both)]:
        marker_seen(service, listener, "end")
        expected = [m for m in messages if compile_filter(spec)(m)]
        assert without("end", listener.msgs()) == expected, spec
