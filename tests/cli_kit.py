"""Helpers of the ``es`` command tests: run real ``es`` processes (to completion, several at
once, with stdin fed, on a pseudo-terminal), and ask the service what it counts."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from Pyro5.api import Proxy

from conftest import wait_for

ES = [sys.executable, "-m", "eventservice.cli"]


def run_all(cluster, commands: Sequence[Sequence[str]], env: Optional[Dict[str, str]] = None,
            timeout: float = 30) -> List[subprocess.CompletedProcess]:
    """Run several ``es`` sub-commands at once, each to completion."""
    procs = [subprocess.Popen([*ES, *args], env={**cluster.env, **(env or {})}, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    results = []
    for args, proc in zip(commands, procs):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"es {' '.join(args)} did not finish within {timeout}s:\n{out}\n{err}")
        results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    return results


def feed(cluster, args: Sequence[str], stdin: bytes, env: Optional[Dict[str, str]] = None,
         timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``es ARGS`` with ``stdin`` fed to it; stdout and stderr as text."""
    done = subprocess.run([*ES, *args], env={**cluster.env, **(env or {})}, input=stdin, capture_output=True,
                          timeout=timeout)
    return subprocess.CompletedProcess(list(args), done.returncode, done.stdout.decode(), done.stderr.decode())


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"es {' '.join(result.args)} failed ({result.returncode}):\n{result.stderr}"
    return result


def one_line_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """Assert ``result`` failed with ``code`` and a single line on stderr, no traceback; return it."""
    assert result.returncode == code, f"es {' '.join(result.args)}: exit {result.returncode}:\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return lines[0]


def stats(uri: str, ident: Optional[str] = None, per_subscriber: bool = False) -> dict:
    proxy = Proxy(uri)
    proxy._pyroHandshake = ident
    proxy._pyroTimeout = 10
    try:
        return proxy.stats(per_subscriber)
    finally:
        proxy._pyroRelease()


def subscribers(uri: str, ident: Optional[str] = None) -> int:
    return stats(uri, ident)["subscribers"]


def listen(cluster, es, *args: str, ident: Optional[str] = None, env: Optional[Dict[str, str]] = None,
           command: str = "listen"):
    """An ``es listen`` (or ``command``) process, returned once the service counts one more subscriber."""
    before = subscribers(es.uri, ident)
    proc = cluster.spawn([*ES, command, *args], f"es {command}", env)

    def subscribed() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"es {command} exited ({proc.proc.returncode}):\n{proc.output()}")
        return subscribers(es.uri, ident) > before
    wait_for(subscribed, 30, f"es {command} to subscribe")
    return proc


def catches_sigterm(pid: int) -> bool:
    """True once the process has a handler for SIGTERM: es's main() is running."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


class Terminal:
    """An ``es`` process whose stdout, stderr or both are a pseudo-terminal (the others are
    pipes); what it writes to the terminal is collected in ``screen``."""

    def __init__(self, cluster, args: Sequence[str], streams: Tuple[str, ...] = ("stdout", "stderr"),
                 env: Optional[Dict[str, str]] = None) -> None:
        master, slave = pty.openpty()
        environment = {**cluster.env, "TERM": "xterm", **(env or {})}
        for key in [k for k, v in environment.items() if v is None]:
            del environment[key]
        self.proc = subprocess.Popen([*ES, *args], env=environment, stdin=subprocess.DEVNULL,
                                     stdout=slave if "stdout" in streams else subprocess.PIPE,
                                     stderr=slave if "stderr" in streams else subprocess.PIPE)
        os.close(slave)
        self.master = master
        self.chunks: List[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        cluster.procs.append(self)  # killed at the end of the test

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def screen(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    def finish(self, timeout: float = 30) -> Tuple[int, str, str]:
        """Wait for the end; (exit status, what reached the terminal, what went to the pipe)."""
        out, err = self.proc.communicate(timeout=timeout)
        self.reader.join(5)
        os.close(self.master)
        piped = (out or b"") + (err or b"")
        return self.proc.returncode, self.screen, piped.decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
