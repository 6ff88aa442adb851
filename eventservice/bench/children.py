"""The processes ``es bench`` starts, seen from the coordinator: children playing a role
(:class:`Child`) and the ``es`` it measures (:class:`EsProcess`).

Every process is started so that it dies with the coordinator (Linux), and is killed by pid
when a run ends, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from typing import Any, Dict, List, Optional

from ..processes import LOOPBACK, kill_process
from .child import Config
from .plain_roles import ROLES as PLAIN_ROLES

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(os.path.dirname(BENCH_DIR))  # the folder holding eventservice/

# How a plain child starts (``python -c PLAIN_BOOT BENCH_DIR --role ...``): it makes this
# folder a package named "benchplain" without running any __init__, and imports
# benchplain.plain_roles from it; plain_roles, child and stats import only the standard
# library, Pyro5 and each other, so eventservice is never imported. sys.path is not touched.
PLAIN_BOOT = """\
import importlib, importlib.util, sys
spec = importlib.util.spec_from_loader("benchplain", None, is_package=True)
spec.submodule_search_locations.append(sys.argv.pop(1))
sys.modules["benchplain"] = importlib.util.module_from_spec(spec)
importlib.import_module("benchplain.plain_roles").main(sys.argv[1:])
"""


def child_command(role: str, cfg: Config) -> List[str]:
    """The command line of a child playing ``role``: the plain roles without eventservice,
    the others as ``python -m eventservice.bench.roles``."""
    if role in PLAIN_ROLES:
        cmd = [sys.executable, "-c", PLAIN_BOOT, BENCH_DIR]
    else:
        cmd = [sys.executable, "-m", "eventservice.bench.roles"]
    return cmd + ["--role", role, "--config", json.dumps(cfg)]


def _die_with_parent() -> None:
    """In a new child (Linux): get SIGTERM when the coordinator dies, even by SIGKILL, so that
    nothing it started outlives it."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


PREEXEC = _die_with_parent if sys.platform.startswith("linux") else None


class Child:
    """A child process playing a role: its commands, its JSON reports (collected by a thread
    and published under ``cond``), its pid."""

    def __init__(self, name: str, role: str, cfg: Config, env: Dict[str, str], cond: threading.Condition) -> None:
        self.name = name
        self.proc = subprocess.Popen(child_command(role, cfg), env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                     preexec_fn=PREEXEC)
        self.pid = self.proc.pid
        self.cond = cond
        self.ready: Optional[Dict[str, Any]] = None
        self.complete: Optional[Dict[str, Any]] = None
        self.probed = False  # a probe of the coordinator reached it
        self.report: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.progress = 0
        self.stderr: List[str] = []
        self.frozen = False
        for target in (self._read_stdout, self._read_stderr):
            threading.Thread(target=target, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self.stderr.append(line.rstrip("\n"))
                continue
            with self.cond:
                self._take(message)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _take(self, message: Dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ready":
            self.ready = message
        elif kind == "progress":
            self.progress = message["n"]
        elif kind == "complete":
            self.complete = message
        elif kind == "probed":
            self.probed = True
        elif kind == "report":
            self.report = message
        elif kind == "error":
            self.error = message["error"]
        elif kind == "deadline":
            self.error = self.error or "reached its deadline"

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    @property
    def exited(self) -> bool:
        return self.proc.poll() is not None

    @property
    def uris(self) -> List[str]:
        """The URIs of the subscribers in this child, as it said when ready."""
        return list((self.ready or {}).get("uris", []))

    def send(self, command: str) -> None:
        """Send ``go`` or ``stop`` (lost if the child is gone)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """Kill it by pid and close its pipes."""
        kill_process(self.proc)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def problems(self) -> List[str]:
        """What went wrong in it: an error it reported, or a traceback on its stderr."""
        found = []
        if self.error:
            found.append(f"{self.name}: {self.error}")
        tail = [line for line in self.stderr if line.strip()]
        if any("Traceback" in line or "ERROR" in line or "Error" in line for line in tail):
            found.append(f"{self.name} stderr: " + " | ".join(tail[-6:]))
        return found


class EsProcess:
    """An ``es`` started for one run (on loopback, no name server): its URI, pid and output."""

    def __init__(self, options: List[str], env: Dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "eventservice.cli", "-N", "-n", LOOPBACK, "-p", "0", *options]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, preexec_fn=PREEXEC)
        self.pid = self.proc.pid
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self.uri: Optional[str] = None
        self._uri_seen = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, lines: List[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            lines.append(line)
            match = re.match(r"^URI: (\S+)", line)
            if match and self.uri is None:
                self.uri = match.group(1)
                self._uri_seen.set()
        self._uri_seen.set()

    def wait_uri(self, timeout: float) -> str:
        """Its URI once it printed it; killed and RuntimeError if not within ``timeout``."""
        self._uri_seen.wait(timeout)
        if self.uri is None:
            self.kill()
            raise RuntimeError(f"es did not print its URI within {timeout:.0f}s: "
                               + " | ".join((self.stdout + self.stderr)[-8:]))
        return self.uri

    def stop(self) -> Optional[str]:
        """SIGTERM, then SIGKILL after 5 s; a problem to report, if any."""
        problem = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(5)
                if code != 0:
                    problem = f"es exited with {code} on SIGTERM"
            except subprocess.TimeoutExpired:
                problem = "es did not exit within 5 s of SIGTERM"
                self.kill()
        else:
            problem = f"es had exited during the run (code {self.proc.returncode})"
        for thread in self._threads:
            thread.join(2)
        return problem

    def problems(self) -> List[str]:
        """Lines of its stderr that say something went wrong (the first eight)."""
        return [line for line in self.stderr if re.search(r"Traceback|ERROR|CRITICAL|Exception", line)][:8]

    def warnings(self) -> List[str]:
        """The WARNING lines among its last 40 lines of stderr."""
        return [line for line in self.stderr[-40:] if "WARNING" in line]

    def kill(self) -> None:
        kill_process(self.proc)
