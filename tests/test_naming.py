"""The ``es`` command and the Pyro5 name server: registering, the embedded name server,
taking over (or not) a registration, leaving on signals, and registering again after a
name server restart. Real name server and ``es`` processes throughout."""

from __future__ import annotations

import signal
import sys
import time
from typing import List, Optional

import pytest
from Pyro5 import errors
from Pyro5.api import Proxy, locate_ns

from eventservice import EVENTSERVICE_NAME, Publisher

from conftest import HOST, free_port, port_answers, wait_for

REGISTER_INTERVAL = 5.0  # es checks its registration this often


def lookup(host: str = "", port: Optional[int] = None) -> Optional[str]:
    """The URI the name server has for the Event Service, or None (no name, or no server)."""
    try:
        ns = locate_ns(host or HOST, port, broadcast=False)
    except errors.NamingError:
        return None
    ns._pyroTimeout = 5
    try:
        return str(ns.lookup(EVENTSERVICE_NAME))
    except errors.NamingError:
        return None
    finally:
        ns._pyroRelease()


def pings(uri: str) -> bool:
    """True if an Event Service answers at ``uri``."""
    proxy = Proxy(uri)
    proxy._pyroTimeout = 10
    try:
        return bool(proxy.ping())
    finally:
        proxy._pyroRelease()


def ns_lines(proc) -> List[str]:
    """Lines of ``proc``'s stdout about a name server, other than the 'Event Service started' line."""
    return [line for line in proc.stdout if "name server" in line.lower() and "event service" not in line.lower()]


def spawn_ns(cluster, port: int):
    """A real Pyro5 name server on ``port`` (besides the cluster's own)."""
    proc = cluster.spawn([sys.executable, "-m", "Pyro5.nameserver", "-n", HOST, "-p", str(port), "-x"],
                         f"nameserver:{port}")
    wait_for(lambda: port_answers(HOST, port), 15, f"the name server on {port}")
    return proc


# -- registering -------------------------------------------------------------------------------

def test_es_registers_under_the_contract_name_and_says_started(es, cluster):
    assert EVENTSERVICE_NAME == "Pyro.EventService"
    assert es.uri.startswith("PYRO:")
    assert any("started" in line for line in es.stdout)
    assert lookup() == es.uri
    assert pings(es.uri)
    assert ns_lines(es) == [], "es claimed to start a name server although one answered"


def test_es_starts_its_own_name_server_where_plain_pyro5_clients_look(cluster, make_subscriber):
    assert not port_answers(HOST, cluster.ns_port)
    es = cluster.es()
    assert ns_lines(es), f"es did not say it started a name server:\n{es.output()}"
    # plain Pyro5, configured only by PYRO_NS_HOST/PYRO_NS_PORT, finds the name server and the service
    ns = locate_ns()
    assert str(ns.lookup(EVENTSERVICE_NAME)) == es.uri
    ns._pyroRelease()
    assert pings(es.uri)
    sub = make_subscriber()
    sub.subscribe("found")
    with Publisher() as pub:
        pub.publish("found", "through the embedded name server")
    [event] = sub.recorder.wait_count(1)
    assert event.msg == "through the embedded name server"


def test_ns_host_and_port_options_name_the_name_server(cluster):
    other_port, empty_port = free_port(), free_port()
    spawn_ns(cluster, other_port)
    # the environment's name server port has nothing: es must use the options, not it
    given = cluster.es("--ns-host", HOST, "--ns-port", str(other_port), wait=False)
    embedded = cluster.es("--ns-host", HOST, "--ns-port", str(empty_port), wait=False)
    for proc in (given, embedded):
        proc.uri = proc.wait_line(r"^URI: (\S+)", 30).group(1)
        proc.wait_line("started", 30)
    assert lookup(HOST, other_port) == given.uri
    assert ns_lines(given) == []
    assert ns_lines(embedded), f"es did not say it started a name server:\n{embedded.output()}"
    assert lookup(HOST, empty_port) == embedded.uri
    assert not port_answers(HOST, cluster.ns_port), "an es started a name server where it was not asked to"


def test_no_ns_serves_without_registering_or_starting_a_name_server(cluster):
    cluster.start_ns()
    empty_port = free_port()
    registered_nowhere = cluster.es("-N", wait=False)
    no_server = cluster.es("-N", env={"PYRO_NS_PORT": str(empty_port)}, wait=False)
    for proc in (registered_nowhere, no_server):
        proc.uri = proc.wait_line(r"^URI: (\S+)").group(1)
        proc.wait_line("started")
        assert pings(proc.uri)
        assert ns_lines(proc) == []
    assert lookup() is None
    assert not port_answers(HOST, empty_port)


# -- a second es -------------------------------------------------------------------------------

def test_second_es_is_refused_while_the_first_answers(es, cluster):
    second = cluster.es(wait=False)  # stdin is /dev/null: a prompt would fail or hang
    assert second.wait_exit(30) != 0
    stderr = "\n".join(second.stderr)
    assert stderr.strip(), "no reason given on stderr"
    assert "Traceback" not in stderr
    assert not any("started" in line for line in second.stdout)
    assert lookup() == es.uri
    assert pings(es.uri)


def test_replace_takes_over_and_the_replaced_es_keeps_serving_its_clients(es, cluster, make_subscriber):
    first = es
    sub = make_subscriber(esURI=first.uri)
    sub.subscribe("old.clients")
    second = cluster.es("--replace")
    assert lookup() == second.uri != first.uri
    # the first keeps serving the clients it has
    with Publisher(esURI=first.uri) as pub:
        pub.publish("old.clients", "still served")
    [event] = sub.recorder.wait_count(1)
    assert event.msg == "still served"
    # and does not claim the name back during a registration check
    deadline = time.monotonic() + REGISTER_INTERVAL + 2
    while time.monotonic() < deadline:
        assert lookup() == second.uri, "the replaced es registered itself again"
        time.sleep(0.25)
    assert first.proc.poll() is None
    # leaving, the replaced es does not remove the second's registration
    first.signal(signal.SIGTERM)
    assert first.wait_exit(10) == 0
    assert lookup() == second.uri
    assert pings(second.uri)


def test_registration_of_a_dead_service_is_taken_over_without_replace(es, cluster):
    es.signal(signal.SIGKILL)
    es.wait_exit(10)
    second = cluster.es()
    assert lookup() == second.uri != es.uri
    assert pings(second.uri)


# -- leaving and staying registered ------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_unregisters_and_exits_zero_within_5s(es, sig):
    assert pings(es.uri)  # serving: its request loop runs
    assert lookup() == es.uri
    es.signal(sig)
    assert es.wait_exit(5) == 0, es.output()
    assert lookup() is None
    assert "Traceback" not in "\n".join(es.stderr)


def test_es_registers_again_after_the_name_server_restarts(cluster):
    ns = cluster.start_ns()
    es = cluster.es()
    assert lookup() == es.uri
    ns.signal(signal.SIGKILL)
    ns.wait_exit(10)
    cluster.start_ns()
    assert lookup() is None  # the new name server knows nothing
    wait_for(lambda: lookup() == es.uri, 30, "es to register in the new name server")
    assert es.proc.poll() is None
    assert pings(es.uri)


def test_sigterm_exits_within_5s_even_when_the_name_server_is_frozen(cluster):
    ns = cluster.start_ns()
    es = cluster.es()
    assert pings(es.uri)
    ns.signal(signal.SIGSTOP)  # accepts connections (kernel backlog), never answers
    es.signal(signal.SIGTERM)
    assert es.wait_exit(5) == 0, es.output()


def test_replaced_es_does_not_reclaim_the_name_after_a_name_server_restart(cluster):
    ns = cluster.start_ns()
    first = cluster.es()
    second = cluster.es("--replace")
    assert lookup() == second.uri
    ns.signal(signal.SIGKILL)
    ns.wait_exit(10)
    cluster.start_ns()
    wait_for(lambda: lookup() is not None, 30, "an es to register in the new name server")
    deadline = time.monotonic() + REGISTER_INTERVAL + 2  # a check of each es
    while time.monotonic() < deadline:
        assert lookup() == second.uri, "the replaced es holds the name"
        time.sleep(0.25)
    assert pings(first.uri)
