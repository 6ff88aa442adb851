"""The subscriber core's one subscription set, without a network: who holds what, with which
group and filter, what is unsubscribed when the last holder lets go, and the calls that
subscribe everything again after a restart."""

import pytest

from eventservice.subscriber_core import OWN, PATTERN, PLAIN, SUBJECT, Call, SubscriptionSet

JOBS = ("crew", None)  # a work-queue group
CHEAP = (None, ["<", "price", 10])  # a filter


def test_a_subscription_held_by_several_goes_only_with_the_last_holder():
    held = SubscriptionSet()
    held.add(OWN, SUBJECT, ["News"], PLAIN)
    held.add("handler", SUBJECT, ["NEWS", "weather"], None)
    assert held.remove(OWN) == ([], [])
    assert held.remove("handler", ["news"]) == (["News"], [])  # as first spelled
    assert held.remove("handler") == (["weather"], [])
    assert not held


def test_exact_subjects_are_one_subscription_whatever_the_case_patterns_are_not():
    held = SubscriptionSet()
    held.add("a", SUBJECT, ["Stock"], None)
    held.add("a", PATTERN, ["Stock.*"], None)
    held.add("b", PATTERN, ["stock.*"], None)
    assert held.calls() == [Call("subscribe", ["Stock"], ()), Call("subscribeMatch", ["Stock.*", "stock.*"], ())]
    assert held.remove("a", ["STOCK", "STOCK.*"]) == (["Stock"], [])  # a pattern by its very source
    assert held.remove("a", ["Stock.*"]) == (["Stock.*"], [])


def test_options_are_the_subscriptions_and_a_handler_keeps_them():
    held = SubscriptionSet()
    held.add(OWN, SUBJECT, ["jobs"], JOBS)
    assert held.plan("handler", SUBJECT, ["jobs", "other"], None) == [Call("subscribe", ["jobs"], ("crew",)),
                                                                      Call("subscribe", ["other"], ())]
    held.add("handler", SUBJECT, ["jobs"], None)
    assert held.calls() == [Call("subscribe", ["jobs"], ("crew",))]
    assert held.plan(OWN, SUBJECT, ["jobs"], PLAIN) == [Call("subscribe", ["jobs"], ())]
    held.add(OWN, SUBJECT, ["JOBS"], CHEAP)  # subscribing again replaces them, as in the service
    assert held.calls() == [Call("subscribe", ["jobs"], (None, ["<", "price", 10]))]


def test_the_service_holds_a_subject_once_with_its_holders_filters_combined():
    held = SubscriptionSet()
    users, admins = (None, ["==", "role", "user"]), (None, ["==", "role", "admin"])
    held.add("a", SUBJECT, ["user.created"], users)
    held.add("b", SUBJECT, ["user.created"], admins)
    held.add("c", SUBJECT, ["user.created"], users)  # the same filter twice is sent once
    either = (None, ["or", ["==", "role", "user"], ["==", "role", "admin"]])
    assert held.calls() == [Call("subscribe", ["user.created"], either)]
    assert held.plan("d", SUBJECT, ["user.created"], PLAIN) == [Call("subscribe", ["user.created"], ())]
    held.add("d", SUBJECT, ["user.created"], PLAIN)  # one taking everything: no filter at the service
    assert held.remove("d") == ([], [Call("subscribe", ["user.created"], either)])  # narrowed again
    assert held.remove("b") == ([], [Call("subscribe", ["user.created"], users)])
    assert held.remove("a") == ([], [])  # "c" wants the same: nothing changes at the service


def test_holders_of_one_subscription_share_its_group():
    held = SubscriptionSet()
    held.add("worker", SUBJECT, ["jobs"], ("crew", ["<", "size", 5]))
    assert held.plan("other", SUBJECT, ["jobs"], ("crew", None)) == [Call("subscribe", ["jobs"], ("crew",))]
    for options in (PLAIN, ("other crew", None)):
        with pytest.raises(ValueError, match="one group"):
            held.plan("other", SUBJECT, ["jobs"], options)
    assert held.plan("inherits", SUBJECT, ["jobs"], None) == [Call("subscribe", ["jobs"], ("crew", ["<", "size", 5]))]


def test_what_is_still_held_under_an_unsubscribed_string_is_subscribed_again_with_its_options():
    held = SubscriptionSet()
    held.add("exact", SUBJECT, ["x"], None)
    held.add("pattern", PATTERN, ["X"], None)
    held.add(OWN, PATTERN, ["x"], CHEAP)
    # the service's unsubscribe("x") takes the subject and the pattern "x" alike
    assert held.remove("exact") == (["x"], [Call("subscribeMatch", ["x"], (None, ["<", "price", 10]))])
    assert held.remove("pattern") == (["X"], [])  # patterns by their very source


def test_drop_forgets_both_kinds_for_every_holder_and_clear_forgets_all():
    held = SubscriptionSet()
    held.add(OWN, SUBJECT, ["a", "b"], PLAIN)
    held.add("handler", PATTERN, ["a", "c.*"], None)
    held.drop(["A", "a"])
    assert held.calls() == [Call("subscribe", ["b"], ()), Call("subscribeMatch", ["c.*"], ())]
    assert held.clear() == ["b", "c.*"]
    assert not held and held.calls() == []


def test_letting_go_of_what_one_does_not_hold_changes_nothing():
    held = SubscriptionSet()
    held.add(OWN, SUBJECT, ["a"], PLAIN)
    assert held.remove("stranger") == ([], [])
    assert held.remove("stranger", ["a"]) == ([], [])
    assert held.calls() == [Call("subscribe", ["a"], ())]
