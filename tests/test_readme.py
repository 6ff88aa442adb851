"""Every Python snippet of README.md and docs/API.md runs as written, pasted into a file, against a
real ``es`` (and name server) this test starts. Snippets that serve until stopped are run, fed,
checked and stopped with a signal, as their user would."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import List

import pytest

from cli_kit import catches_sigterm, subscribers
from conftest import ROOT, wait_for
from eventservice import Publisher

SERVES = ("printer.listen()", "start_es_loop(")  # snippets that run until stopped


def snippets() -> List[str]:
    found = []
    for doc in (ROOT / "README.md", ROOT / "docs" / "API.md"):
        found += re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.M | re.S)
    return found


def run(cluster, tmp_path: Path, code: str, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    return cluster.spawn([sys.executable, str(path)], name)


def test_readme_has_the_snippets_this_test_knows():
    codes = snippets()
    assert len(codes) >= 14
    assert sum(any(mark in code for mark in SERVES) for code in codes) == 2


@pytest.mark.parametrize("index", range(len(snippets())))
def test_snippet_runs_as_written(es, cluster, tmp_path, index):
    code = snippets()[index]
    if any(mark in code for mark in SERVES):
        pytest.skip("serves until stopped: run by its own test below")
    runs = 5 if "eventservice.emit(" in code else 1  # the two-liner printed "hello" in 1 run of 13
    for n in range(runs):
        proc = run(cluster, tmp_path, code, f"snippet{index}_{n}")
        assert proc.wait_exit(60) == 0, f"snippet {index}:\n{code}\n{proc.output()}"
        proc.kill()  # joins its output readers
        if runs > 1:
            assert proc.stdout == ["hello"], proc.output()
        if "asyncio.run(main())" in code:
            assert proc.stdout == ["quotes.SUN 22.44"], proc.output()
        if "answer = Publisher().request" in code:
            assert re.fullmatch(r"\d+\.\d+", proc.stdout[0]), proc.output()
        if "except NameTakenError" in code:  # an es holds the name: the snippet says so and goes on
            assert "replace=True in start_es" in proc.stdout[0] and proc.stdout[1].startswith("PYRO:"), proc.output()


def test_quote_printer_snippet_prints_events_and_ctrl_c_unsubscribes_it(es, cluster, tmp_path):
    [code] = [c for c in snippets() if "printer.listen()" in c]
    proc = run(cluster, tmp_path, code, "quote_printer")
    wait_for(lambda: subscribers(es.uri) == 1, 30, "the snippet to subscribe")
    with Publisher() as publisher:
        publisher.publish("stockquotes.SUN", 22.44)
        publisher.publish("stockquotes.SAP", 1.5)  # matches the pattern
    proc.wait_line(r"^stockquotes\.SAP 1\.5 \d+\.\d+$")
    assert proc.stdout[0].startswith("stockquotes.SUN 22.44 ")
    wait_for(lambda: catches_sigterm(proc.pid), 10, "listen() to run")
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) in (-signal.SIGINT, 128 + signal.SIGINT)
    assert subscribers(es.uri) == 0  # unsubscribed before it ended, not found dead seconds later


def test_quote_printer_snippet_stopped_by_sigterm_unsubscribes_too(es, cluster, tmp_path):
    [code] = [c for c in snippets() if "printer.listen()" in c]
    proc = run(cluster, tmp_path, code, "quote_printer")
    wait_for(lambda: subscribers(es.uri) == 1 and catches_sigterm(proc.pid), 30, "the snippet to listen")
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit(10) == 128 + signal.SIGTERM, proc.output()
    assert "Traceback" not in "\n".join(proc.stderr)
    assert subscribers(es.uri) == 0


def test_serving_snippet_serves_until_sigint_and_unregisters(cluster, tmp_path):
    [code] = [c for c in snippets() if "start_es_loop(" in c]
    cluster.start_ns()  # the snippet is the service
    proc = run(cluster, tmp_path, code, "serving")
    from Pyro5.api import Proxy
    ns = Proxy(f"PYRO:Pyro.NameServer@127.0.0.1:{cluster.ns_port}")

    def registered() -> bool:
        assert proc.proc.poll() is None, proc.output()
        return "Pyro.EventService" in ns.list()
    wait_for(registered, 30, "the snippet to register")
    with Publisher() as publisher:
        publisher.publish("anything", "served")
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) == 0, proc.output()
    assert "Pyro.EventService" not in ns.list()
