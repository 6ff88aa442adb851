"""Fixtures: a real Pyro5 name server and real ``es`` processes on loopback, free ports,
cleaned up by process id. Nothing waits a fixed time: everything polls with a deadline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import Pyro5
import Pyro5.api
import pytest

from eventservice.processes import free_port, kill_process, port_answers  # noqa: F401 (free_port: for the tests)

ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent / "helpers"
HOST = "127.0.0.1"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def callback_proxy(sub: Any) -> Any:
    """A proxy of a project Subscriber's callback object as the Subscriber hands it to the
    service: its public ``uri``, msgpack, no handshake (it carries no secret)."""
    from eventservice.config import FAST_SERIALIZER

    proxy = Pyro5.api.Proxy(sub.uri)
    proxy._pyroHandshake = None
    proxy._pyroSerializer = FAST_SERIALIZER
    return proxy


class Proc:
    """A child process whose output lines are collected by a thread."""

    def __init__(self, args: List[str], env: Dict[str, str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.pid = self.proc.pid
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: List[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.stdout) + "\n--- stderr ---\n" + "\n".join(self.stderr)

    def wait_line(self, pattern: str, timeout: float = 15.0, stream: str = "stdout") -> "re.Match[str]":
        lines = self.stdout if stream == "stdout" else self.stderr
        regex = re.compile(pattern)

        def found() -> Optional["re.Match[str]"]:
            for line in list(lines):
                match = regex.search(line)
                if match:
                    return match
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before printing "
                                     f"{pattern!r}:\n{self.output()}")
            return None
        return wait_for(found, timeout, f"{self.name} to print {pattern!r}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s:\n{self.output()}") from None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        kill_process(self.proc)
        for reader in self._readers:
            reader.join(2)


class Cluster:
    """Starts processes in one test's environment and kills them all at the end."""

    def __init__(self) -> None:
        self.ns_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "PYRO_NS_HOST": HOST, "PYRO_NS_PORT": str(self.ns_port), "PYRO_NS_BCPORT": str(free_port()),
            "PYRO_HOST": HOST, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        })
        for name in ("EVENTSERVICE_IDENT", "EVENTSERVICE_USER", "EVENTSERVICE_PASSWORD", "EVENTSERVICE_USERS"):
            self.env.pop(name, None)
        self.procs: List[Proc] = []

    def spawn(self, args: List[str], name: str, env: Optional[Dict[str, str]] = None) -> Proc:
        proc = Proc(args, {**self.env, **(env or {})}, name)
        self.procs.append(proc)
        return proc

    def start_ns(self) -> Proc:
        """A real Pyro5 name server at HOST:ns_port (no broadcast)."""
        proc = self.spawn([sys.executable, "-m", "Pyro5.nameserver", "-n", HOST, "-p", str(self.ns_port), "-x"],
                          "nameserver")
        wait_for(lambda: port_answers(HOST, self.ns_port), 15, "the name server")
        return proc

    def es(self, *args: str, env: Optional[Dict[str, str]] = None, wait: bool = True) -> "EsProc":
        """A real ``es`` process (``python -m eventservice.cli``) with ``args``."""
        cmd = [sys.executable, "-m", "eventservice.cli", *args]
        serving = not args or args[0] not in ("publish", "listen", "request", "stats", "bench")
        if serving and "--port" not in args and "-p" not in args:
            cmd += ["-p", "0"]
        if serving and "-n" not in args and "--host" not in args:
            cmd += ["-n", HOST]
        proc = EsProc(cmd, {**self.env, **(env or {})}, "es")
        self.procs.append(proc)
        if wait:
            proc.uri = proc.wait_line(r"^URI: (\S+)").group(1)
            proc.wait_line("started")
        return proc

    def cli(self, *args: str, timeout: float = 30, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """Run an ``es`` sub-command to completion."""
        return subprocess.run([sys.executable, "-m", "eventservice.cli", *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def python(self, script: str, *args: str, env: Optional[Dict[str, str]] = None, name: str = "") -> Proc:
        """Run a helper script from tests/helpers."""
        return self.spawn([sys.executable, str(HELPERS / script), *args], name or script, env)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()


class EsProc(Proc):
    uri: str = ""

    def proxy(self, ident: Optional[str] = None) -> Pyro5.api.Proxy:
        proxy = Pyro5.api.Proxy(self.uri)
        proxy._pyroHandshake = ident
        proxy._pyroTimeout = 10
        return proxy


def run_example(cluster: "Cluster", name: str) -> "tuple[int, Proc]":
    """Run examples/NAME to its end (30 s at most); (exit status, the process)."""
    proc = cluster.spawn([sys.executable, str(ROOT / "examples" / name)], name)
    code = proc.wait_exit(30)
    proc.kill()  # joins the output readers
    return code, proc


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh environment: its own name server port; Pyro5 in this process points there."""
    c = Cluster()
    for key in ("PYRO_NS_HOST", "PYRO_NS_PORT", "PYRO_NS_BCPORT", "PYRO_HOST"):
        monkeypatch.setenv(key, c.env[key])
    for name in ("EVENTSERVICE_IDENT", "EVENTSERVICE_USER", "EVENTSERVICE_PASSWORD", "EVENTSERVICE_USERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(Pyro5.config, "NS_HOST", HOST)
    monkeypatch.setattr(Pyro5.config, "NS_PORT", c.ns_port)
    monkeypatch.setattr(Pyro5.config, "NS_BCPORT", int(c.env["PYRO_NS_BCPORT"]))
    monkeypatch.setattr(Pyro5.config, "HOST", HOST)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def es(cluster: Cluster) -> EsProc:
    """A name server and one ``es`` registered in it."""
    cluster.start_ns()
    return cluster.es()


class Recorder:
    """Collects events delivered to a Subscriber in this process."""

    def __init__(self) -> None:
        self.events: List[Any] = []
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def wait_count(self, n: int, timeout: float = 10.0) -> List[Any]:
        wait_for(lambda: len(self.events) >= n, timeout, f"{n} events (have {len(self.events)})")
        return list(self.events)


@pytest.fixture
def make_subscriber(cluster: Cluster) -> Any:
    """Factory of in-process eventservice Subscribers that record their events, listening
    in background threads; closed at the end of the test."""
    from eventservice import Subscriber

    made: List[Any] = []

    def make(ident: Optional[str] = None, esURI: Optional[str] = None, cls: Any = None, user: Optional[str] = None,
             password: Optional[str] = None) -> Any:
        base = cls or Subscriber

        class Recording(base):  # type: ignore[misc,valid-type]
            def event(self, event: Any) -> None:
                self.recorder(event)

        sub = Recording(ident=ident, esURI=esURI, user=user, password=password)
        sub.recorder = Recorder()
        sub.start()
        made.append(sub)
        return sub

    yield make
    for sub in made:
        try:
            sub.close()
        except Exception:
            pass
