"""The subscriber core's one subscription set, without a network: who holds what, with which
group and filter, what is unsubscribed when the last holder lets go, and the calls that
subscribe everything again after a restart."""

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
    assert held.plan(SUBJECT, ["jobs", "other"], None) == [Call("subscribe", ["jobs"], ("crew",)),
                                                           Call("subscribe", ["other"], ())]
    held.add("handler", SUBJECT, ["jobs"], None)
    assert held.calls() == [Call("subscribe", ["jobs"], ("crew",))]
    assert held.plan(SUBJECT, ["jobs"], PLAIN) == [Call("subscribe", ["jobs"], ())]
    held.add(OWN, SUBJECT, ["JOBS"], CHEAP)  # subscribing again replaces them, as in the service
    assert held.calls() == [Call("subscribe", ["jobs"], (None, ["<", "price", 10]))]


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
