"""The remote object, through a real ``es`` and plain Pyro5 proxies: publish, subscribe,
subscribeMatch, unsubscribe, their semantics, bad input, delivery under failure and load,
and the passphrase."""

import json
import re
import signal
import threading
import time

import pytest
from Pyro5 import errors
from Pyro5.api import URI, Daemon, Proxy, expose

from eventservice import Event, Publisher

from conftest import callback_proxy, wait_for


# -- helpers ------------------------------------------------------------------------------

def events_until_marker(service, sub, token, timeout=10.0):
    """Publish a marker event through ``service`` (``sub`` must be subscribed to "marker")
    and return what ``sub`` received before it (markers left out). Events from one
    publisher arrive in order, so everything published before the marker has arrived."""
    service.publish("marker", token)

    def arrived():
        events = list(sub.recorder.events)
        for n, event in enumerate(events):
            if event.subject == "marker" and event.msg == token:
                return [e for e in events[:n] if e.subject != "marker"] or [None]
        return None
    got = wait_for(arrived, timeout, f"marker {token!r}")
    return [e for e in got if e is not None]


def subscribed_sink(es, make_subscriber, subjects=(), patterns=()):
    """An in-process Subscriber, subscribed through a plain proxy with its callback proxy."""
    sub = make_subscriber()
    service = es.proxy()
    service.subscribe(["marker", *subjects], callback_proxy(sub))
    if patterns:
        service.subscribeMatch(list(patterns), callback_proxy(sub))
    return sub, service


def json_lines(proc):
    """The JSON event lines a subscriber.py process printed so far."""
    return [json.loads(line) for line in list(proc.stdout) if line.startswith("{")]


def counts(service):
    stats = service.stats()
    return {k: stats[k] for k in ("subscribers", "subject_subscriptions", "pattern_subscriptions", "published")}


# -- publish -------------------------------------------------------------------------------

def test_publish_to_one_subject(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["news"])
    before = time.time()
    service.publish("news", {"text": "hello", "n": [1, 2]})
    [event] = sub.recorder.wait_count(1)
    assert isinstance(event, Event)
    assert (event.subject, event.msg) == ("news", {"text": "hello", "n": [1, 2]})
    assert before - 2 <= event.time <= time.time() + 2


@pytest.mark.parametrize("kind", [list, tuple])
def test_publish_to_several_subjects_makes_one_event_each_with_one_time(es, make_subscriber, kind):
    sub, service = subscribed_sink(es, make_subscriber, ["a", "b", "c"])
    service.publish(kind(["a", "b", "c"]), "m")
    events = sub.recorder.wait_count(3)
    assert sorted(e.subject for e in events) == ["a", "b", "c"]
    assert all(e.msg == "m" for e in events)
    assert len({e.time for e in events}) == 1
    assert abs(events[0].time - time.time()) < 5
    assert events_until_marker(service, sub, "end") == events


def test_publish_to_a_list_reaches_only_the_subscribed_subjects(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["b"])
    service.publish(["a", "b", "c"], 7)
    assert [(e.subject, e.msg) for e in events_until_marker(service, sub, "end")] == [("b", 7)]


def test_published_counter_counts_one_event_per_subject(es):
    service = es.proxy()
    service.publish("x", 1)
    service.publish(["x", "y", "z"], 1)
    assert service.stats()["published"] == 4


# -- subscribe / unsubscribe -------------------------------------------------------------------

def test_subscribe_and_unsubscribe_with_a_list(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["a", "b"])
    service.publish(["a", "b"], 1)
    assert len(events_until_marker(service, sub, 1)) == 2
    service.unsubscribe(["a", "b"], callback_proxy(sub))
    service.publish(["a", "b"], 2)
    assert events_until_marker(service, sub, 2) == sub.recorder.events[:2]


def test_unsubscribe_with_a_str(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["a", "b"])
    service.unsubscribe("a", callback_proxy(sub))
    service.publish(["a", "b"], 1)
    assert [e.subject for e in events_until_marker(service, sub, 1)] == ["b"]


def test_subjects_are_case_insensitive_and_keep_the_publishers_spelling(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["StockQuotes"])
    service.publish("STOCKQUOTES", 1)
    service.publish("stockquotes", 2)
    got = events_until_marker(service, sub, "end")
    assert [(e.subject, e.msg) for e in got] == [("STOCKQUOTES", 1), ("stockquotes", 2)]
    assert counts(service)["subject_subscriptions"] == 2  # marker + one StockQuotes


def test_unsubscribe_of_an_exact_subject_is_case_insensitive(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["StockQuotes"])
    service.unsubscribe("STOCKQUOTES", callback_proxy(sub))
    service.publish("stockquotes", 1)
    assert events_until_marker(service, sub, "end") == []
    assert counts(service)["subject_subscriptions"] == 1  # only the marker


def test_unsubscribe_removes_exact_and_pattern_given_by_the_same_string(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["stock"], ["stock"])
    service.unsubscribe("stock", callback_proxy(sub))
    service.publish(["stock", "stockquotes"], 1)
    assert events_until_marker(service, sub, "end") == []
    assert counts(service)["pattern_subscriptions"] == 0


def test_unsubscribe_of_unknown_names_is_ignored(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["news"])
    service.unsubscribe(["weather", "w.*"], callback_proxy(sub))
    stranger = make_subscriber()
    service.unsubscribe("news", callback_proxy(stranger))  # never subscribed at all
    service.publish("news", 1)
    assert [e.msg for e in events_until_marker(service, sub, "end")] == [1]


# -- patterns -------------------------------------------------------------------------------

def test_pattern_matches_with_ignorecase_and_re_match_anchoring(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, patterns=["stock"])
    service.publish(["stockquotes", "STOCK.SUN", "xstock", "quotes.stock"], 1)
    assert [e.subject for e in events_until_marker(service, sub, "end")] == ["stockquotes", "STOCK.SUN"]


def test_dollar_anchors_a_pattern_at_the_end(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, patterns=["stock$"])
    service.publish(["stockquotes", "StOcK"], 1)
    assert [e.subject for e in events_until_marker(service, sub, "end")] == ["StOcK"]


def test_pattern_is_not_searched_inside_the_subject(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, patterns=["quotes"])
    service.publish("stockquotes", 1)
    assert events_until_marker(service, sub, "end") == []


def test_subscribe_match_with_a_list(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, patterns=["a.*", "b\\d+$"])
    service.publish(["ax", "b12", "b1x", "c"], 1)
    assert [e.subject for e in events_until_marker(service, sub, "end")] == ["ax", "b12"]


def test_event_arrives_once_however_many_subscriptions_match(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["stockquotes"], ["stock", "S.*QUOTES"])
    service.publish("StockQuotes", 1)
    assert [(e.subject, e.msg) for e in events_until_marker(service, sub, "end")] == [("StockQuotes", 1)]


# -- who a subscriber is ----------------------------------------------------------------------

class PlainSink:
    """A bare Pyro5 object exposing event(), served by its own daemon in this process."""

    def __init__(self):
        from conftest import Recorder
        self.recorder = Recorder()
        self.daemon = Daemon(host="127.0.0.1")
        self.uri = self.daemon.register(self)
        self.thread = threading.Thread(target=self.daemon.requestLoop, daemon=True)
        self.thread.start()

    @expose
    def event(self, event):
        self.recorder(event)

    def close(self):
        self.daemon.shutdown()
        self.thread.join(10)


@pytest.fixture
def plain_sink():
    made = []

    def make():
        made.append(PlainSink())
        return made[-1]
    yield make
    for sink in made:
        sink.close()


def test_two_proxies_of_one_object_are_one_subscriber(es, plain_sink):
    sink = plain_sink()
    service = es.proxy()
    service.subscribe(["news", "marker"], Proxy(sink.uri))
    service.subscribeMatch("new.*", Proxy(sink.uri))
    assert counts(service)["subscribers"] == 1
    service.publish("news", 1)
    assert [e.msg for e in events_until_marker(service, sink, "end")] == [1]
    service.unsubscribe(["news", "new.*"], Proxy(sink.uri))
    assert counts(service)["subject_subscriptions"] == 1  # the marker
    service.publish("news", 2)
    assert [e.msg for e in events_until_marker(service, sink, "end2")] == [1]


def test_an_exposed_object_is_auto_proxied(es, plain_sink):
    sink = plain_sink()
    service = es.proxy()
    service.subscribe(["news", "marker"], sink)
    service.publish("news", 1)
    assert [e.msg for e in events_until_marker(service, sink, "end")] == [1]


@pytest.mark.parametrize("how", ["plain proxy", "auto-proxy"])
def test_project_subscriber_handed_over_by_a_plain_client_receives(es, make_subscriber, how):
    sub = make_subscriber()
    service = es.proxy()
    target = Proxy(sub.uri) if how == "plain proxy" else sub.daemon.objectsById[URI(sub.uri).object]
    service.subscribe(["news", "marker"], target)
    service.publish("news", 1)
    assert [e.msg for e in events_until_marker(service, sub, "end")] == [1]


# -- transience -----------------------------------------------------------------------------

def test_events_are_not_stored_for_later_subscribers(es, make_subscriber):
    service = es.proxy()
    service.publish("news", "too early")
    sub = make_subscriber()
    service.subscribe(["news", "marker"], callback_proxy(sub))
    service.publish("news", "in time")
    assert [e.msg for e in events_until_marker(service, sub, "end")] == ["in time"]


# -- bad input ------------------------------------------------------------------------------

BAD_NAMES = [123, None, ["ok", 5], ("ok", None), {"a": 1}, 1.5, b"bytes"]
BAD_SUBSCRIBERS = ["not a proxy", 42, {"uri": "PYRO:x@localhost:1"}, None, ["PYRO:x@localhost:1"]]
NOTHING = {"subscribers": 0, "subject_subscriptions": 0, "pattern_subscriptions": 0, "published": 0}


def assert_raises(kind, service, method, *args):
    """Call ``service.method(*args)``; it must raise exactly ``kind`` (or a subclass)."""
    try:
        getattr(service, method)(*args)
    except kind as exc:
        return exc
    except Exception as exc:
        pytest.fail(f"{method}{args!r} raised {exc!r}, not {kind.__name__}")
    pytest.fail(f"{method}{args!r} raised nothing, not {kind.__name__}")


def test_publish_to_a_non_str_subject_raises_type_error(es):
    service = es.proxy()
    for bad in BAD_NAMES:
        assert_raises(TypeError, service, "publish", bad, "m")
    assert counts(service) == NOTHING


def test_non_str_subject_or_pattern_raises_type_error(es, make_subscriber):
    sub = make_subscriber()
    service = es.proxy()
    for method in ("subscribe", "subscribeMatch", "unsubscribe"):
        for bad in BAD_NAMES:
            assert_raises(TypeError, service, method, bad, callback_proxy(sub))
    assert counts(service) == NOTHING


def test_subscriber_that_is_not_a_pyro_object_raises_type_error(es):
    service = es.proxy()
    for method in ("subscribe", "subscribeMatch", "unsubscribe"):
        for bad in BAD_SUBSCRIBERS:
            assert_raises(TypeError, service, method, "news", bad)
    assert counts(service) == NOTHING


def test_invalid_regex_raises_value_error(es, make_subscriber):
    sub = make_subscriber()
    service = es.proxy()
    for pattern in ("(", "[a-", "*x", "a{2,1}", "(?P<x>a)(?P<x>b)"):
        exc = assert_raises(ValueError, service, "subscribeMatch", pattern, callback_proxy(sub))
        assert not isinstance(exc, (errors.SerializeError, re.error))
        assert type(exc) is ValueError
    assert counts(service) == NOTHING


def test_a_list_with_one_bad_subject_changes_nothing(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["kept"])
    before = counts(service)
    with pytest.raises(TypeError):
        service.subscribe(["good", "better", 3], callback_proxy(sub))
    with pytest.raises(TypeError):
        service.unsubscribe(["kept", None], callback_proxy(sub))
    assert counts(service) == before
    service.publish(["good", "better", "kept"], 1)
    assert [e.subject for e in events_until_marker(service, sub, "end")] == ["kept"]


def test_a_list_with_one_bad_pattern_changes_nothing(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber)
    before = counts(service)
    with pytest.raises(ValueError):
        service.subscribeMatch(["good.*", "(bad"], callback_proxy(sub))
    with pytest.raises(TypeError):
        service.subscribeMatch(["good.*", 1], callback_proxy(sub))
    assert counts(service) == before
    service.publish("goodness", 1)
    assert events_until_marker(service, sub, "end") == []


def test_a_new_subscriber_refused_for_bad_input_is_not_kept(es, make_subscriber):
    sub = make_subscriber()
    service = es.proxy()
    with pytest.raises(ValueError):
        service.subscribeMatch(["fine", "("], callback_proxy(sub))
    assert counts(service)["subscribers"] == 0


def test_publish_to_a_list_with_one_bad_subject_publishes_nothing(es, make_subscriber):
    sub, service = subscribed_sink(es, make_subscriber, ["good"])
    published = counts(service)["published"]
    with pytest.raises(TypeError):
        service.publish(["good", 2], "m")
    assert counts(service)["published"] == published
    assert events_until_marker(service, sub, "end") == []


# -- order and volume -----------------------------------------------------------------------

def test_2000_events_arrive_in_order_at_project_and_plain_subscribers(es, cluster, make_subscriber):
    plain = cluster.python("subscriber.py", "--plain", "seq")
    sub = make_subscriber()
    sub.subscribe("seq")
    plain.wait_line("READY")
    with Publisher(batch=True) as pub:
        for i in range(2000):
            pub.publish("seq", {"seq": i})
    got = sub.recorder.wait_count(2000, 30)
    assert [e.msg["seq"] for e in got] == list(range(2000))
    wait_for(lambda: len(json_lines(plain)) >= 2000, 30, "2000 events at the plain subscriber")
    assert [line["msg"]["seq"] for line in json_lines(plain)] == list(range(2000))


def _publish_until(stop, published, subject="flow"):
    service = Proxy(published["uri"])
    service._pyroTimeout = 10
    n = 0
    while not stop.is_set():
        service.publish(subject, {"seq": n})
        n += 1
        published["n"] = n
    service._pyroRelease()


def test_killed_subscriber_is_removed_and_others_receive_everything(es, cluster, make_subscriber):
    keeper = make_subscriber()
    keeper.subscribe("flow")
    survivor = cluster.python("subscriber.py", "flow", name="survivor")
    victim = cluster.python("subscriber.py", "flow", name="victim")
    survivor.wait_line("READY")
    victim.wait_line("READY")
    service = es.proxy()
    assert counts(service)["subscribers"] == 3
    stop, published = threading.Event(), {"uri": es.uri, "n": 0}
    publisher = threading.Thread(target=_publish_until, args=(stop, published), daemon=True)
    publisher.start()
    try:
        wait_for(lambda: len(json_lines(victim)) >= 20, 15, "the victim to receive events")
        victim.signal(signal.SIGKILL)
        wait_for(lambda: service.stats()["removed"] >= 1, 15, "the dead subscriber to be removed")
        wait_for(lambda: published["n"] >= len(json_lines(victim)) + 100, 15, "more events after the kill")
    finally:
        stop.set()
        publisher.join(15)
    total = published["n"]
    stats = counts(service)
    assert (stats["subscribers"], stats["subject_subscriptions"]) == (2, 2)
    got = keeper.recorder.wait_count(total, 30)
    assert [e.msg["seq"] for e in got] == list(range(total))
    wait_for(lambda: len(json_lines(survivor)) >= total, 30, f"{total} events at the survivor")
    assert [line["msg"]["seq"] for line in json_lines(survivor)] == list(range(total))


def test_slow_subscriber_does_not_hold_back_a_fast_one(es, cluster, make_subscriber):
    slow = cluster.python("subscriber.py", "--sleep", "0.2", "burst", name="slow")
    fast = make_subscriber()
    fast.subscribe("burst")
    slow.wait_line("READY")
    with Publisher(batch=True) as pub:
        for i in range(500):
            pub.publish("burst", {"seq": i})
    fast.recorder.wait_count(500, 30)
    slow_count = len(json_lines(slow))
    assert slow_count < 10, f"the slow subscriber already had {slow_count} events"
    wait_for(lambda: json_lines(slow), 10, "the slow subscriber to receive an event")


# -- overflow -------------------------------------------------------------------------------

def _frozen_subscriber(cluster, subject):
    proc = cluster.python("subscriber.py", subject, name="frozen")
    proc.wait_line("READY")
    proc.signal(signal.SIGSTOP)
    return proc


def _timed_publishes(service, subject, count):
    started = time.monotonic()
    for i in range(count):
        service.publish(subject, {"seq": i})
    return time.monotonic() - started


def test_overflow_drop_never_blocks_the_publisher(cluster, make_subscriber):
    cluster.start_ns()
    es = cluster.es("--overflow", "drop", "--queue-size", "10", "--block-timeout", "5")
    _frozen_subscriber(cluster, "burst")
    other = make_subscriber()
    other.subscribe("burst")
    service = es.proxy()
    service.publish("burst", {"seq": -1})  # the healthy one's connection is made before the burst
    other.recorder.wait_count(1)
    elapsed = _timed_publishes(service, "burst", 200)
    assert elapsed < 4, f"200 publishes took {elapsed:.1f}s"
    assert service.stats()["dropped"] >= 150
    assert [e.msg["seq"] for e in other.recorder.wait_count(201, 20)] == list(range(-1, 200))


def test_overflow_block_costs_one_wait_not_one_per_event(cluster, make_subscriber):
    cluster.start_ns()
    es = cluster.es("--overflow", "block", "--block-timeout", "1", "--queue-size", "10")
    frozen = _frozen_subscriber(cluster, "burst")
    other = make_subscriber()
    other.subscribe("burst")
    service = es.proxy()
    elapsed = _timed_publishes(service, "burst", 200)
    assert 0.9 <= elapsed < 8, f"200 publishes took {elapsed:.1f}s"
    assert service.stats()["dropped"] >= 150
    assert [e.msg["seq"] for e in other.recorder.wait_count(200, 20)] == list(range(200))
    # a frozen subscriber keeps its subscriptions: once thawed it receives again (events
    # published while its queue is still full are dropped, so keep publishing)
    frozen.signal(signal.SIGCONT)

    def thawed():
        service.publish("burst", {"seq": "after"})
        return any(line["msg"]["seq"] == "after" for line in json_lines(frozen))
    wait_for(thawed, 20, "the thawed subscriber to receive a new event")


def test_overflow_block_a_batch_larger_than_the_queue_waits_for_room_and_loses_nothing(cluster, make_subscriber):
    """One publishBatch of 20x the queue size to an idle subscriber: its queue fills at once,
    and the post must wait for the senders to drain it (not for a sender nobody woke)."""
    cluster.start_ns()
    es = cluster.es("--overflow", "block", "--block-timeout", "5", "--queue-size", "50")
    subscribers = [make_subscriber(), make_subscriber()]
    for sub in subscribers:
        sub.subscribe("big")
    service = es.proxy()
    service.publishBatch([("big", {"seq": i}) for i in range(1000)])
    for sub in subscribers:
        assert [e.msg["seq"] for e in sub.recorder.wait_count(1000, 20)] == list(range(1000))
    assert service.stats()["dropped"] == 0


# -- the passphrase -------------------------------------------------------------------------

def test_es_with_ident_refuses_a_proxy_without_the_passphrase(cluster):
    cluster.start_ns()
    es = cluster.es("-i", "secret")
    for presented in (None, "wrong", "", "secret2", "SECRET"):
        with pytest.raises(errors.CommunicationError):
            es.proxy(presented).ping()
    assert es.proxy("secret").ping()


def test_es_with_ident_serves_project_clients_that_present_it(cluster, make_subscriber):
    cluster.start_ns()
    cluster.es("-i", "secret")
    sub = make_subscriber(ident="secret")
    sub.subscribe("news")
    with Publisher(ident="secret") as pub:
        pub.publish("news", "hello")
    [event] = sub.recorder.wait_count(1)
    assert event.msg == "hello"
    with pytest.raises(errors.CommunicationError):
        Publisher().publish("news", "intruder")


def test_ident_from_the_environment_is_honoured_by_es_and_clients(cluster, make_subscriber, monkeypatch):
    cluster.start_ns()
    es = cluster.es(env={"EVENTSERVICE_IDENT": "secret"})
    with pytest.raises(errors.CommunicationError):
        es.proxy().ping()
    monkeypatch.setenv("EVENTSERVICE_IDENT", "secret")
    sub = make_subscriber()
    sub.subscribe("news")
    with Publisher() as pub:
        pub.publish("news", "hello")
    assert [e.msg for e in sub.recorder.wait_count(1)] == ["hello"]
    with pytest.raises(errors.CommunicationError):
        Proxy(sub.uri).event({"subject": "news", "msg": "forged", "time": 0.0})


def test_subscriber_daemon_refuses_a_caller_without_the_passphrase(cluster, make_subscriber):
    cluster.start_ns()
    cluster.es("-i", "secret")
    sub = make_subscriber(ident="secret")
    for presented in (None, "wrong"):
        intruder = Proxy(sub.uri)
        intruder._pyroHandshake = presented
        intruder._pyroTimeout = 10
        with pytest.raises(errors.CommunicationError):
            intruder.event({"subject": "news", "msg": "forged", "time": 0.0})
    friend = Proxy(sub.uri)
    friend._pyroHandshake = "secret"
    friend._pyroTimeout = 10
    friend.event({"subject": "news", "msg": "genuine", "time": 0.0})
    assert [e.msg for e in sub.recorder.wait_count(1)] == ["genuine"]
