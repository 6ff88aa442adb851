"""Who gets an event, without a network: the index's routes and the Router's choice."""

from __future__ import annotations

from collections import Counter

import pytest

from eventservice.filters import compile_filter
from eventservice.matching import SubscriptionIndex
from eventservice.patterns import compile_pattern
from eventservice.routing import NOWHERE, Options, Route, Router


def options(group=None, spec=None):
    return Options(group, None if spec is None else compile_filter(spec), spec)


@pytest.fixture
def index():
    return SubscriptionIndex()


def test_a_subscriber_gets_an_event_once_however_many_subscriptions_match(index):
    index.add_subjects("a", ["news"])
    index.add_patterns("a", [compile_pattern("ne.*"), compile_pattern("n")])
    assert Router().targets(index.route("news"), "m") == {"a"}


def test_plain_routes_are_simple_and_give_their_keys_as_they_are(index):
    index.add_subjects("a", ["news"])
    route = index.route("news")
    assert route.simple and Router().targets(route, None) is route.plain


def test_filters_choose_by_message(index):
    index.add_subjects("sun", ["quotes"], options(spec=["==", "symbol", "SUN"]))
    index.add_subjects("cheap", ["quotes"], options(spec=["<", "price", 10]))
    index.add_subjects("all", ["quotes"])
    router, route = Router(), index.route("quotes")
    assert router.targets(route, {"symbol": "SUN", "price": 22}) == {"sun", "all"}
    assert router.targets(route, {"symbol": "IBM", "price": 5}) == {"cheap", "all"}
    assert router.targets(route, "not a dict") == {"all"}
    assert router.targets(route, {"symbol": ["unhashable"]}) == {"all"}


def test_a_plain_subscription_of_a_key_beats_its_filtered_one(index):
    index.add_subjects("a", ["quotes"], options(spec=["==", "x", 1]))
    index.add_patterns("a", [compile_pattern("quo.*")])
    assert Router().targets(index.route("quotes"), {"x": 2}) == {"a"}


def test_one_member_of_each_group_gets_an_event_in_turn(index):
    for key in ("w1", "w2", "w3"):
        index.add_subjects(key, ["jobs"], options(group="workers"))
    index.add_subjects("auditor", ["jobs"], options(group="audit"))
    router, route = Router(), index.route("jobs")
    chosen = []
    for n in range(30):
        targets = router.targets(route, n)
        assert "auditor" in targets and len(targets) == 2
        chosen += [t for t in targets if t != "auditor"]
    assert Counter(chosen) == {"w1": 10, "w2": 10, "w3": 10}


def test_groups_prefer_live_members_and_apply_member_filters(index):
    index.add_subjects("frozen", ["jobs"], options(group="g"))
    index.add_subjects("even", ["jobs"], options(group="g", spec=["==", "parity", "even"]))
    index.add_subjects("any", ["jobs"], options(group="g"))
    router = Router(is_live=lambda key: key != "frozen")
    route = index.route("jobs")
    picked = Counter(next(iter(router.targets(route, {"parity": "odd"}))) for _ in range(10))
    assert picked == {"any": 10}
    picked = Counter(next(iter(router.targets(route, {"parity": "even"}))) for _ in range(10))
    assert picked == {"any": 5, "even": 5}
    everyone_frozen = Router(is_live=lambda key: False)  # then anyone passing is better than no one
    assert len(everyone_frozen.targets(route, {"parity": "odd"})) == 1


def test_route_is_a_frozen_value():
    route = Route.build([("a", Options()), ("b", options(group="g"))])
    assert route.keys == {"a", "b"} and not route.simple
    with pytest.raises(AttributeError):
        route.plain = frozenset()  # type: ignore[misc]
    assert NOWHERE.keys == frozenset() and NOWHERE.simple


def test_group_picks_are_told_and_a_group_member_can_be_picked_again(index):
    index.add_subjects("w1", ["jobs"], options("crew"))
    index.add_subjects("w2", ["jobs"], options("crew", [">", "size", 5]))
    index.add_subjects("audit", ["jobs"])
    router, route = Router(), index.route("jobs")
    picks = {}
    targets = router.targets(route, {"size": 1}, picks)
    assert targets == {"w1", "audit"} and picks == {"w1": "crew"}
    index.remove_subscriber("w1")  # gone: its event goes to a member still there, if its filter passes
    assert router.pick(index.route("jobs"), "crew", {"size": 9}) == "w2"
    assert router.pick(index.route("jobs"), "crew", {"size": 1}) is None
    assert router.pick(index.route("jobs"), "other", {"size": 9}) is None
