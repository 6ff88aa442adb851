"""The client-side examples (handlers, asyncio with dataclass events) run against a real
``es`` found through the name server, print what they do and exit 0 by themselves."""

from __future__ import annotations

import sys

from conftest import ROOT, run_example

EXAMPLES = ROOT / "examples"


def test_handlers_example(es, cluster):
    code, proc = run_example(cluster, "handlers.py")
    assert code == 0, proc.output()
    out = proc.stdout
    assert "  sun: stockquotes.SUN 22.44" in out
    assert "  every quote: stockquotes.IBM 101.5" in out
    assert "  error callback: broken: this handler is broken (on purpose)" in out
    assert "  sun: stockquotes.SUN 22.5" in out
    assert "   handlers left: ['sun']" in out
    assert "  got 'hello from handlers.py'" in out
    assert out[-1].startswith("all handlers saw what they should"), proc.output()
    assert sum("every quote" in line for line in out) == 2, proc.output()  # removed after two


def test_asyncio_typed_example(es, cluster):
    code, proc = run_example(cluster, "asyncio_typed.py")
    assert code == 0, proc.output()
    out = proc.stdout
    assert "  quote: quotes.SUN Quote(symbol='SUN', price=22.44)" in out
    assert "  trade: Trade(symbol='SUN', quantity=100, fills=[Quote(symbol='SUN', price=22.46)])" in out
    assert any(line.startswith("  refused before sending: cannot publish a __main__.Unregistered") for line in out)
    assert "  dropped by the quotes buffer: 0" in out
    assert out[-1] == "dataclass events arrived as themselves", proc.output()


def test_examples_fail_without_a_service(cluster):
    """No es (nor name server): each example says so and exits non-zero by itself, in time."""
    procs = [cluster.spawn([sys.executable, str(EXAMPLES / name)], name)
             for name in ("handlers.py", "asyncio_typed.py")]
    for proc in procs:
        assert proc.wait_exit(30) != 0, proc.output()
        proc.kill()
        assert any(line.startswith("cannot reach the event service") for line in proc.stdout), proc.output()
