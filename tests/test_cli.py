"""The ``es`` sub-commands: help, publish, listen, stats; finding the service by name or
``--esuri``; the passphrase; errors as one line. Real ``es`` processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import pytest
from Pyro5.api import Proxy

from conftest import ROOT, free_port, wait_for

SECRET = "open sesame"


def run_all(cluster, commands: Sequence[Sequence[str]], env: Optional[Dict[str, str]] = None,
            timeout: float = 30) -> List[subprocess.CompletedProcess]:
    """Run several ``es`` sub-commands at once, each to completion."""
    procs = [subprocess.Popen([sys.executable, "-m", "eventservice.cli", *args], env={**cluster.env, **(env or {})},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    results = []
    for args, proc in zip(commands, procs):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"es {' '.join(args)} did not finish within {timeout}s:\n{out}\n{err}")
        results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    return results


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"es {' '.join(result.args)} failed ({result.returncode}):\n{result.stderr}"
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Assert ``result`` failed with a single line on stderr and no traceback; return it."""
    assert result.returncode != 0, f"es {' '.join(result.args)} succeeded:\n{result.stdout}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return lines[0]


def subscribers(uri: str, ident: Optional[str] = None) -> int:
    proxy = Proxy(uri)
    proxy._pyroHandshake = ident
    proxy._pyroTimeout = 10
    try:
        return proxy.stats()["subscribers"]
    finally:
        proxy._pyroRelease()


def listen(cluster, es, *args: str, ident: Optional[str] = None, env: Optional[Dict[str, str]] = None):
    """An ``es listen`` process, returned once the service counts one more subscriber."""
    before = subscribers(es.uri, ident)
    proc = cluster.spawn([sys.executable, "-m", "eventservice.cli", "listen", *args], "es listen", env)

    def subscribed() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"es listen exited ({proc.proc.returncode}):\n{proc.output()}")
        return subscribers(es.uri, ident) > before
    wait_for(subscribed, 30, "es listen to subscribe")
    return proc


# -- help --------------------------------------------------------------------------------------

HELP = {
    (): ["serve", "publish", "listen", "stats"],
    ("serve",): ["--host", "--port", "--no-ns", "--ident", "--replace", "--ns-host", "--ns-port",
                 "--queue-size", "--overflow", "--block-timeout"],
    ("publish",): ["--json", "--esuri", "--ident", "--ns-host", "--ns-port"],
    ("listen",): ["--match", "--esuri", "--ident", "--ns-host", "--ns-port"],
    ("stats",): ["--json", "--esuri", "--ident", "--ns-host", "--ns-port"],
}


def test_help_of_es_and_each_subcommand_exits_0_and_names_the_options(cluster):
    commands = [[*sub, "--help"] for sub in HELP]
    for (sub, words), result in zip(HELP.items(), run_all(cluster, commands)):
        ok(result)
        for word in words:
            assert word in result.stdout, f"'es {' '.join(sub)} --help' does not mention {word}"


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
    assert [(e["subject"], e["msg"]) for e in printed] == [("counted", "one"), ("counted", "two")]
    assert all(isinstance(e["time"], float) for e in printed)


def test_listen_stops_with_exit_0_on_sigint_and_unsubscribes(es, cluster):
    proc = listen(cluster, es, "quiet")
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) == 0
    assert "Traceback" not in "\n".join(proc.stderr)
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
    text, as_json = (ok(r) for r in run_all(cluster, [["stats"], ["stats", "--json"]]))
    for word in ("subscribers", "subscriptions", "published", "delivered", "dropped"):
        assert word in text.stdout
    shown = dict(line.split(None, 1) for line in text.stdout.splitlines() if line.strip())
    assert shown["subscribers"].strip() == "1"
    assert shown["published"].strip() == "1"
    assert shown["delivered"].strip() == "1"
    assert shown["dropped"].strip() == "0"
    stats = json.loads(as_json.stdout)
    assert stats["subscribers"] == 1 and stats["published"] == 1
    assert stats["delivered"] == 1 and stats["dropped"] == 0
    assert stats["subject_subscriptions"] == 2 and stats["pattern_subscriptions"] == 1


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


def test_wrong_or_missing_passphrase_is_a_one_line_error(cluster):
    cluster.start_ns()
    es = cluster.es("-i", SECRET)
    results = run_all(cluster, [["publish", "-i", "wrong", "x", "y"], ["publish", "x", "y"],
                                ["stats", "-i", "wrong"], ["listen", "-i", "wrong", "x"]])
    for result in results:
        one_line_error(result)
    stats = es.proxy(SECRET).stats()
    assert stats["published"] == 0 and stats["subscribers"] == 0


# -- no service --------------------------------------------------------------------------------

def test_publishing_to_a_missing_service_is_a_one_line_error(cluster):
    dead_uri = f"PYRO:{'Pyro.EventService'}@127.0.0.1:{free_port()}"
    no_ns, dead = run_all(cluster, [["publish", "x", "y"], ["publish", "--esuri", dead_uri, "x", "y"]])
    one_line_error(no_ns)
    one_line_error(dead)
    cluster.start_ns()  # a name server without an Event Service in it
    one_line_error(cluster.cli("publish", "x", "y"))
