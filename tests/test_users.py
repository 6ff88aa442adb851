"""Users and permissions (es --users): who may connect, publish, subscribe and change what.

Everything is real: an ``es`` process serving a users file (tests/helpers/users_kit.py),
clients in this process logged in as its users, plain Pyro5 proxies presenting a user and
password. A refused call raises, changes nothing and delivers nothing; events published
after it by the same publisher (a fence) show that nothing arrived before them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import Pyro5.api
import Pyro5.errors
import pytest

from eventservice import PermissionDenied, Publisher, Subscriber
from eventservice.errors import EventServiceError

from conftest import HELPERS, Cluster, EsProc, wait_for

sys.path.insert(0, str(HELPERS))
from users_kit import (PASSWORDS, login, plain_proxy, start_users_es, stats, subjects_of, users_file,  # noqa: E402
                       wait_subject)


@pytest.fixture
def es(cluster: Cluster, tmp_path: Path) -> EsProc:
    return start_users_es(cluster, users_file(tmp_path))


# -- logging in ----------------------------------------------------------------------------------

@pytest.mark.parametrize("who", [{}, {"user": "mallory", "password": "x"}, {"user": "alice", "password": "wrong"}])
def test_a_client_that_is_not_a_user_is_refused_when_it_connects(es: EsProc, who: dict) -> None:
    with pytest.raises(Pyro5.errors.PyroError) as info:
        with Publisher(esURI=es.uri, **who) as publisher:
            publisher.publish("orders.new", 1)
    if who:  # the same answer for an unknown user and a wrong password
        assert "wrong password, or a user it does not know" in str(info.value), info.value
    else:
        assert "knows users" in str(info.value) and "--user" in str(info.value), info.value


def test_a_user_logs_in_with_its_password_also_from_the_environment(
        es: EsProc, monkeypatch: pytest.MonkeyPatch) -> None:
    with Publisher(esURI=es.uri, **login("alice")) as publisher:
        publisher.publish("orders.new", 1)
    monkeypatch.setenv("EVENTSERVICE_USER", "bob")
    monkeypatch.setenv("EVENTSERVICE_PASSWORD", PASSWORDS["bob"])
    with Publisher(esURI=es.uri) as publisher:
        assert publisher.user == "bob"
        publisher.publish("bob.news", 1)
        with pytest.raises(PermissionDenied, match="'bob'"):
            publisher.publish("orders.new", 1)
    assert stats(es)["published"] == 2


def test_a_plain_client_presents_user_and_password(cluster: Cluster, tmp_path: Path) -> None:
    es = start_users_es(cluster, users_file(tmp_path))
    with plain_proxy(es, "bob") as proxy:
        proxy.publish("bob.news", 1)
        with pytest.raises(PermissionError, match=r"user 'bob' may not publish 'orders\.new'"):
            proxy.publish("orders.new", 1)
    with pytest.raises(Pyro5.errors.CommunicationError, match="wrong password"):
        with es.proxy() as proxy:
            proxy._pyroHandshake = {"user": "bob", "password": "guess"}
            proxy.ping()
    strict = start_users_es(cluster, users_file(tmp_path), "--no-clear-ident")
    with pytest.raises(Pyro5.errors.CommunicationError, match="in clear"):
        with plain_proxy(strict, "bob") as proxy:
            proxy.ping()
    with Publisher(esURI=strict.uri, **login("bob")) as publisher:  # a proof is still welcome
        publisher.publish("bob.news", 2)


def test_es_refuses_a_bad_users_file_at_start_naming_line_and_key(cluster: Cluster, tmp_path: Path) -> None:
    bad = users_file(tmp_path, '[users.a]\npassword = "x"\n\npubish = ["a"]\n', "typo.toml")
    proc = cluster.es("-N", "--users", str(bad), wait=False)
    assert proc.wait_exit(30) != 0
    assert any(re.search(r"typo\.toml, line 4: unknown key 'pubish'", line) for line in proc.stderr), proc.output()
    broken = users_file(tmp_path, '[users.a]\npassword = "x\n', "broken.toml")
    result = cluster.cli("-N", "-n", "127.0.0.1", "--users", str(broken))
    assert result.returncode != 0 and "line 2" in result.stderr and "not valid TOML" in result.stderr, result


def test_users_and_passphrase_exclude_each_other(cluster: Cluster, tmp_path: Path) -> None:
    result = cluster.cli("-N", "-n", "127.0.0.1", "-i", "secret", "--users", str(users_file(tmp_path)))
    assert result.returncode != 0 and "exclude each other" in result.stderr, result


# -- publishing ----------------------------------------------------------------------------------

def test_publish_needs_an_allow_rule_and_no_deny_rule(es: EsProc, make_subscriber: Any) -> None:
    monitor = make_subscriber(esURI=es.uri, **login("monitor"))
    monitor.subscribeMatch(".*")
    with Publisher(esURI=es.uri, **login("alice")) as publisher:
        publisher.publish("orders.new", 1)
        with pytest.raises(PermissionDenied) as info:
            publisher.publish(["orders.ok", "orders.internal.audit"], 2)  # all or nothing
        with pytest.raises(PermissionDenied, match="no publish rule of user 'alice'"):
            publisher.publish("elsewhere", 3)
        publisher.publish("alice.fence", 4)
    denied = info.value
    assert isinstance(denied, PermissionError) and isinstance(denied, EventServiceError)
    assert (denied.user, denied.action, denied.subject) == ("alice", "publish", "orders.internal.audit")
    assert "deny_publish rule" in str(denied)
    wait_subject(monitor, "alice.fence")
    assert subjects_of(monitor) == ["orders.new", "alice.fence"]


def test_a_user_without_publish_rules_publishes_nothing_and_batches_report_it(es: EsProc) -> None:
    with Publisher(esURI=es.uri, batch=True, **login("monitor")) as publisher:
        publisher.publish("anything", 1)
        with pytest.raises(PermissionDenied, match="user 'monitor' may publish nothing"):
            publisher.flush()
    assert stats(es)["published"] == 0


# -- subscribing ---------------------------------------------------------------------------------

def test_subscribing_to_an_exact_subject_needs_the_subscribe_rules(es: EsProc, make_subscriber: Any) -> None:
    sub = make_subscriber(esURI=es.uri, **login("alice"))
    sub.subscribe("orders.new")
    with pytest.raises(PermissionDenied, match="deny_subscribe rule") as info:
        sub.subscribe(["orders.other", "orders.secret.plans"])  # all or nothing
    assert (info.value.action, info.value.subject) == ("subscribe", "orders.secret.plans")
    with pytest.raises(PermissionDenied):
        sub.subscribe("bob.news")
    counts = stats(es)
    assert counts["subject_subscriptions"] == 1 and counts["subscribers"] == 1


def test_a_pattern_receives_only_what_its_user_may_subscribe_to(es: EsProc, make_subscriber: Any) -> None:
    bob = make_subscriber(esURI=es.uri, **login("bob"))
    bob.subscribeMatch([".*", r"orders\..*"])
    with Publisher(esURI=es.uri, **login("alice")) as alice:
        for subject in ("orders.new", "orders.public.prices", "orders.x", "alice.fence"):
            alice.publish(subject, subject)
    with Publisher(esURI=es.uri, **login("bob")) as publisher:
        publisher.publish("bob.fence", 1)
    wait_subject(bob, "bob.fence")
    assert subjects_of(bob) == ["orders.public.prices", "bob.fence"]
    nothing = make_subscriber(esURI=es.uri, **login("nobody"))
    with pytest.raises(PermissionDenied, match="user 'nobody' may subscribe to nothing"):
        nothing.subscribeMatch(".*")


def test_presence_events_name_the_user_and_reach_only_those_allowed(es: EsProc, make_subscriber: Any) -> None:
    watcher = make_subscriber(esURI=es.uri, **login("alice"))
    watcher.subscribeMatch(r"es\.presence\.subscriber\..*")
    nosy = make_subscriber(esURI=es.uri, **login("nobody"))
    with pytest.raises(PermissionDenied):
        nosy.subscribe("es.presence.subscriber.joined")
    bob = make_subscriber(esURI=es.uri, **login("bob"))
    bob.subscribe("bob.news")
    wait_for(lambda: any(e.msg.get("subscriber") == bob.uri for e in watcher.recorder.events), 10, "bob joined")
    joined = [e for e in watcher.recorder.events if e.msg.get("subscriber") == bob.uri][0]
    assert joined.subject == "es.presence.subscriber.joined" and joined.msg["user"] == "bob"
    with pytest.raises(ValueError, match="reserved"):  # only the service writes them
        with Publisher(esURI=es.uri, **login("alice")) as publisher:
            publisher.publish("es.presence.subscriber.left", {"subscriber": bob.uri})


# -- the six interferences of issue 15: each refused -------------------------------------------------

@pytest.fixture
def alices(es: EsProc, make_subscriber: Any) -> Any:
    """alice's subscriber, on alice.news and orders.new."""
    sub = make_subscriber(esURI=es.uri, **login("alice"))
    sub.subscribe(["alice.news", "orders.new"])
    return sub


def assert_alice_still_receives(es: EsProc, sub: Any, marker: str) -> None:
    with Publisher(esURI=es.uri, **login("alice")) as publisher:
        publisher.publish("alice.news", {"marker": marker, "n": 1})
    wait_for(lambda: any(isinstance(e.msg, dict) and e.msg.get("marker") == marker for e in sub.recorder.events),
             10, f"alice's event {marker}")


def test_another_user_cannot_unsubscribe_a_subscriber(es: EsProc, alices: Any) -> None:
    with plain_proxy(es, "bob") as bob:
        with pytest.raises(PermissionError, match=r"user 'bob' may not unsubscribe .*belongs to user 'alice'"):
            bob.unsubscribe(["alice.news", "orders.new"], Pyro5.api.Proxy(alices.uri))
    assert stats(es)["subject_subscriptions"] == 2
    assert_alice_still_receives(es, alices, "after bob's unsubscribe")


def test_another_user_cannot_resubscribe_it_with_another_filter(es: EsProc, alices: Any) -> None:
    with plain_proxy(es, "monitor") as monitor:  # monitor may subscribe to alice.news, but not for alice
        with pytest.raises(PermissionError, match=r"user 'monitor' may not change .*belongs to user 'alice'"):
            monitor.subscribe("alice.news", Pyro5.api.Proxy(alices.uri), None, ["==", "never", 1])
    assert_alice_still_receives(es, alices, "after monitor's filter")


def test_another_user_cannot_resubscribe_it_into_a_group(es: EsProc, alices: Any, make_subscriber: Any) -> None:
    rival = make_subscriber(esURI=es.uri, **login("monitor"))
    rival.subscribe("alice.news", group="trap")
    with plain_proxy(es, "monitor") as monitor:
        with pytest.raises(PermissionError, match=r"user 'monitor' may not change"):
            monitor.subscribe("alice.news", Pyro5.api.Proxy(alices.uri), "trap")
    with Publisher(esURI=es.uri, **login("alice")) as publisher:
        for n in range(10):
            publisher.publish("alice.news", n)
    wait_for(lambda: len(alices.recorder.events) == 10, 10, "all 10 events at alice's subscriber")
    assert [e.msg for e in alices.recorder.events] == list(range(10))


def test_another_user_cannot_take_a_work_queue_groups_jobs(es: EsProc, make_subscriber: Any) -> None:
    workers = [make_subscriber(esURI=es.uri, **login("alice")) for _ in range(2)]
    for worker in workers:
        worker.subscribe("jobs", group="workers")
    thief = make_subscriber(esURI=es.uri, **login("bob"))  # bob may read "jobs", not join alice's group
    with pytest.raises(PermissionDenied, match=r"may not join 'workers' \(the work-queue group belongs to user "
                                               r"'alice'\)"):
        thief.subscribe("jobs", group="workers")
    with Publisher(esURI=es.uri, **login("alice")) as publisher:
        for n in range(20):
            publisher.publish("jobs", n)
    wait_for(lambda: sum(len(w.recorder.events) for w in workers) == 20, 10, "the 20 jobs")
    assert sorted(e.msg for w in workers for e in w.recorder.events) == list(range(20))
    assert thief.recorder.events == []


def test_another_user_cannot_answer_its_requests(es: EsProc, make_subscriber: Any) -> None:
    class Clock(Subscriber):
        def respond(self, event: Any) -> Any:
            return "alice's answer"

    class Liar(Subscriber):
        def respond(self, event: Any) -> Any:
            return "bob's answer"
    make_subscriber(esURI=es.uri, cls=Clock, **login("alice")).subscribe("alice.time")
    liar = make_subscriber(esURI=es.uri, cls=Liar, **login("bob"))
    with pytest.raises(PermissionDenied, match=r"user 'bob' may not subscribe 'alice\.time'"):
        liar.subscribe("alice.time")
    liar.subscribeMatch(".*")  # accepted: bob may subscribe to something, but not to alice.time
    with Publisher(esURI=es.uri, **login("alice")) as publisher:
        answers = {publisher.request("alice.time", n, timeout=5) for n in range(20)}
    assert answers == {"alice's answer"}
    assert liar.recorder.events == []


def test_another_user_cannot_announce_a_fake_left(es: EsProc, alices: Any, make_subscriber: Any) -> None:
    watcher = make_subscriber(esURI=es.uri, **login("alice"))
    watcher.subscribe(["es.presence.subscriber.left", "es.presence.subscriber.changed"])
    with plain_proxy(es, "bob") as bob:
        with pytest.raises(PermissionError):
            bob.unsubscribe(["alice.news", "orders.new"], Pyro5.api.Proxy(alices.uri))
        with pytest.raises(ValueError, match="reserved"):
            bob.publish("es.presence.subscriber.left", {"subscriber": alices.uri})
    alices.unsubscribe("orders.new")  # alice herself: a "changed", the fence
    wait_for(lambda: watcher.recorder.events, 10, "alice's own change")
    assert [(e.subject, e.msg["subscriber"], e.msg["user"]) for e in watcher.recorder.events] == \
        [("es.presence.subscriber.changed", alices.uri, "alice")]


# -- requests, admin, refusals counted, callbacks ------------------------------------------------------

def test_requests_need_publish_permission_and_only_the_requester_gets_the_answer(
        es: EsProc, make_subscriber: Any) -> None:
    class Echo(Subscriber):
        def respond(self, event: Any) -> Any:
            return ("answer", event.msg)
    make_subscriber(esURI=es.uri, cls=Echo, **login("alice")).subscribe("orders.quote")
    monitor = make_subscriber(esURI=es.uri, **login("monitor"))
    monitor.subscribeMatch(".*")
    with Publisher(esURI=es.uri, **login("bob")) as bob:
        with pytest.raises(PermissionDenied, match=r"may not publish 'orders\.quote'"):
            bob.request("orders.quote", 1, timeout=5)
    with Publisher(esURI=es.uri, **login("alice")) as alice:
        assert alice.request("orders.quote", 2, timeout=5) == ("answer", 2)
        alice.publish("alice.fence", None)
    wait_subject(monitor, "alice.fence")
    # monitor answers no requests: it gets the allowed request as an event, never the answer
    assert [(e.subject, e.msg) for e in monitor.recorder.events] == [("orders.quote", 2), ("alice.fence", None)]


def test_service_wide_methods_are_for_admins(es: EsProc, cluster: Cluster) -> None:
    with plain_proxy(es, "bob") as bob:
        for call in (lambda: bob.stats(), lambda: bob.reload(), lambda: bob.replacedBy("PYRO:x@127.0.0.1:1")):
            with pytest.raises(PermissionError, match="only admin users may"):
                call()
        assert bob.ping()
    refused = cluster.cli("stats", "--esuri", es.uri, "-u", "bob", "--password", PASSWORDS["bob"])
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused
    assert "user 'bob' may not call 'stats'" in refused.stderr
    allowed = cluster.cli("stats", "--esuri", es.uri, "-u", "alice", "--password", PASSWORDS["alice"], "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert '"bob": 4' in allowed.stdout  # its refusals, counted


def test_refusals_are_counted_per_user_and_logged_once_per_rule(es: EsProc) -> None:
    with plain_proxy(es, "bob") as bob:
        for n in range(50):
            with pytest.raises(PermissionError):
                bob.publish("orders.new", n)
        with pytest.raises(PermissionError):
            bob.publish("alice.news", 0)  # the same rule: no publish rule matches
    with plain_proxy(es, "monitor") as monitor:
        with pytest.raises(PermissionError):
            monitor.publish("x", 0)
    assert stats(es)["denied"] == {"bob": 51, "monitor": 1}
    es.wait_line("user 'monitor' may not publish", stream="stderr")
    logged = [line for line in es.stderr if "permission denied" in line]
    assert len(logged) == 2, logged


def test_a_subscribers_daemon_takes_calls_only_from_whoever_proves_its_users_password(
        es: EsProc, make_subscriber: Any) -> None:
    from eventservice import auth

    sub = make_subscriber(esURI=es.uri, **login("bob"))
    sub.subscribe("bob.news")
    for caller in (Pyro5.api.Proxy(sub.uri), auth.proxy(sub.uri, PASSWORDS["alice"], user="alice"),
                   auth.proxy(sub.uri, "guess", user="bob")):
        with pytest.raises(Pyro5.errors.PyroError):
            with caller:
                caller._pyroTimeout = 5
                caller.deliverEvents([("bob.news", "forged", 0.0)])
    with Publisher(esURI=es.uri, **login("bob")) as publisher:  # the service proves bob's password
        publisher.publish("bob.news", "real")
    wait_for(lambda: sub.recorder.events, 10, "the real event")
    assert [e.msg for e in sub.recorder.events] == ["real"]


def test_es_publish_and_listen_print_a_refusal_as_one_line(es: EsProc, cluster: Cluster) -> None:
    for command in (["publish", "orders.new", "x"], ["listen", "orders.new"], ["listen", "--match", ".*"]):
        result = cluster.cli(*command, "--esuri", es.uri, "-u", "nobody", "--password", PASSWORDS["nobody"])
        assert result.returncode == 1, result
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert "permission denied: user 'nobody'" in result.stderr
    ok = cluster.cli("publish", "bob.news", "x", "--esuri", es.uri,
                     env={"EVENTSERVICE_USER": "bob", "EVENTSERVICE_PASSWORD": PASSWORDS["bob"]})
    assert ok.returncode == 0, ok.stderr


# -- every client face logs in as a user -----------------------------------------------------------

def test_the_asyncio_clients_log_in_as_users(es: EsProc) -> None:
    import asyncio

    from eventservice import AsyncPublisher, AsyncSubscriber

    async def scenario() -> Any:
        async with AsyncSubscriber(esURI=es.uri, **login("bob")) as sub:
            with pytest.raises(PermissionDenied):
                async with sub.subscription("orders.new"):
                    pass
            async with sub.subscription(".*", match=True) as events:
                async with AsyncPublisher(esURI=es.uri, **login("alice")) as alice:
                    with pytest.raises(PermissionDenied, match="'alice'"):
                        await alice.publish("bob.news", 0)
                    await alice.publish(["orders.new", "orders.public.x"], 1)
                return await asyncio.wait_for(events.__anext__(), 10)
    event = asyncio.run(scenario())
    assert (event.subject, event.msg) == ("orders.public.x", 1)


def test_register_and_emit_log_in_as_the_user_given(cluster: Cluster, tmp_path: Path) -> None:
    import eventservice
    from eventservice import shortcuts

    cluster.start_ns()
    cluster.es("--users", str(users_file(tmp_path)))  # found by name, as register and emit find it
    got: list = []
    try:
        eventservice.register("bob.news", got.append, user="bob", password=PASSWORDS["bob"])
        with pytest.raises(PermissionDenied):
            eventservice.register("orders.new", got.append, user="bob", password=PASSWORDS["bob"])
        with pytest.raises(PermissionDenied):
            eventservice.emit("bob.news", 1, user="alice", password=PASSWORDS["alice"])
        eventservice.emit("bob.news", 2, user="bob", password=PASSWORDS["bob"])
        wait_for(lambda: got, 10, "the event at the registered function")
        assert [e.msg for e in got] == [2]
    finally:
        shortcuts.shutdown()


def test_the_readme_example_is_a_valid_users_file(tmp_path: Path) -> None:
    from conftest import ROOT
    from eventservice.users import load_users

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Users and permissions"):]
    example = section[section.index("```toml\n") + len("```toml\n"):section.index("```\n", section.index("```toml"))]
    users = load_users(str(users_file(tmp_path, example)))
    alice, shipping, monitor = users.get("alice"), users.get("shipping"), users.get("monitor")
    assert alice is not None and shipping is not None and monitor is not None
    assert alice.admin and alice.publish.refusal("orders.new") is None
    assert alice.publish.refusal("orders.internal.audit") is not None
    assert alice.subscribe.refusal("orders.secret.x") is not None
    assert users.user_of_cert("shipping.example.com") == "shipping" and shipping.password is None
    assert monitor.publish.refusal("anything") is not None and monitor.subscribe.refusal("anything") is None
