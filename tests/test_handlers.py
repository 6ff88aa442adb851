"""Plain handlers on a Subscriber, the module-level shortcut, and the connection callbacks of
Subscriber and Publisher, against real ``es`` processes."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, List

import pytest

from conftest import wait_for
from eventservice import Event, Publisher, Subscriber
from helpers.cl_support import shared_cluster


@pytest.fixture(scope="module")
def shared():
    with shared_cluster() as (cluster, es):
        yield cluster, es


@pytest.fixture
def subs(shared):
    """Factory of started Subscribers on the shared es, closed after the test."""
    made: List[Subscriber] = []

    def make(**kwargs: Any) -> Subscriber:
        sub = Subscriber(**kwargs)
        sub.start()
        made.append(sub)
        return sub
    yield make
    for sub in made:
        sub.close()


@pytest.fixture
def pub(shared):
    with Publisher() as publisher:
        yield publisher


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Calls:
    """A handler that records (name, subject, msg) and can be waited on."""

    def __init__(self, log: List[Any], name: str) -> None:
        self.log, self.name = log, name

    def __call__(self, event: Event) -> None:
        self.log.append((self.name, event.subject, event.msg))


def delivered_to(es, sub: Subscriber) -> int:
    """Events the service delivered to ``sub`` (its per-subscriber counter)."""
    stats = es.proxy().stats(True)["per_subscriber"]
    return stats.get(sub.uri, {}).get("delivered", 0)


def subscriptions(es) -> int:
    stats = es.proxy().stats()
    return stats["subject_subscriptions"] + stats["pattern_subscriptions"]


# -- calling handlers ------------------------------------------------------------------------------
def test_each_handler_once_per_event_and_the_service_sends_it_once(shared, subs, pub):
    _, es = shared
    base = unique()
    calls: List[Any] = []
    sub = subs()
    first, second = Calls(calls, "first"), Calls(calls, "second")
    sub.on(f"{base}.SUN", first)
    sub.on_match([rf"{base}\.", rf"{base}\.s"], first)  # three subscriptions of one handler match
    sub.on(f"{base}.sun", second)  # the same subject, another spelling
    pub.publish(f"{base}.Sun", 1)
    wait_for(lambda: len(calls) >= 2, 10, "both handlers")
    pub.publish(f"{base}.end", 2)  # only `first` wants this one
    wait_for(lambda: len(calls) >= 3, 10, "the last event")
    assert calls == [("first", f"{base}.Sun", 1), ("second", f"{base}.Sun", 1), ("first", f"{base}.end", 2)]
    assert delivered_to(es, sub) == 2  # one delivery per event, however many handlers and subscriptions


def test_handlers_get_only_events_of_their_own_subscriptions(shared, subs, pub):
    """Matching is done here, with the service's rules: an event the service sends for one
    handler does not reach another whose subscriptions do not match it."""
    base = unique()
    calls: List[Any] = []
    sub = subs()
    sub.on(f"{base}.ab", Calls(calls, "exact"))
    sub.on_match(f"{base}" + r"\.a$", Calls(calls, "anchored"))  # re.match, $ anchors: not .ab
    sub.on_match(r"b", Calls(calls, "b-start"))  # re.match anchors at the start: not t...b
    sub.on_match(f"{base.upper()}" + r"\.A", Calls(calls, "ignorecase"))
    pub.publish(f"{base}.ab", "x")
    pub.publish(f"{base}.a", "y")
    wait_for(lambda: len(calls) >= 4, 10, "four calls")
    assert sorted(calls) == sorted([("exact", f"{base}.ab", "x"), ("ignorecase", f"{base}.ab", "x"),
                                    ("anchored", f"{base}.a", "y"), ("ignorecase", f"{base}.a", "y")])


def test_decorators_return_the_function_and_handlers_run_in_attachment_order(shared, subs, pub):
    base = unique()
    order: List[str] = []
    sub = subs(on_error=lambda exc, event, handler: order.append(f"error in {handler.__name__}"))

    @sub.on(base)
    def one(event: Event) -> None:
        order.append("one")

    @sub.on_match(base)
    def two(event: Event) -> None:
        order.append("two")
        raise ValueError("two is broken")

    @sub.on([base, unique()])
    def three(event: Event) -> None:
        order.append("three")

    assert (one.__name__, two.__name__, three.__name__) == ("one", "two", "three")
    assert sub.handlers() == [one, two, three]
    pub.publish(base, None)
    wait_for(lambda: len(order) >= 4, 10, "every handler")
    assert order == ["one", "two", "error in two", "three"]


def test_a_raising_handler_is_logged_with_traceback_and_the_listener_goes_on(shared, subs, pub, caplog):
    base = unique()
    seen: List[Any] = []
    sub = subs()

    def broken(event: Event) -> None:
        raise RuntimeError(f"broken on {event.msg}")

    sub.on(base, broken)
    sub.on(base, lambda event: seen.append(event.msg))
    with caplog.at_level(logging.ERROR, logger="eventservice.handlers"):
        pub.publish(base, 1)
        pub.publish(base, 2)
        wait_for(lambda: len(seen) == 2, 10, "both events in the healthy handler")
        wait_for(lambda: len([r for r in caplog.records if "broken" in r.getMessage()]) == 2, 10, "two log records")
    record = [r for r in caplog.records if "broken" in r.getMessage()][0]
    assert record.exc_info is not None and "broken on 1" in str(record.exc_info[1])
    assert "Traceback" in caplog.text and "RuntimeError: broken on 1" in caplog.text


def test_an_error_callback_that_raises_is_logged_too(shared, subs, pub, caplog):
    base = unique()
    seen: List[Any] = []
    sub = subs(on_error=lambda *args: 1 / 0)
    sub.on(base, lambda event: 1 / 0)
    sub.on(base, lambda event: seen.append(event.msg))
    with caplog.at_level(logging.ERROR, logger="eventservice.clients"):
        pub.publish(base, "a")
        pub.publish(base, "b")
        wait_for(lambda: seen == ["a", "b"], 10, "the healthy handler")
        wait_for(lambda: "the error callback raised" in caplog.text, 10, "the log")


# -- removing handlers -----------------------------------------------------------------------------
def test_remove_handler_from_some_subjects_or_all_and_unsubscribe_what_nobody_holds(shared, subs, pub):
    _, es = shared
    a, b, c = unique("a"), unique("b"), unique("c")
    calls: List[Any] = []
    sub = subs()
    h1, h2 = Calls(calls, "h1"), Calls(calls, "h2")
    before = subscriptions(es)
    sub.on([a, b], h1)
    sub.on_match(c, h1)
    sub.on(b, h2)
    sub.subscribe(c)  # subscribed by the subscriber itself: removing handlers keeps it
    assert subscriptions(es) == before + 4
    assert sub.remove_handler(h1, [a.upper()]) is True  # exact subjects case-insensitive
    assert subscriptions(es) == before + 3  # a: nobody holds it
    assert sub.remove_handler(h1, [a]) is False
    assert sub.remove_handler(lambda e: None) is False  # unknown: ignored
    pub.publish(a, 1)
    pub.publish(b, 2)
    wait_for(lambda: len(calls) >= 2, 10, "two calls")
    assert sorted(calls) == [("h1", b, 2), ("h2", b, 2)]
    assert sub.remove_handler(h1) is True  # all the rest: b stays for h2, pattern c goes, exact c stays
    assert sub.handlers() == [h2]
    assert subscriptions(es) == before + 2
    assert sub.remove_handler(h2) is True
    assert subscriptions(es) == before + 1
    sub.unsubscribe(c)
    assert subscriptions(es) == before


def test_removing_one_kind_keeps_the_other_kind_under_the_same_string(shared, subs, pub):
    """The service's unsubscribe removes an exact subject and a pattern given by the same
    string; removing one handler keeps what another still holds under that string."""
    _, es = shared
    name = unique()
    calls: List[Any] = []
    sub = subs()
    exact, pattern = Calls(calls, "exact"), Calls(calls, "pattern")
    sub.on(name, exact)
    sub.on_match(name, pattern)
    sub.remove_handler(exact)
    pub.publish(name + "x", 1)  # only the pattern matches
    wait_for(lambda: calls, 10, "the pattern handler")
    assert calls == [("pattern", name + "x", 1)]
    key = sub.uri
    # a delivery is counted once its call returned, a moment after the event arrived
    wait_for(lambda: es.proxy().stats(True)["per_subscriber"][key]["delivered"] >= 1, 10, "the count")
    assert es.proxy().stats(True)["per_subscriber"][key]["delivered"] == 1


def test_a_handler_on_a_subject_held_with_a_filter_keeps_the_filter(shared, subs, pub):
    """One subscription per subject at the service: a handler attached to a subject this
    subscriber holds with a filter does not take the filter away, and the subscriber's own
    subscription stays when the handler goes."""
    _, es = shared
    name = unique()
    calls: List[Any] = []
    sub = subs()
    sub.subscribe(name, filter=[">", "price", 10])
    handler = Calls(calls, "h")
    sub.on(name, handler)
    for price in (5, 20):
        pub.publish(name, {"price": price})
    wait_for(lambda: delivered_to(es, sub) >= 1, 10, "the passing event")
    sub.remove_handler(handler)
    pub.publish(name, {"price": 30})
    wait_for(lambda: delivered_to(es, sub) >= 2, 10, "the subscription to stay")
    assert calls == [("h", name, {"price": 20})]
    assert delivered_to(es, sub) == 2 and subscriptions(es) >= 1


def test_unsubscribe_removes_the_subjects_from_handlers_too(shared, subs, pub):
    _, es = shared
    a, b = unique(), unique()
    calls: List[Any] = []
    sub = subs()
    h = Calls(calls, "h")
    before = subscriptions(es)
    sub.on([a, b], h)
    sub.unsubscribe(a)
    assert sub.handlers() == [h]
    sub.unsubscribe([b])
    assert sub.handlers() == []
    assert subscriptions(es) == before


def test_bad_handlers_and_patterns_are_refused_before_anything_changes(shared, subs):
    _, es = shared
    sub = subs()
    before = subscriptions(es)

    async def coroutine(event: Event) -> None:
        pass

    with pytest.raises(TypeError, match="AsyncSubscriber"):
        sub.on("x", coroutine)
    with pytest.raises(TypeError, match="callable"):
        sub.on("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sub.on_match("(unclosed", lambda e: None)
    with pytest.raises(TypeError):
        sub.on(42, lambda e: None)  # type: ignore[arg-type]
    with pytest.raises(Exception) as refused:  # the service refuses an empty subject: undone here
        sub.on("", lambda e: None)
    assert "empty" in str(refused.value)
    assert sub.handlers() == [] and subscriptions(es) == before


# -- event() and handlers --------------------------------------------------------------------------
def test_default_event_prints_only_without_handlers(shared, subs, pub, capsys):
    base = unique()
    plain = subs()
    plain.subscribe(base)
    with_handlers = subs()
    seen: List[Any] = []
    with_handlers.on(base, lambda event: seen.append(event.msg))
    with_handlers.subscribe(base)
    pub.publish(base, "printed once")
    wait_for(lambda: seen, 10, "the handler")
    wait_for(lambda: "printed once" in capsys.readouterr().out or None, 10, "the print")
    pub.publish(base, "again")
    wait_for(lambda: len(seen) == 2, 10, "the handler again")
    out: List[str] = []
    wait_for(lambda: out.append(capsys.readouterr().out) or "again" in "".join(out), 10, "the second print")
    assert "".join(out).count("again") == 1, out  # printed by the subscriber without handlers only


def test_an_overriding_event_keeps_handlers_through_call_handlers(shared, pub):
    base = unique()
    log: List[Any] = []

    class Both(Subscriber):
        def event(self, event: Event) -> None:
            log.append(("event", event.msg, self.call_handlers(event)))

    with Both() as sub:
        sub.start()
        sub.on(base, lambda event: log.append(("handler", event.msg)))
        pub.publish(base, 7)
        wait_for(lambda: len(log) >= 2, 10, "event() and the handler")
    assert log == [("handler", 7), ("event", 7, 1)]


def test_set_threading_false_runs_handlers_one_at_a_time(shared, subs):
    base = unique()
    sub = subs()
    sub.setThreading(False)
    busy, overlaps, done = [0], [0], []
    lock = threading.Lock()

    def slow(event: Event) -> None:
        with lock:
            busy[0] += 1
            overlaps[0] = max(overlaps[0], busy[0])
        threading.Event().wait(0.01)
        with lock:
            busy[0] -= 1
        done.append(event.msg)

    sub.on(base, slow)
    publishers = [Publisher() for _ in range(3)]
    threads = [threading.Thread(target=lambda p=p: [p.publish(base, i) for i in range(10)]) for p in publishers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: len(done) == 30, 20, "30 events")
    for p in publishers:
        p.close()
    assert overlaps[0] == 1


# -- the shortcut ----------------------------------------------------------------------------------
def test_the_shortcut_in_a_one_off_script_subscribes_publishes_and_closes_at_exit(shared):
    cluster, es = shared
    subject = unique()
    before = es.proxy().stats()["subscribers"]
    proc = cluster.python("cl_shortcut.py", subject, "hello")
    assert proc.wait_exit(30) == 0, proc.output()
    proc.kill()
    assert f"GOT {subject} hello" in proc.stdout
    assert es.proxy().stats()["subscribers"] == before  # its subscriber unsubscribed at exit


def test_the_shortcut_in_this_process(shared):
    import eventservice
    from eventservice import shortcuts
    subject = unique()
    got: List[Any] = []
    try:
        @eventservice.register(subject)
        def callback(event: Event) -> None:
            got.append(event.msg)

        eventservice.register(subject + r"\.x", lambda event: got.append(("pattern", event.msg)), match=True)
        eventservice.emit(subject, 1)
        eventservice.emit(subject + ".x", 2)
        wait_for(lambda: len(got) == 2, 10, "two events")
        assert got == [1, ("pattern", 2)]
        assert eventservice.unregister(callback) is True
        assert eventservice.unregister(callback) is False
    finally:
        shortcuts.shutdown()
    assert not shortcuts._subscribers and not shortcuts._publishers


# -- connection callbacks (each test restarts its own es) ------------------------------------------
class Changes:
    def __init__(self) -> None:
        self.items: List[Any] = []
        self.threads: List[str] = []

    def lost(self, error: BaseException) -> None:
        self.items.append(("lost", error))
        self.threads.append(threading.current_thread().name)

    def back(self, uri: str) -> None:
        self.items.append(("back", uri))
        self.threads.append(threading.current_thread().name)

    def kinds(self) -> List[str]:
        return [kind for kind, _ in self.items]


def test_subscriber_tells_when_its_service_went_away_and_when_it_is_back_and_subscribed(cluster):
    cluster.start_ns()
    first = cluster.es("--heartbeat", "0")
    changes = Changes()
    seen: List[Any] = []
    with Subscriber(on_disconnect=changes.lost, on_reconnect=changes.back) as sub, Publisher() as pub:
        sub.start()
        sub.on("news", lambda event: seen.append(event.msg))
        pub.publish("news", 1)
        wait_for(lambda: seen == [1], 10, "the first event")
        assert sub.connected
        first.kill()
        wait_for(lambda: changes.kinds() == ["lost"], 10, "on_disconnect")
        assert not sub.connected
        second = cluster.es("--heartbeat", "0")
        wait_for(lambda: changes.kinds() == ["lost", "back"], 15, "on_reconnect")
        assert sub.connected
        assert changes.items[1][1] == second.uri
        assert set(changes.threads) == {"es-subscriber-watch"}
        pub.publish("news", 2)  # the handler's subscription was made again
        wait_for(lambda: seen == [1, 2], 10, "an event from the new es")


def test_subscriber_tells_about_a_restart_it_did_not_see_fail(cluster):
    """The service replaced between two checks: still told gone, then back."""
    cluster.start_ns()
    first = cluster.es("--heartbeat", "0")
    changes = Changes()
    seen: List[Any] = []
    sub = Subscriber(on_disconnect=changes.lost, on_reconnect=changes.back)
    try:
        sub.start()
        sub.on("news", lambda event: seen.append(event.msg))
        first.kill()
        cluster.es("--heartbeat", "0")
        wait_for(lambda: changes.kinds() == ["lost", "back"], 15, "both callbacks")
        with Publisher() as pub:
            pub.publish("news", "again")
        wait_for(lambda: seen == ["again"], 10, "an event from the new es")
    finally:
        sub.close()
    assert changes.kinds() == ["lost", "back"]


@pytest.mark.parametrize("batch", [False, True])
def test_publisher_reports_its_reconnections(cluster, batch):
    cluster.start_ns()
    first = cluster.es("--heartbeat", "0")
    changes = Changes()
    with Publisher(batch=batch, on_disconnect=changes.lost, on_reconnect=changes.back) as pub:
        pub.publish("x", 1)
        pub.flush()
        assert pub.connected and changes.items == []
        first.kill()
        with pytest.raises(Exception):
            pub.publish("x", 2)
            pub.flush()
        assert changes.kinds() == ["lost"] and not pub.connected
        second = cluster.es("--heartbeat", "0")
        pub.publish("x", 3)
        pub.flush()
        assert changes.kinds() == ["lost", "back"] and pub.connected
        assert changes.items[1][1] == second.uri
        pub.publish("x", 4)
        pub.flush()
    assert changes.kinds() == ["lost", "back"]


def test_a_raising_connection_callback_is_logged(cluster, caplog):
    cluster.start_ns()
    first = cluster.es("--heartbeat", "0")
    with Publisher(on_disconnect=lambda e: 1 / 0, on_reconnect=lambda u: 1 / 0) as pub:
        pub.publish("x", 1)
        first.kill()
        with caplog.at_level(logging.ERROR, logger="eventservice.link"):
            with pytest.raises(Exception) as failed:
                pub.publish("x", 2)
            assert not isinstance(failed.value, ZeroDivisionError)
            cluster.es("--heartbeat", "0")
            pub.publish("x", 3)
        assert caplog.text.count("connection callback") == 2 and "ZeroDivisionError" in caplog.text


def test_subscriber_closes_its_threads_and_connections(shared, pub):
    from helpers.cl_support import sockets, threads, wait_back_to
    base = unique()
    pub.publish(base, 0)  # the publisher's connection is part of the baseline
    baseline_threads, baseline_sockets = threads(), sockets()
    seen: List[Any] = []
    sub = Subscriber()
    sub.start()
    sub.on(base, lambda event: seen.append(event.msg))
    pub.publish(base, 1)
    wait_for(lambda: seen == [1], 10, "an event")
    assert len(threads()) > len(baseline_threads)
    sub.close()
    wait_back_to(baseline_threads, baseline_sockets)


def test_a_subscriber_closed_while_its_service_is_frozen_ends_its_threads_and_connections(cluster):
    """The service still holds its connection to the subscriber (frozen, it cannot close
    it): close() ends that connection and the thread serving it all the same."""
    import signal
    from helpers.cl_support import sockets, threads, wait_back_to
    cluster.start_ns()
    es = cluster.es("--heartbeat", "0")
    seen: List[Any] = []
    with Publisher() as pub:
        pub.publish("warm", 0)
        baseline_threads, baseline_sockets = threads(), sockets()
        sub = Subscriber()
        sub.start()
        sub.on("news", lambda event: seen.append(event.msg))
        pub.publish("news", 1)
        wait_for(lambda: seen == [1], 10, "an event")
        es.signal(signal.SIGSTOP)
        try:
            sub.close()  # its unsubscribe times out
            wait_back_to(baseline_threads, baseline_sockets)
        finally:
            es.signal(signal.SIGCONT)
