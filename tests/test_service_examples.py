"""The service-side examples (request/reply, work queue, presence, filters) run against a
real ``es`` found through the name server, print what they do and exit 0 by themselves."""

from __future__ import annotations

import sys

from conftest import ROOT, run_example

EXAMPLES = ROOT / "examples"


def test_request_reply_example(es, cluster):
    code, proc = run_example(cluster, "request_reply.py")
    assert code == 0, proc.output()
    assert "asked calc.double to double 21: got 42" in proc.stdout
    assert any("calc.nobody" in line and "no responder" in line for line in proc.stdout), proc.output()


def test_work_queue_example(es, cluster):
    code, proc = run_example(cluster, "work_queue.py")
    assert code == 0, proc.output()
    done = [line for line in proc.stdout if line.startswith("worker-")]
    assert len(done) == 3 and sum(int(line.split()[2]) for line in done) == 30, proc.output()
    assert "the auditor saw 30 jobs" in proc.stdout


def test_presence_example(es, cluster):
    code, proc = run_example(cluster, "presence.py")
    assert code == 0, proc.output()
    kinds = [line.split(":")[0] for line in proc.stdout]
    for kind in ("es.presence.subscriber.joined", "es.presence.subscriber.changed", "es.presence.subscriber.left"):
        assert kind in kinds, proc.output()


def test_filters_example(es, cluster):
    code, proc = run_example(cluster, "filters.py")
    assert code == 0, proc.output()
    got = [line for line in proc.stdout if line.startswith("got ")]
    assert got == ["got {'symbol': 'SUN', 'price': 22.4}", "got {'symbol': 'SUN', 'price': 25.1}",
                   "got {'symbol': 'SUN', 'price': 99.0, 'last': True}"], proc.output()


def test_service_examples_fail_without_a_service(cluster):
    """No es (nor name server): each example exits non-zero by itself, in time."""
    procs = [cluster.spawn([sys.executable, str(EXAMPLES / name)], name)
             for name in ("request_reply.py", "work_queue.py", "presence.py", "filters.py")]
    for proc in procs:
        assert proc.wait_exit(30) != 0, proc.output()
        proc.kill()
