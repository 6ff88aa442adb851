"""The examples for users of the systems eventservice replaces (leap.common.events, pysig,
aiodistbus, twisted_event_dispatcher; Pyro 3's is examples/stockquotes) run against a real
``es``, show their habits at work and exit 0; without a service they say so and exit 1."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT, run_example

EXAMPLES = ROOT / "examples" / "coming_from"
SEEDS = ["leap.py", "pysig.py", "aiodistbus.py", "twisted_dispatcher.py"]


def test_leap_example(es, cluster):
    code, proc = run_example(cluster, "coming_from/leap.py")
    assert code == 0, proc.output()
    assert any(line.endswith(": ('alice@example.org', 42)") for line in proc.stdout), proc.output()


def test_pysig_example(es, cluster):
    code, proc = run_example(cluster, "coming_from/pysig.py")
    assert code == 0, proc.output()
    out = proc.stdout
    assert out.index("timer is now connected") < out.index("timer is now disconnected"), proc.output()
    assert "request failed: LookupError: no weather for 'tomorrow'" in out


def test_aiodistbus_example(es, cluster):
    code, proc = run_example(cluster, "coming_from/aiodistbus.py")
    assert code == 0, proc.output()
    assert "sensor.temp: Reading(sensor='temp', value=21.5) (type Reading)" in proc.stdout
    assert "'*' saw ['sensor.temp', 'sensor.humidity.inside', 'door.open']" in proc.stdout


def test_twisted_dispatcher_example(es, cluster):
    code, proc = run_example(cluster, "coming_from/twisted_dispatcher.py")
    assert code == 0, proc.output()
    assert ("welcome_user: UserEvent(event_type='user_created', user='bob', role='user', other_data='1234')"
            in proc.stdout), proc.output()
    assert not any("guest" in line for line in proc.stdout), "no handler wanted the visitor"


@pytest.mark.parametrize("name", SEEDS)
def test_seed_examples_fail_without_a_service(cluster, name):
    proc = cluster.spawn([sys.executable, str(EXAMPLES / name)], name)
    assert proc.wait_exit(30) == 1, proc.output()
    proc.kill()
    assert any(line.startswith("cannot reach the event service") for line in proc.stdout), proc.output()
