"""Finding 6: name server hijack. Anyone who reaches the name server can register
``Pyro.EventService`` elsewhere: the clients then hand the passphrase, in clear, to the
impostor; and ``es``, once it saw a foreign URI under its name, stops claiming it for good.
The fix: no client or ``es`` sub-command sends the passphrase in a form an impostor can
reuse, and fails clearly against one; plain Pyro5 clients presenting the passphrase in clear
still work unless ``es --no-clear-ident``; ``es`` registers again when the impostor's entry
is gone, and an ``es`` with a passphrase replaces an impostor's registration."""

from __future__ import annotations

import sys
import threading
from typing import Any, List

import pytest
import Pyro5.api
from Pyro5 import errors

from eventservice import Publisher, Subscriber

from conftest import HOST, Proc, port_answers, wait_for
from hostilekit import RawRecorder, assert_alive, leaked_forms, proxy, spawn_script

SECRET = "Hijack-Me-7f3c2a91"
NAME = "Pyro.EventService"


@Pyro5.api.expose
class FakeService:
    """Says yes to everything an Event Service is asked."""

    def __init__(self, log: List[str]) -> None:
        self.log = log

    def publish(self, *args: Any) -> None:
        self.log.append(repr(args))

    def publishBatch(self, *args: Any) -> int:
        self.log.append(repr(args))
        return 1

    def subscribe(self, *args: Any) -> None:
        self.log.append(repr(args))

    def subscribeMatch(self, *args: Any) -> None:
        self.log.append(repr(args))

    def unsubscribe(self, *args: Any) -> None:
        self.log.append(repr(args))

    def request(self, *args: Any) -> str:
        self.log.append(repr(args))
        return "answer from the impostor"

    def stats(self, *args: Any) -> dict:
        return {"published": 0}

    def ping(self) -> str:
        return "impostor"

    def replacedBy(self, uri: Any) -> None:
        self.log.append(repr(uri))


class PyroImpostor:
    """A Pyro5 daemon that accepts every handshake, recording what it is given, and serves
    a FakeService as ``Pyro.EventService``."""

    def __init__(self) -> None:
        self.seen: List[str] = []
        seen = self.seen

        class Recording(Pyro5.api.Daemon):
            def validateHandshake(self, conn: Any, data: Any) -> Any:
                seen.append(repr(data))
                return "hello"

        self.daemon = Recording(host=HOST)
        self.uri = str(self.daemon.register(FakeService(self.seen), NAME))
        self.thread = threading.Thread(target=self.daemon.requestLoop, daemon=True)
        self.thread.start()

    def data(self) -> bytes:
        return "\n".join(self.seen).encode("utf-8", "backslashreplace")

    def close(self) -> None:
        self.daemon.shutdown()
        self.thread.join(5)


class RawImpostor(RawRecorder):
    def __init__(self) -> None:
        super().__init__(hold=1.0)


IMPOSTORS = {"raw socket": RawImpostor, "pyro daemon": PyroImpostor}


@pytest.fixture(params=list(IMPOSTORS))
def impostor(request: Any) -> Any:
    made = IMPOSTORS[request.param]()
    yield made
    made.close()


def register_impostor(uri: str) -> None:
    with proxy(f"PYRO:Pyro.NameServer@{HOST}:{Pyro5.config.NS_PORT}") as ns:
        ns.register(NAME, uri, safe=False)


CLIENTS = ["es publish", "es request", "es stats", "es listen", "Publisher", "Subscriber"]


def run_client(cluster: Any, client: str) -> str:
    """Run one of the project's clients with the passphrase against whatever the name
    server gives; returns how it ended ("ok", or the error), within 12 s at most."""
    if client.startswith("es "):
        args = {"es publish": ["publish", "hijack.subject", "hello"], "es request": ["request", "hijack.subject"],
                "es stats": ["stats"], "es listen": ["listen", "hijack.subject", "-c", "1"]}[client]
        proc = cluster.spawn([sys.executable, "-m", "eventservice.cli", *args, "-i", SECRET], client)
        try:
            code = proc.proc.wait(12)
        except Exception:
            proc.kill()
            return "still running after 12 s (it took the impostor for the service)"
        proc.kill()
        return "ok" if code == 0 else f"exit {code}: {' '.join(proc.stderr)[-300:]}"
    try:
        if client == "Publisher":
            with Publisher(ident=SECRET) as publisher:
                publisher.publish("hijack.subject", "hello")
        else:
            subscriber = Subscriber(ident=SECRET)
            try:
                subscriber.subscribe("hijack.subject")
            finally:
                subscriber.close()
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", CLIENTS)
def test_clients_never_hand_the_passphrase_to_an_impostor(cluster, impostor, client):
    """Finding 6: an impostor registered as Pyro.EventService in the real name server (a raw
    socket server that records every byte and answers nothing, or a Pyro5 daemon whose
    validateHandshake records what it is given and accepts it); each of ``es publish``,
    ``es request``, ``es stats``, ``es listen``, ``Publisher`` and ``Subscriber``, given the
    passphrase, is pointed at it by the name server. The impostor never receives the
    passphrase (as is, base64, hex, serpent/json/marshal forms), and the client fails
    (non-zero exit / an exception) instead of taking the impostor for the service."""
    cluster.start_ns()
    register_impostor(impostor.uri)
    outcome = run_client(cluster, client)
    data = impostor.data()
    leaked = leaked_forms(data, SECRET)
    report = f"{client} against a {type(impostor).__name__}: {outcome}; the impostor got {len(data)} bytes"
    print(report + (f", with the passphrase as {leaked[:2]}" if leaked else ""))
    assert not leaked, f"{report}; the passphrase reached it as {leaked[:3]}: {data[:300]!r}"
    assert outcome != "ok" and not outcome.startswith("still running"), report


@pytest.mark.timeout(60)
def test_plain_pyro_client_presenting_the_passphrase_in_clear(cluster):
    """Finding 6, what must keep working: a plain Pyro5 client presenting the passphrase as
    ``_pyroHandshake = SECRET`` is served by the real ``es -i SECRET`` (and one with a wrong
    passphrase is refused)."""
    cluster.start_ns()
    es = cluster.es("-i", SECRET)
    with proxy(es.uri, ident=SECRET) as p:
        assert p.stats()["published"] >= 0
    with proxy(es.uri, ident="wrong") as p:
        with pytest.raises(errors.CommunicationError):
            p.stats()


@pytest.mark.timeout(60)
def test_no_clear_ident_refuses_a_clear_passphrase(cluster):
    """Finding 6: ``es -i SECRET --no-clear-ident`` refuses a plain Pyro5 client that
    presents the passphrase in clear, while the project's Publisher (which proves the
    passphrase without sending it) is still served."""
    cluster.start_ns()
    es = cluster.es("-i", SECRET, "--no-clear-ident")
    with proxy(es.uri, ident=SECRET) as p:
        with pytest.raises(errors.CommunicationError):
            p.stats()
    with Publisher(ident=SECRET, esURI=es.uri) as publisher:
        publisher.publish("clear.ident", "still served")
    assert_alive(es)


def start_recording_ns(cluster: Any) -> Proc:
    ns = spawn_script(cluster, "ns_recording.py", HOST, str(cluster.ns_port), name="recording-ns")
    wait_for(lambda: port_answers(HOST, cluster.ns_port), 15, "the recording name server")
    return ns


def lookup(name: str = NAME) -> Any:
    with proxy(f"PYRO:Pyro.NameServer@{HOST}:{Pyro5.config.NS_PORT}", timeout=5) as ns:
        try:
            return str(ns.lookup(name))
        except errors.NamingError:
            return None


@pytest.mark.timeout(90)
def test_es_registers_again_once_the_impostor_is_gone(cluster):
    """Finding 6: ``es`` is registered; an impostor registers its own URI under
    Pyro.EventService; once es's registration keeper has looked at the name (the name
    server prints each lookup) the impostor's entry is removed. es registers again within
    30 s."""
    ns = start_recording_ns(cluster)
    es = cluster.es()
    wait_for(lambda: lookup() == es.uri, 10, "es's registration")
    impostor = RawImpostor()
    try:
        register_impostor(impostor.uri)
        mark = len(ns.stdout)
        wait_for(lambda: any(line == f"LOOKUP {NAME}" for line in ns.stdout[mark:]), 20,
                 "es's registration keeper to look at its name")
        if lookup() == impostor.uri:
            with proxy(f"PYRO:Pyro.NameServer@{HOST}:{cluster.ns_port}") as ns_proxy:
                ns_proxy.remove(NAME)
        try:
            wait_for(lambda: lookup() == es.uri, 30, "es to register again")
        except AssertionError:
            raise AssertionError(f"es did not register again within 30 s after the impostor's entry was removed "
                                 f"(the name now: {lookup()}):\n{es.output()[-2000:]}") from None
        assert_alive(es)
    finally:
        impostor.close()


@pytest.mark.timeout(90)
def test_es_with_a_passphrase_replaces_an_impostor(cluster):
    """Finding 6: an impostor (a Pyro5 daemon that accepts any handshake and answers like a
    service) holds Pyro.EventService before ``es -i SECRET`` starts. es starts all the same,
    its URI replaces the impostor's in the name server within 30 s (the impostor cannot prove
    the passphrase), es prints a warning on stderr, and the impostor never receives the
    passphrase."""
    cluster.start_ns()
    impostor = PyroImpostor()
    try:
        register_impostor(impostor.uri)
        es = cluster.es("-i", SECRET)
        try:
            wait_for(lambda: lookup() == es.uri, 30, "es to replace the impostor's registration")
        except AssertionError:
            raise AssertionError(f"the name still points to {lookup()} after 30 s:\n{es.output()[-2000:]}") from None
        wait_for(lambda: any("warn" in line.lower() for line in es.stderr), 10, "a warning on es's stderr")
        leaked = leaked_forms(impostor.data(), SECRET)
        assert not leaked, f"es handed the passphrase to the impostor as {leaked[:3]}"
        print(f"replaced the impostor; es warned: {[line for line in es.stderr if 'warn' in line.lower()][:1]}")
        assert_alive(es)
    finally:
        impostor.close()
