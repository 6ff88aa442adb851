"""The client classes against real ``es`` processes: Publisher (direct and batched, finding
the service again) and Subscriber (esURI, listen/abort, threading, close, re-subscribing)."""

import asyncio
import signal
import threading
import time

import pytest
from Pyro5 import errors
from Pyro5.api import Proxy

from eventservice import AsyncPublisher, NoResponderError, Publisher, ServiceNotFoundError, Subscriber

from conftest import HOST, callback_proxy, free_port, wait_for

CALL_BOUND = 10.0  # seconds any client call may take while the service is away (contract)


def dead_uri():
    return f"PYRO:Pyro.EventService@{HOST}:{free_port()}"


def msgs(events):
    return [e.msg for e in events]


def publish_timed(pub, subject, msg):
    """Publish; returns the exception raised (or None) and fails if the call took too long."""
    started = time.monotonic()
    try:
        pub.publish(subject, msg)
        error = None
    except (errors.PyroError, OSError) as exc:
        error = exc
    elapsed = time.monotonic() - started
    assert elapsed < CALL_BOUND, f"publish took {elapsed:.1f}s ({error!r})"
    return error


# -- Publisher, default mode ----------------------------------------------------------------

def test_publisher_raises_what_the_service_raised(cluster, make_subscriber):
    cluster.start_ns()
    cluster.es("--max-subject-length", "10")
    sub = make_subscriber()
    sub.subscribe("short")
    with Publisher() as pub:
        with pytest.raises(ValueError, match="10"):
            pub.publish("x" * 11, "too long")
        pub.publish("short", "fine")
    assert msgs(sub.recorder.wait_count(1)) == ["fine"]


@pytest.mark.parametrize("batch", [False, True])
def test_publisher_checks_subjects_before_sending(cluster, batch):
    pub = Publisher(esURI=dead_uri(), batch=batch)  # nothing listens there
    for bad in (5, None, ["ok", 1], {"a": 1}):
        with pytest.raises(TypeError):
            pub.publish(bad, "m")
    pub.flush(5)  # nothing was queued


def test_publisher_returns_once_the_service_accepted(es):
    with Publisher() as pub:
        pub.publish(["a", "b"], 1)
        assert es.proxy().stats()["published"] == 2


# -- Publisher, batched ---------------------------------------------------------------------

def test_batched_publish_returns_at_once_and_flush_waits(cluster, make_subscriber):
    cluster.start_ns()
    es = cluster.es()
    sub = make_subscriber()
    sub.subscribe("seq")
    pub = Publisher(batch=True)
    es.signal(signal.SIGSTOP)  # the service answers nothing now
    try:
        started = time.monotonic()
        for i in range(300):
            pub.publish("seq", i)
        elapsed = time.monotonic() - started
    finally:
        es.signal(signal.SIGCONT)
    assert elapsed < 2, f"300 batched publishes took {elapsed:.1f}s against a frozen service"
    pub.flush(CALL_BOUND)
    assert es.proxy().stats()["published"] == 300
    assert msgs(sub.recorder.wait_count(300, 20)) == list(range(300))
    pub.close()


def test_batched_events_arrive_in_order(es, make_subscriber):
    sub = make_subscriber()
    sub.subscribeMatch("seq\\.")
    with Publisher(batch=True) as pub:
        for i in range(3000):
            pub.publish(f"seq.{i % 3}", i)
    got = sub.recorder.wait_count(3000, 30)
    assert msgs(got) == list(range(3000))
    assert [e.subject for e in got[:4]] == ["seq.0", "seq.1", "seq.2", "seq.0"]


def test_close_and_with_block_flush(es):
    pub = Publisher(batch=True)
    for i in range(500):
        pub.publish("x", i)
    pub.close()
    assert es.proxy().stats()["published"] == 500
    with Publisher(batch=True) as pub:
        for i in range(500):
            pub.publish("x", i)
    assert es.proxy().stats()["published"] == 1000
    with pytest.raises(RuntimeError):
        pub.publish("x", "after close")


def test_batched_error_is_raised_by_flush(cluster):
    cluster.start_ns()
    es = cluster.es()
    pub = Publisher(batch=True)
    pub.publish("x", 1)
    pub.flush(CALL_BOUND)
    es.kill()
    pub.publish("x", 2)  # queued: returns although the service is gone
    started = time.monotonic()
    with pytest.raises((errors.PyroError, OSError)):
        pub.flush(CALL_BOUND + 5)
    assert time.monotonic() - started < CALL_BOUND
    pub.flush(5)  # the error was reported once; nothing is left queued


def test_batched_error_is_raised_by_close(cluster):
    cluster.start_ns()
    es = cluster.es()
    pub = Publisher(batch=True)
    pub.publish("x", 1)
    pub.flush(CALL_BOUND)
    es.kill()
    pub.publish("x", 2)
    with pytest.raises((errors.PyroError, OSError)):
        pub.close()


def test_interpreter_exit_flushes_a_batched_publisher(es, cluster, make_subscriber):
    sub = make_subscriber()
    sub.subscribe("exit")
    proc = cluster.python("svc_exit_publisher.py", "exit", "2000")
    assert proc.wait_exit(30) == 0, proc.output()
    assert [e.msg["seq"] for e in sub.recorder.wait_count(2000, 20)] == list(range(2000))


def test_batched_valid_events_beside_an_invalid_one_are_accepted(cluster, make_subscriber):
    cluster.start_ns()
    es = cluster.es("--max-subject-length", "10")
    sub = make_subscriber()
    sub.subscribe("short")
    pub = Publisher(batch=True)
    es.signal(signal.SIGSTOP)  # let the three events queue up together
    try:
        pub.publish("short", 1)
        pub.publish("x" * 11, 2)
        pub.publish("short", 3)
    finally:
        es.signal(signal.SIGCONT)
    with pytest.raises(ValueError):
        pub.flush(CALL_BOUND)
    pub.publish("short", "end")
    pub.close()
    wait_for(lambda: "end" in msgs(sub.recorder.events), 10, "the last event")
    assert msgs(sub.recorder.events) == [1, 3, "end"]


# -- Publisher finds the service again --------------------------------------------------------

@pytest.mark.parametrize("batch", [False, True])
def test_publisher_works_again_after_es_restart(cluster, make_subscriber, batch):
    cluster.start_ns()
    old = cluster.es()
    pub = Publisher(batch=batch)
    pub.publish("news", "first")
    pub.flush(CALL_BOUND)
    old.kill()
    assert publish_timed(pub, "news", "while away") is not None or batch
    if batch:
        with pytest.raises((errors.PyroError, OSError)):
            pub.flush(CALL_BOUND)
    cluster.es()
    sub = make_subscriber()
    sub.subscribe("news")

    def delivered():
        error = publish_timed(pub, "news", "back")
        if error is None and batch:
            try:
                pub.flush(CALL_BOUND)
            except (errors.PyroError, OSError):
                return False
        return error is None and "back" in msgs(sub.recorder.events)
    wait_for(delivered, 20, "publishing to work again")
    pub.close()


def test_publisher_with_esuri_needs_no_name_server(cluster, make_subscriber):
    es = cluster.es("-N")  # no name server anywhere
    sub = make_subscriber(esURI=es.uri)
    sub.subscribe("news")
    with Publisher(esURI=es.uri) as pub:
        pub.publish("news", "direct")
    assert msgs(sub.recorder.wait_count(1)) == ["direct"]


def test_publisher_without_a_service_raises_within_the_bound(cluster):
    pub = Publisher(esURI=dead_uri())
    assert publish_timed(pub, "news", 1) is not None
    nameless = Publisher()  # no name server either
    assert publish_timed(nameless, "news", 1) is not None


def test_no_service_is_a_service_not_found_error_that_says_what_to_do(cluster, make_subscriber):
    dead = dead_uri()
    for client, expected in ((Publisher(esURI=dead), f"no Event Service answers at {dead}"),
                             (Publisher(), "no name server answered at")):
        error = publish_timed(client, "news", 1)
        assert isinstance(error, ServiceNotFoundError) and isinstance(error, ConnectionError), repr(error)
        assert expected in str(error) and "is es running" in str(error) and "esURI" in str(error), str(error)
        assert error.__cause__ is not None or "no name server" in str(error)
    cluster.start_ns()  # a name server without an Event Service in it
    sub = make_subscriber()
    with pytest.raises(ServiceNotFoundError, match=r"has no Pyro\.EventService .*unknown name.*is es running\?"):
        sub.subscribe("news")


def test_a_request_nobody_answers_is_a_no_responder_error(es, make_subscriber):
    class Mute(Subscriber):
        def respond(self, event):
            time.sleep(1)  # the load of this test: an answer too late for the requester
            return "late"

    make_subscriber(cls=Mute).subscribe("mute")
    with Publisher() as client:
        with pytest.raises(NoResponderError, match="nobody.here") as nobody:
            client.request("nobody.here", None, timeout=0.5)
        assert (nobody.value.subject, nobody.value.timeout) == ("nobody.here", None)
        with pytest.raises(TimeoutError, match="mute") as silent:  # what callers caught before
            client.request("mute", None, timeout=0.5)
        assert isinstance(silent.value, NoResponderError)
        assert (silent.value.subject, silent.value.timeout) == ("mute", 0.5)

    async def ask():
        async with AsyncPublisher() as client:
            await client.request("mute", None, timeout=0.5)
    with pytest.raises(NoResponderError, match="mute"):
        asyncio.run(ask())


# -- Subscriber -----------------------------------------------------------------------------

class Collector(Subscriber):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []

    def event(self, event):
        self.events.append(event)


def test_listen_returns_after_abort(es):
    sub = Collector()
    try:
        sub.subscribe("news")
        listener = threading.Thread(target=sub.listen, daemon=True)
        listener.start()
        Publisher().publish("news", 1)
        wait_for(lambda: sub.events, 10, "an event through listen()")
        sub.abort()
        listener.join(10)
        assert not listener.is_alive()
    finally:
        sub.close()


def test_abort_right_after_starting_listen_in_a_thread_stops_it(es):
    sub = Collector()
    try:
        listener = threading.Thread(target=sub.listen, daemon=True)
        listener.start()
        sub.abort()
        listener.join(10)
        alive = listener.is_alive()
    finally:
        sub.close()
    assert not alive


class Overlap(Subscriber):
    """Counts how many threads run event() at once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.count = 0

    def event(self, event):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.002)  # hold event() so that overlapping calls can be seen
        with self.lock:
            self.running -= 1
            self.count += 1


def _most_concurrent_event_calls(cluster, threaded):
    """Two services call one Subscriber back while two publishers publish, one on each."""
    first, second = cluster.es("-N"), cluster.es("-N")
    sub = Overlap(esURI=first.uri)
    sub.setThreading(threaded)
    sub.start()
    try:
        sub.subscribe("burst")
        second.proxy().subscribe("burst", callback_proxy(sub))
        barrier = threading.Barrier(2)

        def publish(uri):
            with Publisher(esURI=uri, batch=True) as pub:
                barrier.wait(10)
                for i in range(300):
                    pub.publish("burst", i)
        publishers = [threading.Thread(target=publish, args=(es.uri,)) for es in (first, second)]
        for thread in publishers:
            thread.start()
        for thread in publishers:
            thread.join(30)
        wait_for(lambda: sub.count >= 600, 30, "600 events")
        return sub.most
    finally:
        sub.close()


def test_set_threading_false_never_runs_event_in_two_threads(cluster):
    assert _most_concurrent_event_calls(cluster, threaded=False) == 1


def test_threaded_subscriber_can_run_event_in_two_threads(cluster):
    """The control of the test above: the setup does produce overlapping calls."""
    assert _most_concurrent_event_calls(cluster, threaded=True) >= 2


def test_context_manager_closes_the_subscriber(es):
    service = es.proxy()
    with Collector() as sub:
        sub.start()
        sub.subscribe(["a", "b"])
        sub.subscribeMatch("c.*")
        assert service.stats()["subscribers"] == 1
        callback = sub.uri
        assert isinstance(callback, str) and list(service.stats(True)["per_subscriber"]) == [callback]
    stats = service.stats()
    assert (stats["subscribers"], stats["subject_subscriptions"], stats["pattern_subscriptions"]) == (0, 0, 0)
    gone = Proxy(callback)
    gone._pyroTimeout = 5
    with pytest.raises(errors.CommunicationError):
        gone._pyroBind()


def test_unsubscribe_through_the_subscriber(es, make_subscriber):
    sub = make_subscriber()
    sub.subscribe(["News", "weather"])
    sub.subscribeMatch("stock.*")
    sub.unsubscribe(["NEWS", "stock.*"])
    with Publisher() as pub:
        pub.publish(["news", "stockquotes", "weather"], 1)
    [event] = sub.recorder.wait_count(1)
    assert event.subject == "weather"
    assert es.proxy().stats()["subject_subscriptions"] == 1


def test_subscriber_subscribes_again_to_a_restarted_es(cluster, make_subscriber):
    cluster.start_ns()
    old = cluster.es()
    sub = make_subscriber()
    sub.subscribe("news")
    sub.subscribeMatch("stock.*")
    with Publisher() as pub:
        pub.publish("news", "before")
    sub.recorder.wait_count(1)
    old.kill()
    new = cluster.es()
    service = new.proxy()
    tokens = iter(range(1_000_000))

    def marker_arrived(subject):
        service.publish(subject, f"marker {next(tokens)}")
        return any(e.subject == subject for e in sub.recorder.events)
    wait_for(lambda: marker_arrived("news"), CALL_BOUND, "the subscriber to be back on the new es")
    wait_for(lambda: marker_arrived("stockquotes"), 5, "its pattern to be back too")
    assert service.stats()["subscribers"] == 1
