"""Property tests: arbitrary arguments to every remote method, through a plain Pyro5 proxy,
against one real es process for the whole module."""

from __future__ import annotations

import threading
from typing import Any, Tuple

import pytest
import Pyro5.api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import HOST, Cluster

pytestmark = pytest.mark.timeout(120)

SETTINGS = settings(max_examples=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ODD = ["", " ", "\x00", "a\u0301", "\u202e\u202d", "\ufeff", "\u200b", "\U0001f600", "\U0010ffff", "\u0130", "\u0131",
       "\u017f", "ß", "ﬀ", "Σσς", "\r\n", "\\", "\t", "İstanbul", "ǅ", "\ud7ff", "\ue000", "a" * 512, "a" * 513]
REGEXISH = "()[]{}*+?|^$\\.,:<=!#PaAbz09-_ \u0130"

odd_text = st.sampled_from(ODD) | st.text(max_size=30) | st.text(alphabet=REGEXISH, max_size=16)
long_text = st.integers(500, 20_000).map(lambda n: "s" * n) | st.text(min_size=400, max_size=700)
scalars = (st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=True)
           | odd_text | long_text | st.binary(max_size=40))
values = st.recursive(scalars, lambda kids: (st.lists(kids, max_size=4) | st.tuples(kids, kids)
                                             | st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                      max_leaves=10)
subjects = odd_text | st.lists(odd_text, max_size=4) | st.tuples(odd_text) | values


@Pyro5.api.expose
class Callback:
    """A healthy plain subscriber: takes every event, whatever it carries."""

    def __init__(self) -> None:
        self.count = 0

    def event(self, event: Any) -> None:
        self.count += 1


@pytest.fixture(scope="module")
def world():
    """One es (no name server: -N) for the module, and a real subscriber object served by
    a daemon in this process. Yields (es uri, subscriber proxy, es process)."""
    cluster = Cluster()
    daemon = Pyro5.api.Daemon(host=HOST)
    callback_uri = daemon.register(Callback())
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    try:
        es = cluster.es("-N")
        yield es.uri, Pyro5.api.Proxy(callback_uri), es
    finally:
        cluster.close()
        daemon.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def service(world):
    p = Pyro5.api.Proxy(world[0])
    p._pyroTimeout = 10  # a hang is a failure, not a stuck test
    return p


subscriber_args = st.just("REAL") | values  # "REAL": the healthy subscriber's proxy


def _counts(service) -> Tuple[int, int, int]:
    s = service.stats()
    return s["subscribers"], s["subject_subscriptions"], s["pattern_subscriptions"]


def _check(service, world, method: str, *args: Any) -> None:
    """Call ``method``: it works or raises TypeError/ValueError; a failure changes no
    subscription count; the service answers afterwards."""
    run_id = service.ping()
    args = tuple(world[1] if a == "REAL" else a for a in args)
    before = _counts(service)
    try:
        getattr(service, method)(*args)
    except (TypeError, ValueError) as exc:
        assert type(exc) in (TypeError, ValueError), f"{method}: {type(exc).__module__}.{type(exc).__name__}: {exc}"
        after = _counts(service)
        assert after == before, f"{method}{args!r:.300} failed ({exc}) but changed the counts {before} -> {after}"
    except Exception as exc:
        pytest.fail(f"{method}{args!r:.300} raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
    assert service.ping() == run_id


@SETTINGS
@given(subjects=subjects, message=values)
def test_publish_arbitrary(service, world, subjects, message):
    """publish(anything, anything): works or raises TypeError/ValueError."""
    _check(service, world, "publish", subjects, message)


@SETTINGS
@given(events=values | st.lists(st.tuples(subjects, values) | st.lists(values, max_size=3), max_size=5))
def test_publish_batch_arbitrary(service, world, events):
    """publishBatch(anything): works or raises TypeError/ValueError, all or nothing."""
    _check(service, world, "publishBatch", events)


@SETTINGS
@given(subjects=subjects, subscriber=subscriber_args)
def test_subscribe_arbitrary(service, world, subjects, subscriber):
    """subscribe(anything, real subscriber or anything)."""
    _check(service, world, "subscribe", subjects, subscriber)


@SETTINGS
@given(patterns=subjects, subscriber=subscriber_args)
def test_subscribe_match_arbitrary(service, world, patterns, subscriber):
    """subscribeMatch(anything, ...): invalid regexes are ValueError, never re.error."""
    _check(service, world, "subscribeMatch", patterns, subscriber)


@SETTINGS
@given(names=subjects, subscriber=subscriber_args)
def test_unsubscribe_arbitrary(service, world, names, subscriber):
    """unsubscribe(anything, ...)."""
    _check(service, world, "unsubscribe", names, subscriber)


@SETTINGS
@given(args=st.lists(values, max_size=3))
def test_ping_and_stats_arbitrary(service, world, args):
    """ping(*anything) and stats(*anything): work or raise TypeError/ValueError."""
    _check(service, world, "ping", *args)
    _check(service, world, "stats", *args)


def test_module_end_state(service, world):
    """After all of the above the service still answers, and the healthy subscriber was
    never removed for anything it was sent."""
    stats = service.stats(True)
    assert stats["removed"] == 0, stats
    assert world[2].proc.poll() is None
