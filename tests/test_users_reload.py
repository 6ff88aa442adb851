"""Reloading the users file of a running es (SIGHUP, or ``es reload`` by an admin): new rules
at once, forbidden subscriptions removed and their subscribers told, the rest kept; a file
that cannot be used is refused and the old rules stay. Real es processes."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from eventservice import PermissionDenied, Publisher

from conftest import HELPERS, Cluster, EsProc, wait_for

sys.path.insert(0, str(HELPERS))
from users_kit import PASSWORDS, USERS, login, start_users_es, stats, subjects_of, users_file  # noqa: E402

BOB_NARROWED = USERS.replace("""publish = ['bob\\..*', 'orders\\.public\\..*']
subscribe = ['bob\\..*', 'orders\\.public\\..*', 'jobs', 'es\\.presence\\..*']""", """publish = ['bob\\..*']
subscribe = ['bob\\..*', 'jobs']""")
BOB_GONE = USERS[:USERS.index("[users.bob]")] + USERS[USERS.index("[users.monitor]"):]


def reload_as(cluster: Cluster, es: EsProc, user: str) -> Any:
    return cluster.cli("reload", "--esuri", es.uri, "-u", user, "--password", PASSWORDS[user])


def presence_of(sub: Any, subject: str) -> Any:
    return [e for e in sub.recorder.events if e.subject == subject]


def revocations(sub: Any) -> Any:
    return [e for e in presence_of(sub, "es.presence.subscriber.changed") if "revoked" in e.msg]


def test_sighup_removes_what_the_new_rules_forbid_and_tells_the_subscriber(
        cluster: Cluster, tmp_path: Path, make_subscriber: Any) -> None:
    assert BOB_NARROWED != USERS and BOB_GONE != USERS
    path = users_file(tmp_path)
    es = start_users_es(cluster, path)
    watcher = make_subscriber(esURI=es.uri, **login("alice"))
    watcher.subscribe("es.presence.subscriber.changed")
    bob = make_subscriber(esURI=es.uri, **login("bob"))
    bob.subscribe(["bob.news", "orders.public.prices"])
    bob.subscribeMatch(r"orders\..*")
    with Publisher(esURI=es.uri, **login("alice")) as alice:
        alice.publish("orders.public.prices", "before")
        wait_for(lambda: subjects_of(bob) == ["orders.public.prices"], 10, "the event before the reload")
        before = stats(es)
        path.write_text(BOB_NARROWED)
        es.signal(signal.SIGHUP)
        wait_for(lambda: revocations(bob), 10, "bob's subscriber told")
        told = revocations(bob)[0].msg
        assert told["subscriber"] == bob.uri and told["user"] == "bob" and "reloaded" in told["reason"]
        assert told["revoked"] == ["orders.public.prices"]
        assert told["subjects"] == ["bob.news"] and told["patterns"] == [r"orders\..*"]  # kept
        wait_for(lambda: revocations(watcher), 10, "the announcement")
        assert revocations(watcher)[0].msg["revoked"] == ["orders.public.prices"]
        after = stats(es)
        assert after["published"] == before["published"] and after["delivered"] >= before["delivered"]
        assert after["subject_subscriptions"] == before["subject_subscriptions"] - 1
        alice.publish("orders.public.prices", "after")  # neither the exact nor the pattern takes it now
    with Publisher(esURI=es.uri, **login("bob")) as publisher:
        with pytest.raises(PermissionDenied):
            publisher.publish("orders.public.prices", "bob's")  # his publish rule went too
        publisher.publish("bob.news", "fence")
    wait_for(lambda: "bob.news" in subjects_of(bob), 10, "bob's fence")
    assert [(e.subject, e.msg) for e in bob.recorder.events if not e.subject.startswith("es.")] == \
        [("orders.public.prices", "before"), ("bob.news", "fence")]


def test_a_user_dropped_from_the_file_loses_its_subscriber_and_its_rights(
        cluster: Cluster, tmp_path: Path, make_subscriber: Any) -> None:
    path = users_file(tmp_path)
    es = start_users_es(cluster, path)
    bob = make_subscriber(esURI=es.uri, **login("bob"))
    bob.subscribe("bob.news")
    publisher = Publisher(esURI=es.uri, **login("bob"))
    try:
        publisher.publish("bob.news", 1)
        wait_for(lambda: bob.recorder.events, 10, "bob's event")
        path.write_text(BOB_GONE)
        result = reload_as(cluster, es, "alice")
        assert result.returncode == 0 and "revoked the subscriptions of 1 subscriber" in result.stdout, result
        wait_for(lambda: presence_of(bob, "es.presence.subscriber.removed"), 10, "bob told he was removed")
        assert presence_of(bob, "es.presence.subscriber.removed")[0].msg["revoked"] == ["bob.news"]
        assert stats(es)["subscribers"] == 0
        with pytest.raises(PermissionDenied, match="user 'bob' may publish nothing"):
            publisher.publish("bob.news", 2)  # his open connection may do nothing any more
    finally:
        publisher.close()
    with pytest.raises(Exception, match="wrong password, or a user it does not know"):
        with Publisher(esURI=es.uri, **login("bob")) as again:
            again.publish("bob.news", 3)


def test_a_bad_file_is_refused_on_reload_and_the_old_rules_stay(cluster: Cluster, tmp_path: Path) -> None:
    path = users_file(tmp_path)
    es = start_users_es(cluster, path)
    path.write_text(USERS.replace("deny_subscribe", "deny_subscrbe"))
    result = reload_as(cluster, es, "alice")
    assert result.returncode == 1 and "unknown key 'deny_subscrbe'" in result.stderr, result
    line = USERS.replace("deny_subscribe", "deny_subscrbe").splitlines().index(
        "deny_subscrbe = ['orders\\.secret\\..*']") + 1
    assert f"line {line}" in result.stderr, result.stderr
    es.signal(signal.SIGHUP)
    es.wait_line(r"users file refused, the old rules stay: .*deny_subscrbe", stream="stderr")
    with Publisher(esURI=es.uri, **login("bob")) as publisher:
        publisher.publish("orders.public.x", 1)  # bob's old rules still hold
    assert reload_as(cluster, es, "bob").returncode == 1  # and only admins may reload
