"""``es bench``: small real runs (es, publishers and subscribers as processes) whose JSON must
have every field, lose nothing and keep order; and the pure helpers. Never a speed."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import pytest

from conftest import ROOT
from eventservice.bench import cli as bench_cli
from eventservice.bench.children import child_command
from eventservice.bench.procfs import proc_sample
from eventservice.bench.scenarios import SCENARIOS, select
from eventservice.bench.stats import merge_latency, quantile, quantile_points, summarize

FIELDS = ("events", "events_per_s", "deliveries", "deliveries_per_s", "latency_p50_us", "latency_p90_us",
          "latency_p99_us", "latency_max_us", "lost", "out_of_order", "cpu_es_s", "cpu_publishers_s",
          "cpu_subscribers_s", "problems")


def run_bench(*args: str, timeout: float = 90) -> Tuple[Dict[str, Any], str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("EVENTSERVICE_IDENT", None)
    proc = subprocess.run([sys.executable, "-m", "eventservice.cli", "bench", *args, "--json"], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"es bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout), proc.stderr


def check_fields(result: Dict[str, Any], runs: int = 1) -> Dict[str, Any]:
    assert len(result["runs"]) == runs, result
    summary = result["median"]
    for field in FIELDS:
        assert field in summary, f"{result['name']}: no {field}"
    for field in ("events_per_s", "deliveries_per_s", "latency_p50_us", "latency_max_us"):
        assert isinstance(summary[field], (int, float)) and summary[field] > 0, (field, summary[field])
    assert summary["latency_p50_us"] <= summary["latency_p90_us"] <= summary["latency_p99_us"] \
        <= summary["latency_max_us"]
    if sys.platform.startswith("linux"):
        for field in ("cpu_es_s", "cpu_publishers_s", "cpu_subscribers_s"):
            assert isinstance(summary[field], (int, float)) and summary[field] >= 0, (field, summary[field])
    return summary


def test_s1_and_s3_lose_nothing_and_keep_order() -> None:
    out, progress = run_bench("--scenario", "s1", "--scenario", "s3", "--events", "2000")
    assert list(out["scenarios"]) == ["s1", "s3"]
    assert "s1 run 1/1" in progress and "s3 run 1/1" in progress  # progress goes to stderr
    for name in ("s1", "s3"):
        summary = check_fields(out["scenarios"][name])
        assert summary["events"] == 2000 and summary["deliveries"] == 2000, summary
        assert summary["lost"] == 0 and summary["out_of_order"] == 0, summary
        assert summary["problems"] == [], summary["problems"]
        assert summary["es_published"] == 2000 and summary["es_delivered"] == 2000, summary
    assert out["problems"] == []


def test_frozen_subscriber_is_counted_and_the_others_lose_only_what_es_dropped() -> None:
    out, _ = run_bench("--scenario", "frozen", "--events", "2000", "--es-option", "--queue-size 500", timeout=120)
    assert list(out["scenarios"]) == ["s2-ref", "frozen"]  # the reference of the ratio comes along
    frozen = check_fields(out["scenarios"]["frozen"])
    check_fields(out["scenarios"]["s2-ref"])
    assert frozen["es_overflow"] == "drop" and frozen["es_queue_size"] == 500
    assert frozen["subscribers"] == 10
    # one subscriber was stopped: what it could not take was dropped, at most a queue is waiting
    assert frozen["frozen_dropped"] > 0 and frozen["frozen_queued"] <= 500, frozen
    # the healthy ones got every event es did not drop for them (drop policy, bursts), in order
    assert frozen["out_of_order"] == 0
    assert frozen["lost"] == frozen["healthy_dropped"], (frozen["lost"], frozen["healthy_dropped"], frozen["problems"])
    assert isinstance(frozen["healthy_ratio_to_ref"], float) and frozen["healthy_ratio_to_ref"] > 0
    assert not [p for p in frozen["problems"] if "Traceback" in p], frozen["problems"]


# -- the pure helpers ---------------------------------------------------------------------------

def args(*argv: str) -> Any:
    parser = argparse.ArgumentParser(prog="es bench")
    bench_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_scenario_selection_adds_references_in_order() -> None:
    order, added = select(args("--scenario", "frozen", "--scenario", "s4"))
    assert order == ["s1", "s4", "s2-ref", "frozen"] and sorted(added) == ["s1", "s2-ref"]
    every, _ = select(args())
    assert every == [n for n in SCENARIOS if n != "custom" and not n.endswith(("-cross", "-users"))]
    cross, added = select(args("--scenario", "cross"))
    assert cross == ["s1", "s2", "s3", "s1-cross", "s2-cross", "s3-cross"] and sorted(added) == ["s1", "s2", "s3"]
    assert select(args("--subscribers", "3"))[0] == ["custom"]
    assert select(args("--plain"))[0] == ["custom"] and select(args("--no-batch"))[0] == ["custom"]
    with pytest.raises(ValueError):
        select(args("--scenario", "nonsense"))


def test_users_selects_each_scenario_beside_its_variant_with_users() -> None:
    assert select(args("--users"))[0] == ["s1", "s1-users", "s2", "s2-users"]
    assert select(args("--users", "--scenario", "s4"))[0] == ["s1", "s4", "s4-users"]
    with pytest.raises(ValueError, match="no variant with users of raw"):
        select(args("--users", "--scenario", "raw"))


def test_users_runs_s1_beside_s1_on_an_es_with_a_users_file() -> None:
    out, _ = run_bench("--users", "--scenario", "s1", "--events", "2000")
    assert list(out["scenarios"]) == ["s1", "s1-users"]
    check_fields(out["scenarios"]["s1"])
    users = check_fields(out["scenarios"]["s1-users"])
    assert users["lost"] == 0 and users["out_of_order"] == 0 and users["problems"] == [], users
    assert users["es_published"] == 2000 and users["es_delivered"] == 2000, users  # stats() as the admin
    assert out["scenarios"]["s1-users"]["spec"]["users"] is True
    assert isinstance(users["ratio_to_no_users"], float) and users["ratio_to_no_users"] > 0
    reference = out["scenarios"]["s1"]["runs"][0]
    if sys.platform.startswith("linux") and users["cpu_es_s"] and reference["cpu_es_s"]:  # 0: under a clock tick
        assert users["cpu_es_ratio_to_no_users"] == pytest.approx(users["cpu_es_s"] / reference["cpu_es_s"])
    else:
        assert users["cpu_es_ratio_to_no_users"] is None
    assert out["problems"] == []


def test_every_reference_runs_before_the_scenarios_compared_with_it() -> None:
    names = list(SCENARIOS)
    for name, scenario in SCENARIOS.items():
        if scenario.reference is not None:
            assert names.index(scenario.reference) < names.index(name) and scenario.ratio_field, name


def test_scenarios_take_their_sizes_and_the_mix_from_the_command_line() -> None:
    plain = args()
    assert SCENARIOS["s1"].resolve(plain).events == 100_000 and SCENARIOS["s1"].resolve(plain).rate is None
    s3 = SCENARIOS["s3"].resolve(plain)
    assert (s3.events, s3.rate, s3.batch) == (3000, 1000.0, False)
    assert SCENARIOS["s3"].resolve(args("--rate", "50", "--events", "7")).rate == 50.0
    assert SCENARIOS["s4"].resolve(plain).patterns == 1000
    assert SCENARIOS["s4"].resolve(args("--patterns", "0")).patterns == 0
    assert SCENARIOS["s1"].resolve(args("--patterns", "5", "--subscribers", "3")).patterns == 0  # not s1's options
    assert SCENARIOS["raw"].resolve(args("--calls", "20", "--events", "9")).events == 20
    assert SCENARIOS["fanout"].resolve(args("--fanout-events", "30")).events == 30
    frozen = SCENARIOS["frozen"].resolve(plain)
    assert (frozen.frozen, frozen.subscribers, frozen.es_options, frozen.rate) == (1, 10, ("--overflow", "drop"), 1e4)
    cross = SCENARIOS["s2-cross"].resolve(plain)
    assert cross.cross and cross.subscribers == 10 and SCENARIOS["s2-cross"].reference == "s2"
    custom = SCENARIOS["custom"].resolve(args("--publishers", "0", "--subscribers", "0", "--no-batch", "--plain"))
    assert (custom.publishers, custom.subscribers, custom.batch, custom.plain) == (1, 0, False, True)
    assert SCENARIOS["custom"].resolve(plain) == SCENARIOS["s1"].resolve(plain)


def test_summary_takes_medians_and_the_worst_loss() -> None:
    runs: List[Dict[str, Any]] = [{"events_per_s": 10.0, "lost": 0, "problems": []},
                                  {"events_per_s": 30.0, "lost": 5, "problems": ["x"]},
                                  {"events_per_s": 20.0, "lost": 0, "problems": []}]
    summary = summarize(runs)
    assert summary["events_per_s"] == 20.0 and summary["lost"] == 5 and summary["problems"] == ["x"]


def test_latency_sketches_merge() -> None:
    values = [float(v) for v in range(1, 1001)]
    one = {"lat_n": 1000, "lat_max": 1000.0, "lat_points": quantile_points(values),
           "lat_p50": quantile(values, 0.5), "lat_p90": quantile(values, 0.9), "lat_p99": quantile(values, 0.99)}
    assert merge_latency([one]) == {"p50": 500.0, "p90": 900.0, "p99": 990.0, "max": 1000.0}
    merged = merge_latency([one, dict(one)])
    assert abs(merged["p50"] - 500) <= 2 and abs(merged["p99"] - 990) <= 2 and merged["max"] == 1000.0
    assert merge_latency([]) == {"p50": None, "p90": None, "p99": None, "max": None}
    assert quantile([], 0.5) is None


def test_proc_sample_reads_this_process() -> None:
    sample = proc_sample(os.getpid())
    if sys.platform.startswith("linux"):
        assert sample["cpu"] is not None and sample["threads"] >= 1 and sample["rss_mb"] > 0
    assert proc_sample(None) == {"cpu": None, "threads": None, "rss_mb": None}


# -- the plain children: never eventservice ------------------------------------------------------

def test_a_plain_child_runs_without_importing_eventservice() -> None:
    """The command of a plain child, as the bench starts it: its role runs and reports that
    eventservice is not among its modules (its main refuses to run a role otherwise)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(child_command("raw-server", {"deadline": 1e12}), input="stop\n", env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    messages = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [m["type"] for m in messages] == ["ready", "report"], proc.stdout
    assert messages[-1]["eventservice_imported"] is False


def test_a_plain_role_refuses_to_run_where_eventservice_is_imported() -> None:
    code = "import sys; from eventservice.bench import plain_roles; plain_roles.main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, "--role", "raw-server", "--config", '{"deadline": 1e12}'],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 4 and "eventservice is not imported" in proc.stderr, proc.stderr


def test_plain_scenarios_lose_nothing_and_never_import_eventservice() -> None:
    """raw, plain-publish and plain-sub: a report that imported eventservice would be a problem."""
    out, _ = run_bench("--scenario", "plain-publish", "--scenario", "plain-sub", "--calls", "200", "--events", "1000")
    assert list(out["scenarios"]) == ["raw", "plain-publish", "plain-sub"]
    for name in ("raw", "plain-publish"):
        summary = out["scenarios"][name]["median"]
        assert summary["events"] == 200 and summary["lost"] == 0 and summary["problems"] == [], summary
    assert out["scenarios"]["plain-publish"]["median"]["ratio_to_raw"] > 0
    check_fields(out["scenarios"]["plain-sub"])
    assert out["scenarios"]["plain-sub"]["median"]["deliveries"] == 1000
    assert out["problems"] == []


def test_request_workqueue_and_looplag_scenarios() -> None:
    """Request/reply counts its round trips and their latency; the work queue gives every
    event to exactly one member; the loop-lag run measures a lag and drops nothing."""
    out, _ = run_bench("--scenario", "request", "--scenario", "workqueue", "--scenario", "looplag",
                       "--calls", "200", "--events", "4000", timeout=120)
    request = out["scenarios"]["request"]["median"]
    assert request["events"] == 200 and request["lost"] == 0, request
    assert 0 < request["latency_p50_us"] <= request["latency_p99_us"] <= request["latency_max_us"], request
    work = out["scenarios"]["workqueue"]["median"]
    assert work["events"] == 4000 and work["lost"] == 0 and work["problems"] == [], work
    assert work["smallest_share"] > 0, work
    lag = out["scenarios"]["looplag"]["median"]
    assert lag["lost"] == 0 and lag["latency_p99_us"] is not None and lag["latency_p99_us"] >= 0, lag
    assert out["problems"] == []


def test_cross_host_scenarios_cross_a_nats_backbone_only_where_wanted() -> None:
    """Publisher on one es, subscriber on another, joined by a nats-server the bench starts; a
    third es on the same backbone, with no subscriber, receives none of the events."""
    out, progress = run_bench("--scenario", "s1-cross", "--scenario", "s3-cross", "--events", "2000", timeout=120)
    assert list(out["scenarios"]) == ["s1", "s3", "s1-cross", "s3-cross"]  # with their single-es references
    assert "the backbone carries events" in progress
    for name in ("s1-cross", "s3-cross"):
        summary = check_fields(out["scenarios"][name])
        assert summary["events"] == 2000 and summary["deliveries"] == 2000, summary
        assert summary["lost"] == 0 and summary["out_of_order"] == 0 and summary["problems"] == [], summary
        assert summary["es_delivered"] == 2000, summary  # delivered by the subscribers' es
        assert summary["backbone_sent"] >= 2000 and summary["backbone_received"] >= 2000, summary
        assert summary["backbone_failed"] == 0, summary
        assert summary["idle_connected"] is True and summary["idle_received"] == 0, summary
        assert summary["ratio_to_single"] > 0, summary
        assert isinstance(summary["p50_above_single_us"], (int, float)), summary


def test_cross_host_scenarios_refuse_esuri() -> None:
    proc = subprocess.run([sys.executable, "-m", "eventservice.cli", "bench", "--scenario", "cross",
                           "--esuri", "PYRO:x@127.0.0.1:1"], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "--esuri cannot be used" in proc.stderr, proc.stderr
