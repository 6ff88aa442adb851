"""TLS: es serving over Pyro5's SSL support, clients and subscribers over TLS, refusals,
silent TLS connections, the es sub-commands' TLS options, bad options and the warning
for an unprotected public listener.

Everything is real: real ``es`` processes, certificates made at run time with trustme.
Pyro5 has one SSL switch per process, so TLS clients run in their own processes
(tests/helpers/tls_*.py, or ``es`` sub-commands), configured through their environment;
this pytest process never switches Pyro5's SSL on (it only plays the plain client, and
uses the ``ssl`` module directly to look at what a port speaks).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

import Pyro5.api
import Pyro5
import Pyro5.errors
import pytest

from conftest import HOST, Cluster, EsProc, wait_for

trustme = pytest.importorskip("trustme")

HANDSHAKE_TIMEOUT = 5.0  # es's default handshake timeout (eventservice.config)


@dataclass
class Certs:
    ca: str  # the CA es trusts (--tls-ca) and that signed es's certificate
    es_cert: str
    es_key: str
    client_cert: str  # signed by ca; also a server cert for a listener's daemon
    client_key: str
    sub_cert: str  # a subscriber daemon's server certificate, signed by ca
    sub_key: str
    other_ca: str  # an unrelated CA
    other_cert: str  # a client certificate signed by other_ca
    other_key: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    ca, other_ca = trustme.CA(), trustme.CA()

    def issue(authority: Any, name: str, common_name: str) -> List[str]:
        cert = authority.issue_cert("localhost", "127.0.0.1", common_name=common_name)
        cert.cert_chain_pems[0].write_to_path(str(d / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(d / f"{name}.key"))
        return [str(d / f"{name}.pem"), str(d / f"{name}.key")]

    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    (d / "garbage.pem").write_text("this is not a certificate\n")
    other_ca.cert_pem.write_to_path(str(d / "other_ca.pem"))
    return Certs(str(d / "ca.pem"), *issue(ca, "es", "es"), *issue(ca, "client", "client"),
                 *issue(ca, "sub", "subscriber"), str(d / "other_ca.pem"),
                 *issue(other_ca, "other", "stranger"))


def tls_env(ca: str, cert: Optional[str] = None, key: Optional[str] = None,
            server_cert: Optional[str] = None, server_key: Optional[str] = None,
            require_client_cert: bool = False) -> Dict[str, str]:
    """Pyro5's SSL settings for a child process."""
    env = {"PYRO_SSL": "1", "PYRO_SSL_CACERTS": ca, "PYRO_SSL_CLIENTCERT": cert or "",
           "PYRO_SSL_CLIENTKEY": key or "", "PYRO_SSL_SERVERCERT": server_cert or "",
           "PYRO_SSL_SERVERKEY": server_key or "",
           "PYRO_SSL_REQUIRECLIENTCERT": "1" if require_client_cert else "0"}
    return env


def start_tls_es(cluster: Cluster, certs: Certs, *extra: str) -> EsProc:
    """A TLS es without a name server, trusting ``certs.ca``; its URI is ``.uri``."""
    return cluster.es("-N", "--tls-cert", certs.es_cert, "--tls-key", certs.es_key, "--tls-ca", certs.ca, *extra)


def client_call(cluster: Cluster, mode: str, *args: str, env: Dict[str, str]) -> Dict[str, Any]:
    """Run tls_client.py to completion; its one JSON line."""
    proc = cluster.python("tls_client.py", mode, *args, env=env, name=f"tls_client {mode}")
    proc.wait_exit(30)
    proc.kill()  # joins the output readers
    lines = [line for line in proc.stdout if line.startswith("{")]
    assert len(lines) == 1, proc.output()
    result = json.loads(lines[0])
    assert result["ssl"] is True, proc.output()  # the client really had Pyro5's SSL on
    assert "Traceback" not in "\n".join(proc.stderr), proc.output()
    return result


def assert_refused(result: Dict[str, Any]) -> None:
    assert result["ok"] is False, result
    assert result["pyro_or_os"] is True, result


def peer_cert(host: str, port: int, ca: str, cert: Optional[str] = None, key: Optional[str] = None) -> bytes:
    """The certificate a TLS server at host:port presents, verified against ``ca``."""
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() and tls.version().startswith("TLS")
            der = tls.getpeercert(binary_form=True)
            assert der
            return der


def pem_der(path: str) -> bytes:
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def host_port(uri: str) -> tuple:
    location = urlparse("pyro://" + uri.split("@", 1)[1])
    return location.hostname, location.port


def plain_proxy_fails(uri: str) -> BaseException:
    """A plain (non-TLS) Pyro5 proxy from this process to ``uri``: the error it gets."""
    assert not Pyro5.config.SSL  # this process stays plain
    proxy = Pyro5.api.Proxy(uri)
    proxy._pyroTimeout = 10
    started = time.monotonic()
    with pytest.raises((Pyro5.errors.PyroError, OSError)) as info:
        try:
            proxy._pyroBind()
            proxy.ping()
        finally:
            proxy._pyroRelease()
    assert time.monotonic() - started < 12
    return info.value


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


# -- 1. es, a Subscriber and a Publisher over TLS, both directions -------------------------

def test_subscriber_and_publisher_over_tls_callbacks_are_tls(cluster: Cluster, certs: Certs) -> None:
    es = start_tls_es(cluster, certs)
    # the subscriber's daemon serves TLS with its own certificate and, to pin that es
    # presents its own certificate when calling back, requires a client certificate by ca
    sub = cluster.python("tls_subscriber.py", es.uri, "tls.news", name="tls subscriber",
                         env=tls_env(certs.ca, server_cert=certs.sub_cert, server_key=certs.sub_key,
                                     require_client_cert=True))
    sub.wait_line("^SSL True$", 30)
    callback = sub.wait_line(r"^CALLBACK (\S+)", 30).group(1)
    sub.wait_line("^READY$", 30)
    result = client_call(cluster, "publish", es.uri, "TLS.News", "5", env=tls_env(certs.ca))
    assert result["ok"], result
    wait_for(lambda: len([line for line in sub.stdout if line.startswith("{")]) >= 5, 20,
             f"5 events at the TLS subscriber:\n{sub.output()}")
    events = [json.loads(line) for line in sub.stdout if line.startswith("{")]
    assert [e["msg"]["seq"] for e in events] == [0, 1, 2, 3, 4]
    assert all(e["subject"] == "TLS.News" for e in events)

    # the callback really is TLS: a plain Pyro5 proxy to it fails ...
    plain_proxy_fails(callback)
    # ... and its port speaks TLS with the subscriber's own certificate
    host, port = host_port(callback)
    assert peer_cert(host, port, certs.ca, certs.client_cert, certs.client_key) == pem_der(certs.sub_cert)
    # and es's port with es's certificate
    assert peer_cert(*host_port(es.uri), certs.ca) == pem_der(certs.es_cert)
    assert sub.proc.poll() is None and es.proc.poll() is None


# -- 2. a plain client against a TLS es -----------------------------------------------------

def test_plain_client_fails_and_tls_clients_still_served(cluster: Cluster, certs: Certs) -> None:
    es = start_tls_es(cluster, certs)
    for _ in range(3):
        plain_proxy_fails(es.uri)
    # es keeps serving TLS clients: the es sub-command with only --tls-ca, and a Pyro5 client
    done = cluster.cli("stats", "--esuri", es.uri, "--tls-ca", certs.ca)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^published\s+0$", done.stdout, re.M), done.stdout
    assert client_call(cluster, "call", es.uri, env=tls_env(certs.ca))["ok"]
    assert es.proc.poll() is None


# -- 3. a client that does not trust es's CA ------------------------------------------------

def test_client_not_trusting_es_ca_is_refused(cluster: Cluster, certs: Certs) -> None:
    es = start_tls_es(cluster, certs)
    refused = client_call(cluster, "call", es.uri, env=tls_env(certs.other_ca))
    assert_refused(refused)
    assert "certificate verify failed" in refused["error"].lower(), refused
    publishing = client_call(cluster, "publish", es.uri, "x", "1", env=tls_env(certs.other_ca))
    assert_refused(publishing)
    assert client_call(cluster, "call", es.uri, env=tls_env(certs.ca))["published"] == 0


# -- 4. --tls-require-client-cert -----------------------------------------------------------

def test_require_client_cert(cluster: Cluster, certs: Certs) -> None:
    es = start_tls_es(cluster, certs, "--tls-require-client-cert")
    assert_refused(client_call(cluster, "call", es.uri, env=tls_env(certs.ca)))
    assert_refused(client_call(cluster, "call", es.uri,
                               env=tls_env(certs.ca, certs.other_cert, certs.other_key)))
    good = client_call(cluster, "publish", es.uri, "x", "2",
                       env=tls_env(certs.ca, certs.client_cert, certs.client_key))
    assert good["ok"], good
    assert client_call(cluster, "call", es.uri,
                       env=tls_env(certs.ca, certs.client_cert, certs.client_key))["published"] == 2


# -- 5. the es sub-commands' TLS options -----------------------------------------------------

def test_cli_subcommands_over_tls(cluster: Cluster, certs: Certs) -> None:
    es = start_tls_es(cluster, certs, "--tls-require-client-cert")
    mine = ["--esuri", es.uri, "--tls-ca", certs.ca, "--tls-cert", certs.client_cert, "--tls-key", certs.client_key]
    listen = cluster.spawn([sys.executable, "-m", "eventservice.cli", "listen", *mine, "-c", "1", "tls.cli"],
                           "es listen")
    listen.wait_line("listening on", 30, stream="stderr")
    done = cluster.cli("publish", *mine, "TLS.cli", "hello over tls")
    assert done.returncode == 0, done.stderr
    listen.wait_line(r"^TLS\.cli hello over tls$", 20)
    assert listen.wait_exit(15) == 0, listen.output()
    done = cluster.cli("stats", *mine)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^published\s+1$", done.stdout, re.M), done.stdout
    assert re.search(r"^delivered\s+1$", done.stdout, re.M), done.stdout

    # without a client certificate (this es requires one), and without any TLS option
    for options in (["--tls-ca", certs.ca], []):
        for command in (["publish", "tls.cli", "x"], ["stats"], ["listen", "tls.cli"]):
            done = cluster.cli(command[0], "--esuri", es.uri, *options, *command[1:])
            assert done.returncode != 0, (command, options, done.stdout)
            assert one_line_error(done.stderr).startswith("es: error"), done.stderr
    assert es.proc.poll() is None


# -- 6. silent TLS connections ---------------------------------------------------------------

def make_client_hello(ca: str) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context(cafile=ca).wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"  # a TLS handshake record
    return hello


def closed_by_peer(sock: socket.socket, deadline: float) -> bool:
    """Read (and drop) what the peer sends until it closes the connection or the deadline."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return True
    return False


def still_open(sock: socket.socket) -> bool:
    """True when the peer has neither closed nor sent anything (non-blocking peek)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_silent_tls_connections_do_not_stall_and_are_closed(cluster: Cluster, certs: Certs) -> None:
    es = start_tls_es(cluster, certs)
    address = host_port(es.uri)
    prober = cluster.python("tls_client.py", "stats-loop", es.uri, env=tls_env(certs.ca), name="stats-loop")
    first = json.loads(prober.wait_line(r'^\{.*"ok": true', 30).string)
    assert first["end"] - first["start"] < 5

    hello = make_client_hello(certs.ca)
    silent: List[socket.socket] = []  # the peer sends nothing back to these until it closes
    answered: List[socket.socket] = []  # complete ClientHello sent: the peer answers, then waits
    try:
        for i in range(20):
            sock = socket.create_connection(address, timeout=5)
            if i % 3 == 1:
                sock.sendall(hello[:len(hello) // 2])  # a handshake that stops half-way
            elif i % 3 == 2:
                sock.sendall(hello)  # a handshake that stops after the ClientHello
            (answered if i % 3 == 2 else silent).append(sock)
        opened = time.time()
        opened_mono = time.monotonic()

        # other TLS clients are served promptly meanwhile: a call that began after all 20
        # were open completes within a few seconds, while the silent ones are still open
        def prompt_call() -> Optional[Dict[str, Any]]:
            for line in list(prober.stdout):
                if line.startswith("{"):
                    record = json.loads(line)
                    if record["start"] >= opened:
                        return record
            return None
        record = wait_for(prompt_call, 4, f"a stats() call begun after the silent connections:\n{prober.output()}")
        assert record["ok"], record
        assert record["end"] - record["start"] < 3, record
        assert all(still_open(sock) for sock in silent), "es closed silent connections before the check"

        # es closes them after its handshake timeout
        deadline = opened_mono + 12
        assert closed_by_peer(silent[0], deadline), "a silent TLS connection is still open after 12 s"
        assert time.monotonic() - opened_mono >= HANDSHAKE_TIMEOUT - 1.0  # closed by the timeout, not before
        for sock in silent[1:] + answered:
            assert closed_by_peer(sock, deadline), "a silent TLS connection is still open after 12 s"
    finally:
        for sock in silent + answered:
            sock.close()
    later = client_call(cluster, "call", es.uri, env=tls_env(certs.ca))
    assert later["ok"], later


# -- 7. passphrase and TLS together ------------------------------------------------------------

def test_passphrase_and_tls(cluster: Cluster, certs: Certs) -> None:
    es = start_tls_es(cluster, certs, "-i", "secret")
    without = client_call(cluster, "call", es.uri, env=tls_env(certs.ca))
    assert_refused(without)
    assert "rejected" in without["error"] or "passphrase" in without["error"], without
    assert_refused(client_call(cluster, "call", es.uri, "--ident", "wrong", env=tls_env(certs.ca)))
    good = client_call(cluster, "publish", es.uri, "x", "1", "--ident", "secret", env=tls_env(certs.ca))
    assert good["ok"], good
    assert client_call(cluster, "call", es.uri, "--ident", "secret", env=tls_env(certs.ca))["published"] == 1


# -- 8. bad TLS options -------------------------------------------------------------------------

BAD_OPTIONS = {
    "cert without key": lambda c, d: ["--tls-cert", c.es_cert],
    "key without cert": lambda c, d: ["--tls-key", c.es_key],
    "missing cert file": lambda c, d: ["--tls-cert", str(d / "missing.pem"), "--tls-key", c.es_key],
    "missing ca file": lambda c, d: ["--tls-cert", c.es_cert, "--tls-key", c.es_key,
                                     "--tls-ca", str(d / "missing-ca.pem")],
    "require client cert without ca": lambda c, d: ["--tls-cert", c.es_cert, "--tls-key", c.es_key,
                                                    "--tls-require-client-cert"],
    "ca without cert": lambda c, d: ["--tls-ca", c.ca],
    "not a certificate": lambda c, d: ["--tls-cert", str(Path(c.ca).with_name("garbage.pem")),
                                       "--tls-key", c.es_key],
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_tls_options(cluster: Cluster, certs: Certs, case: str, tmp_path: Any) -> None:
    proc = cluster.es("-N", *BAD_OPTIONS[case](certs, tmp_path), wait=False)
    status = proc.wait_exit(20)
    proc.kill()  # joins the output readers
    assert status != 0, proc.output()
    assert not any("URI" in line or "started" in line for line in proc.stdout), proc.output()
    line = one_line_error("\n".join(proc.stderr))
    assert line.startswith("es: error"), proc.output()


# -- 9. the warning for an unprotected public listener -----------------------------------------

WARNING = re.compile(r"(?i)(?=.*passphrase)(?=.*tls)")


@pytest.mark.parametrize("protection", ["none", "passphrase", "tls"])
def test_public_listener_warning(cluster: Cluster, certs: Certs, protection: str) -> None:
    args = ["-n", "0.0.0.0", "-N"]
    if protection == "passphrase":
        args += ["-i", "secret"]
    elif protection == "tls":
        args += ["--tls-cert", certs.es_cert, "--tls-key", certs.es_key]
    proc = cluster.es(*args)  # waits for the URI and "started"
    if protection == "none":
        line = proc.wait_line(WARNING.pattern, 10, stream="stderr").string
        assert "warning" in line.lower()
    proc.kill()  # it served on all interfaces: stop it at once (joins the output readers)
    warned = [line for line in proc.stderr if WARNING.search(line)]
    if protection == "none":
        assert len(warned) == 1, proc.output()
    else:
        assert warned == [], proc.output()
