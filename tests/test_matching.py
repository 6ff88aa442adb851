"""The matching core on its own: SubscriptionIndex, no sockets."""

import pytest

from eventservice.matching import SubscriptionIndex
from eventservice.patterns import compile_pattern


def patterns(*sources):
    return [compile_pattern(s) for s in sources]


@pytest.fixture
def index():
    return SubscriptionIndex()


# -- exact subjects ----------------------------------------------------------------------

def test_exact_subject_matches_whatever_the_case(index):
    index.add_subjects("a", ["StockQuotes"])
    assert index.match("stockquotes") == {"a"}
    assert index.match("STOCKQUOTES") == {"a"}
    assert index.match("StockQuotes") == {"a"}


def test_exact_subject_uses_casefold_not_lower(index):
    index.add_subjects("a", ["STRASSE"])
    assert index.match("straße") == {"a"}


def test_exact_subject_does_not_match_prefix_or_longer_subject(index):
    index.add_subjects("a", ["stock"])
    assert index.match("stockquotes") == set()
    assert index.match("sto") == set()


def test_subscribing_the_same_subject_in_two_spellings_is_one_subscription(index):
    index.add_subjects("a", ["News", "NEWS"])
    index.add_subjects("a", ["news"])
    assert index.counts()["subject_subscriptions"] == 1
    assert index.subscriptions_of("a") == (["news"], [])


# -- patterns -----------------------------------------------------------------------------

def test_pattern_ignores_case(index):
    index.add_patterns("a", patterns("stock.*sun"))
    assert index.match("STOCKQUOTES.SUN") == {"a"}


def test_pattern_is_anchored_at_the_start_like_re_match(index):
    index.add_patterns("a", patterns("stock", "quotes"))
    assert index.match("stockquotes") == {"a"}
    assert index.match("xstock") == set()
    index.add_patterns("b", patterns("quotes"))
    assert "b" not in index.match("stockquotes")


def test_dollar_anchors_the_end(index):
    index.add_patterns("a", patterns("stock$"))
    assert index.match("Stock") == {"a"}
    assert index.match("stockquotes") == set()


# -- who gets an event ----------------------------------------------------------------------

def test_key_matched_by_several_subscriptions_appears_once(index):
    index.add_subjects("a", ["stockquotes"])
    index.add_patterns("a", patterns("stock", "s.*"))
    index.add_subjects("b", ["STOCKQUOTES"])
    found = index.match("StockQuotes")
    assert sorted(found) == ["a", "b"]
    assert len(found) == 2


def test_several_subscribers_of_one_pattern_all_match(index):
    for key in ("a", "b", "c"):
        index.add_patterns(key, patterns("news\\..*"))
    assert index.match("news.sport") == {"a", "b", "c"}
    assert index.counts() == {"subscribers": 3, "subject_subscriptions": 0, "pattern_subscriptions": 3}


def test_nobody_subscribed_matches_nothing(index):
    assert index.match("anything") == set()


# -- removing -----------------------------------------------------------------------------

def test_remove_by_the_same_string_removes_exact_and_pattern(index):
    index.add_subjects("a", ["stock"])
    index.add_patterns("a", patterns("stock"))
    index.remove("a", ["stock"])
    assert index.match("stock") == set()
    assert index.match("stockquotes") == set()
    assert index.subscriptions_of("a") == ([], [])
    assert index.subscribers() == set()


def test_remove_exact_subject_is_case_insensitive(index):
    index.add_subjects("a", ["StockQuotes"])
    index.remove("a", ["STOCKQUOTES"])
    assert index.match("stockquotes") == set()


def test_remove_pattern_needs_the_same_string(index):
    index.add_patterns("a", patterns("Stock.*"))
    index.remove("a", ["stock.*"])
    assert index.match("stockquotes") == {"a"}
    index.remove("a", ["Stock.*"])
    assert index.match("stockquotes") == set()


def test_remove_of_unknown_names_is_ignored(index):
    index.add_subjects("a", ["news"])
    index.remove("a", ["weather", "w.*", "news.*"])
    index.remove("nobody", ["news"])
    assert index.match("news") == {"a"}
    assert index.counts() == {"subscribers": 1, "subject_subscriptions": 1, "pattern_subscriptions": 0}


def test_remove_leaves_other_subscribers_alone(index):
    index.add_subjects("a", ["news"])
    index.add_subjects("b", ["news"])
    index.add_patterns("b", patterns("n.*"))
    index.add_patterns("a", patterns("n.*"))
    index.remove("a", ["news", "n.*"])
    assert index.match("news") == {"b"}
    assert index.subscribers() == {"b"}


def test_remove_subscriber_removes_all_its_subscriptions(index):
    index.add_subjects("a", ["news", "weather"])
    index.add_patterns("a", patterns("stock.*"))
    index.add_subjects("b", ["news"])
    assert index.remove_subscriber("a") is True
    assert index.match("news") == {"b"}
    assert index.match("weather") == set()
    assert index.match("stockquotes") == set()
    assert index.counts() == {"subscribers": 1, "subject_subscriptions": 1, "pattern_subscriptions": 0}
    assert index.remove_subscriber("a") is False


# -- the cache ------------------------------------------------------------------------------

def test_subscribe_after_a_cached_match_is_seen(index):
    assert index.match("news") == set()
    index.add_subjects("a", ["NEWS"])
    assert index.match("news") == {"a"}
    index.add_patterns("b", patterns("ne"))
    assert index.match("news") == {"a", "b"}


def test_remove_after_a_cached_match_is_seen(index):
    index.add_subjects("a", ["news"])
    index.add_patterns("b", patterns("news"))
    assert index.match("news") == {"a", "b"}
    index.remove("a", ["news"])
    assert index.match("news") == {"b"}
    index.remove_subscriber("b")
    assert index.match("news") == set()


def test_failed_change_leaves_cached_answers_true():
    index = SubscriptionIndex(max_subscriptions=1)
    index.add_subjects("a", ["news"])
    assert index.match("news") == {"a"}
    with pytest.raises(ValueError):
        index.add_subjects("a", ["weather"])
    assert index.match("news") == {"a"}
    assert index.match("weather") == set()


# -- the per-subscriber limit ---------------------------------------------------------------

def test_limit_raises_value_error_and_changes_nothing():
    index = SubscriptionIndex(max_subscriptions=3)
    index.add_subjects("a", ["one", "two"])
    index.add_patterns("a", patterns("three"))
    before = index.counts()
    with pytest.raises(ValueError):
        index.add_subjects("a", ["four"])
    with pytest.raises(ValueError):
        index.add_patterns("a", patterns("four", "five"))
    assert index.counts() == before
    assert index.match("four") == set()
    assert index.match("five") == set()
    assert index.subscriptions_of("a") == (["one", "two"], ["three"])


def test_limit_is_all_or_nothing_for_a_list():
    index = SubscriptionIndex(max_subscriptions=3)
    index.add_subjects("a", ["one"])
    with pytest.raises(ValueError):
        index.add_subjects("a", ["two", "three", "four"])
    assert index.subscriptions_of("a") == (["one"], [])
    assert index.match("two") == set()


def test_limit_counts_only_new_subscriptions():
    index = SubscriptionIndex(max_subscriptions=2)
    index.add_subjects("a", ["one", "two"])
    index.add_subjects("a", ["ONE", "Two"])  # already held: not new
    assert index.counts()["subject_subscriptions"] == 2


def test_limit_is_per_subscriber():
    index = SubscriptionIndex(max_subscriptions=1)
    index.add_subjects("a", ["news"])
    index.add_subjects("b", ["news"])
    assert index.match("news") == {"a", "b"}


def test_limit_for_a_new_subscriber_leaves_no_trace():
    index = SubscriptionIndex(max_subscriptions=1)
    with pytest.raises(ValueError):
        index.add_patterns("a", patterns("x", "y"))
    assert index.subscribers() == set()
    assert index.counts() == {"subscribers": 0, "subject_subscriptions": 0, "pattern_subscriptions": 0}


# -- counts ---------------------------------------------------------------------------------

def test_counts_follow_changes(index):
    assert index.counts() == {"subscribers": 0, "subject_subscriptions": 0, "pattern_subscriptions": 0}
    index.add_subjects("a", ["x", "y"])
    index.add_subjects("b", ["x"])
    index.add_patterns("b", patterns("z.*", "x"))
    assert index.counts() == {"subscribers": 2, "subject_subscriptions": 3, "pattern_subscriptions": 2}
    index.remove("b", ["x"])  # the exact "x" and the pattern "x"
    assert index.counts() == {"subscribers": 2, "subject_subscriptions": 2, "pattern_subscriptions": 1}
    index.remove("b", ["z.*"])
    assert index.counts() == {"subscribers": 1, "subject_subscriptions": 2, "pattern_subscriptions": 0}


# -- routing cost: paid by whoever causes it -------------------------------------------------

class Counting:
    """A pattern that counts its matches (the index uses source, literal_prefix, cost, match)."""

    def __init__(self, source):
        self._pattern = compile_pattern(source)
        self.source, self.literal_prefix, self.cost = source, self._pattern.literal_prefix, self._pattern.cost
        self.calls = []

    def match(self, subject):
        self.calls.append(subject)
        return self._pattern.match(subject)


def test_a_change_patches_the_cache_and_never_empties_it(index):
    """Subscribing or unsubscribing somewhere never makes a cached subject fresh again: its
    route is kept, or patched without matching any old pattern against it again."""
    old = Counting(r"quotes\..*")
    index.add_patterns("a", [old])
    route = index.route("quotes.sun")
    assert route.keys == {"a"} and old.calls == ["quotes.sun"]
    index.add_subjects("b", ["weather"])  # another subject: the cached route is the same object
    index.add_patterns("c", patterns(r"weather\..*"))  # a prefix that cannot match: not even tried
    assert index.route("quotes.sun") is route
    new = Counting(".*sun")  # could match anything: matched once, by the subscriber's call, against it
    index.add_patterns("d", [new])
    assert new.calls == ["quotes.sun"]
    assert index.route("quotes.sun").keys == {"a", "d"}
    index.remove("d", [".*sun"])
    index.remove_subscriber("c")
    assert index.route("quotes.sun").keys == {"a"}
    assert old.calls == ["quotes.sun"] and new.calls == ["quotes.sun"]


def test_a_fresh_subject_is_matched_only_against_patterns_its_prefix_allows(index):
    here, there = Counting(r"here\..*"), Counting(r"there\..*")
    index.add_patterns("a", [here, there])
    assert index.route("here.x").keys == {"a"}
    assert here.calls == ["here.x"] and there.calls == []


def test_folded_letters_still_find_the_pattern(index):
    """re's IGNORECASE matches 's' to U+017F and 'i' to U+0130/U+0131: the prefix index
    must not lose those subjects."""
    index.add_patterns("a", patterns("stock", "is"))
    assert index.match("\u017ftock") == {"a"}
    assert index.match("\u0131s") == {"a"} and index.match("\u0130s") == {"a"}


def test_a_subject_cached_while_a_pattern_was_being_added_sees_it(index):
    pattern = compile_pattern("late.*")
    prepared = index.prepare([pattern])  # matched against the cache as it was
    assert index.match("latecomer") == set()  # cached meanwhile, without the new pattern
    index.add_patterns("a", prepared)
    assert index.match("latecomer") == {"a"}


def test_pattern_cost_budget_is_a_clear_error_and_changes_nothing():
    costly = compile_pattern(".*.*x")
    index = SubscriptionIndex(max_pattern_cost=costly.cost * 2)
    index.add_patterns("a", [costly, compile_pattern(".*.*y")])
    with pytest.raises(ValueError, match="--max-pattern-cost"):
        index.add_patterns("a", patterns(".*.*z"))
    assert index.subscriptions_of("a") == ([], [".*.*x", ".*.*y"])
    index.add_patterns("b", patterns(".*.*z"))  # per subscriber
    index.remove("a", [".*.*x"])
    index.add_patterns("a", patterns(".*.*z"))  # what was given back may be used again
    assert index.spent("a")[0] == costly.cost * 2


def test_filter_nodes_budget_counts_every_subscription():
    from eventservice.filters import compile_filter
    from eventservice.routing import Options
    three = ["and", ["==", "a", 1], ["==", "b", 2]]
    index = SubscriptionIndex(max_filter_nodes=7)
    index.add_subjects("a", ["x", "y"], Options(filter=compile_filter(three), spec=three))
    with pytest.raises(ValueError, match="--max-filter-nodes"):
        index.add_patterns("a", patterns("z"), Options(filter=compile_filter(three), spec=three))
    assert index.spent("a") == (0, 6)
    index.add_subjects("a", ["x"])  # no filter on x any more: its nodes come back
    assert index.spent("a") == (0, 3)
