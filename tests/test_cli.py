"""The ``es`` sub-commands: help, publish, listen, stats; finding the service by name or
``--esuri``; the passphrase; errors as one line. Real ``es`` processes throughout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from cli_kit import listen, ok, one_line_error, run_all, subscribers
from conftest import ROOT, free_port, wait_for

SECRET = "open sesame"


# -- help --------------------------------------------------------------------------------------

HELP = {
    (): ["serve", "publish", "listen", "request", "reply", "tap", "stats", "subjects", "ping", "bench",
         "completion", "(also: pub)", "(also: sub)", "(also: req)", "--version"],
    ("serve",): ["--host", "--port", "--no-ns", "--ident", "--replace", "--ns-host", "--ns-port",
                 "--queue-size", "--overflow", "--block-timeout"],
    ("publish",): ["--json", "--stdin", "--file", "--lines", "--count", "--sleep", "--quiet", "--esuri", "--ident",
                   "--ns-host", "--ns-port"],
    ("listen",): ["--match", "--group", "--filter", "--presence", "--raw", "--json", "--timestamps", "--count",
                  "--esuri", "--ident", "--ns-host", "--ns-port"],
    ("request",): ["--json", "--count", "--raw", "--timeout", "--esuri"],
    ("reply",): ["--command", "--json", "--count", "--group", "--esuri"],
    ("tap",): ["PATTERN", "--json", "--raw", "--count", "--esuri"],
    ("stats",): ["--json", "--watch", "--interval", "--esuri", "--ident", "--ns-host", "--ns-port"],
    ("subjects",): ["PATTERN", "--limit", "--json", "--esuri"],
    ("ping",): ["--count", "--interval", "--esuri"],
    ("completion",): ["bash", "zsh"],
}


def test_help_of_es_and_each_subcommand_exits_0_and_names_the_options(cluster):
    commands = [[*sub, "--help"] for sub in HELP]
    for (sub, words), result in zip(HELP.items(), run_all(cluster, commands)):
        ok(result)
        for word in words:
            assert word in result.stdout, f"'es {' '.join(sub)} --help' does not mention {word}"


def test_version_aliases_and_unknown_commands(es, cluster, make_subscriber):
    sub = make_subscriber()
    sub.subscribe("aliased")
    version, published, unknown = run_all(cluster, [["--version"], ["pub", "aliased", "by alias"], ["pubish", "x"]])
    assert re.fullmatch(r"es \d+\.\d+\.\d+ \(eventservice\)\n", ok(version).stdout), version.stdout
    ok(published)
    assert [e.msg for e in sub.recorder.wait_count(1)] == ["by alias"]
    assert unknown.returncode == 2, unknown.stderr  # a usage error, listing the commands
    assert "invalid choice: 'pubish'" in unknown.stderr
    for name in ("publish", "pub", "listen", "sub", "request", "req", "stats", "bench"):
        assert f"'{name}'" in unknown.stderr, unknown.stderr


def test_bench_is_a_subcommand_of_es_with_its_own_options():
    listed = subprocess.run([sys.executable, "-m", "eventservice.cli", "--help"], capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    ok(listed)
    assert "bench" in listed.stdout
    own = subprocess.run([sys.executable, "-m", "eventservice.cli", "bench", "--help"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    ok(own)
    assert own.stdout.startswith("usage: es bench")
    for word in ("--scenario", "--repeat", "--json", "--esuri", "--es-option", "--calls", "--list", "s2-ref"):
        assert word in own.stdout, f"'es bench --help' does not mention {word}"


def test_bin_es_runs_from_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "es"), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    ok(result)
    assert "usage: es" in result.stdout and "publish" in result.stdout


# -- publish and listen ------------------------------------------------------------------------

def test_publish_round_trips_to_listen(es, cluster):
    proc = listen(cluster, es, "news.world")
    ok(cluster.cli("publish", "News.World", "hello there"))
    line = proc.wait_line(r"hello there", 20).string
    assert "News.World" in line


def test_publish_without_message_delivers_none(es, cluster, make_subscriber):
    sub = make_subscriber()
    sub.subscribe("empty")
    ok(cluster.cli("publish", "empty"))
    [event] = sub.recorder.wait_count(1)
    assert event.subject == "empty" and event.msg is None


def test_publish_json_parses_the_message_and_plain_keeps_the_string(es, cluster, make_subscriber):
    sub = make_subscriber()
    sub.subscribe(["as.json", "as.text"])
    text = '{"price": 22.44, "tags": ["a", "b"], "n": null}'
    for result in run_all(cluster, [["publish", "--json", "as.json", text], ["publish", "as.text", text]]):
        ok(result)
    events = {e.subject: e.msg for e in sub.recorder.wait_count(2)}
    assert events == {"as.json": {"price": 22.44, "tags": ["a", "b"], "n": None}, "as.text": text}


def test_publish_invalid_json_is_a_one_line_error(es, cluster):
    line = one_line_error(cluster.cli("publish", "--json", "bad", "{not json"))
    assert "JSON" in line


def test_listen_match_prints_only_matching_subjects(es, cluster):
    proc = listen(cluster, es, "--match", r"stock\.")
    for result in run_all(cluster, [["publish", "other.SUN", "no"], ["publish", "weather", "no"]]):
        ok(result)
    ok(cluster.cli("publish", "STOCK.SUN", "first"))
    ok(cluster.cli("publish", "stock.ibm", "second"))
    proc.wait_line(r"stock\.ibm.*second", 20)
    assert [line.split()[0] for line in proc.stdout] == ["STOCK.SUN", "stock.ibm"]


def test_listen_count_exits_0_after_that_many_events_and_json_prints_objects(es, cluster):
    proc = listen(cluster, es, "--count", "2", "--json", "counted")
    for message in ("one", "two", "three"):
        ok(cluster.cli("publish", "counted", message))
    assert proc.wait_exit(20) == 0, proc.output()
    printed = [json.loads(line) for line in proc.stdout]
    assert [(e["seq"], e["subject"], e["msg"]) for e in printed] == [(1, "counted", "one"), (2, "counted", "two")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", e["time"]) for e in printed)
    wait_for(lambda: subscribers(es.uri) == 0, 10, "the listener to be unsubscribed")


# -- stats -------------------------------------------------------------------------------------

def test_stats_shows_the_counters_as_text_and_json(es, cluster, make_subscriber):
    sub = make_subscriber()
    sub.subscribe(["counted", "also"])
    sub.subscribeMatch("pat.*")
    ok(cluster.cli("publish", "counted", "one"))
    sub.recorder.wait_count(1)
    # a delivery is counted once its call returned, a moment after the event arrived
    wait_for(lambda: es.proxy().stats()["delivered"] == 1, 10, "the delivery to be counted")
    text, as_json = (ok(r) for r in run_all(cluster, [["stats", "--interval", "0"], ["stats", "--json"]]))
    for key, value in (("subscribers", 1), ("subject_subscriptions", 2), ("pattern_subscriptions", 1),
                       ("published", 1), ("delivered", 1), ("dropped", 0)):
        assert re.search(rf"^{key}\s+{value}$", text.stdout, re.M), text.stdout
    stats = json.loads(as_json.stdout)
    assert stats["subscribers"] == 1 and stats["published"] == 1
    assert stats["delivered"] == 1 and stats["dropped"] == 0
    assert stats["subject_subscriptions"] == 2 and stats["pattern_subscriptions"] == 1
    [held] = stats["per_subscriber"].values()
    assert held["subjects"] == ["also", "counted"] and held["patterns"] == ["pat.*"]
    assert {"subject": "counted", "subscribers": 1, "events": 1} == {k: v for k, v in stats["subjects"][0].items()
                                                                     if k != "rate"}


# -- without a name server ---------------------------------------------------------------------

def test_esuri_addresses_the_service_without_a_name_server(cluster):
    es = cluster.es("-N")  # no name server runs anywhere in this environment
    proc = listen(cluster, es, "--esuri", es.uri, "direct")
    ok(cluster.cli("publish", "--esuri", es.uri, "direct", "by uri"))
    proc.wait_line(r"^direct by uri$", 20)
    stats = json.loads(ok(cluster.cli("stats", "--json", "--esuri", es.uri)).stdout)
    assert stats["published"] == 1 and stats["subscribers"] == 1


# -- the passphrase ----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["option", "environment"])
def test_subcommands_present_the_passphrase(cluster, how):
    cluster.start_ns()
    es = cluster.es("-i", SECRET)
    args, env = (["-i", SECRET], None) if how == "option" else ([], {"EVENTSERVICE_IDENT": SECRET})
    proc = listen(cluster, es, *args, "secret.news", ident=SECRET, env=env)
    ok(cluster.cli("publish", *args, "secret.news", "for members", env=env))
    proc.wait_line(r"^secret\.news for members$", 20)
    wait_for(lambda: es.proxy(SECRET).stats()["delivered"] == 1, 10, "the delivery to be counted")
    stats = json.loads(ok(cluster.cli("stats", "--json", *args, env=env)).stdout)
    assert stats["published"] == 1 and stats["delivered"] == 1


def test_wrong_or_missing_passphrase_is_a_one_line_error_that_names_the_option(cluster):
    cluster.start_ns()
    es = cluster.es("-i", SECRET)
    results = run_all(cluster, [["publish", "-i", "wrong", "x", "y"], ["publish", "x", "y"],
                                ["stats", "-i", "wrong"], ["listen", "-i", "wrong", "x"]])
    for result in results:
        line = one_line_error(result)
        assert "passphrase" in line and "-i/--ident" in line and "$EVENTSERVICE_IDENT" in line, line
    stats = es.proxy(SECRET).stats()
    assert stats["published"] == 0 and stats["subscribers"] == 0


# -- no service --------------------------------------------------------------------------------

def test_a_missing_service_is_a_one_line_error_that_says_what_to_do(cluster):
    dead_uri = f"PYRO:Pyro.EventService@127.0.0.1:{free_port()}"
    no_ns, dead, listening = run_all(cluster, [["publish", "x", "y"], ["publish", "--esuri", dead_uri, "x", "y"],
                                               ["listen", "x"]])
    for result in (no_ns, listening):
        line = one_line_error(result)
        assert "no name server answered" in line and "is es running?" in line and "--esuri" in line, line
        assert "esURI" not in line
    line = one_line_error(dead)
    assert dead_uri in line and "is es still running?" in line and "--esuri" in line, line
    cluster.start_ns()  # a name server without an Event Service in it
    line = one_line_error(cluster.cli("publish", "x", "y"))
    assert "knows no Pyro.EventService" in line and "is es running?" in line and "--esuri" in line, line
