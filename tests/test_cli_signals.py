"""How ``es`` ends: quietly with 0 when its stdout pipe closes (like ``cat``), 130 on Ctrl-C
and 143 on SIGTERM without a traceback, unsubscribed in every case. Real processes, real
pipes and signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from typing import Iterator, Tuple

import pytest

from cli_kit import ES, catches_sigterm, listen, ok, subscribers
from conftest import HOST, free_port, wait_for


def test_listen_into_a_pipe_that_closes_ends_quietly_with_0_and_unsubscribes(es, cluster):
    """``es listen x | head -3``: the fourth event finds the pipe closed; es ends, exit 0."""
    before = subscribers(es.uri)
    proc = subprocess.Popen([*ES, "listen", "piped"], env=cluster.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: subscribers(es.uri) > before, 30, "es listen to subscribe")
        ok(cluster.cli("publish", "piped", "first", "--count", "3"))
        lines = [proc.stdout.readline() for _ in range(3)]  # what head -3 reads
        assert lines == [b"piped first\n"] * 3
        proc.stdout.close()  # head exits

        def ended() -> bool:
            ok(cluster.cli("publish", "piped", "more", "-q"))
            return proc.poll() is not None
        wait_for(ended, 30, "es listen to end")
        assert proc.returncode == 0
        err = proc.stderr.read().decode()
        assert err.splitlines() == ["listening on piped (Ctrl-C stops)"], err
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: subscribers(es.uri) == before, 10, "es listen to unsubscribe")


@pytest.mark.parametrize("args", [["stats", "--interval", "0"], ["subjects"], ["ping"], ["publish", "x", "y"],
                                  ["--help"], ["publish", "--help"], ["completion", "bash"]])
def test_commands_writing_into_a_closed_pipe_exit_0_without_a_word(es, cluster, args):
    es.proxy().publish("x", "so that there is a subject to list")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before es writes anything
    try:
        done = subprocess.run([*ES, *args], env=cluster.env, stdin=subprocess.DEVNULL, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_listen_ended_by_a_signal_exits_128_plus_it_and_unsubscribes_at_once(es, cluster, sig, code):
    proc = listen(cluster, es, "signalled", "--presence")
    proc.signal(sig)
    assert proc.wait_exit(10) == code
    assert "Traceback" not in "\n".join(proc.stderr), proc.output()
    assert subscribers(es.uri) == 0  # already unsubscribed when it exits


@contextlib.contextmanager
def publishing_to_a_silent_name_server(cluster) -> Iterator[Tuple[subprocess.Popen, socket.socket]]:
    """``es publish x y`` looking for a name server that accepts connections and never answers."""
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(8)
    try:
        yield subprocess.Popen([*ES, "publish", "x", "y", "--ns-host", HOST, "--ns-port", str(silent.getsockname()[1])],
                               env=cluster.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True), silent
    finally:
        silent.close()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_ctrl_c_in_the_first_moments_exits_130_without_a_traceback(cluster, delay):
    """Ctrl-C from the moment es runs (it installs its handlers first thing), while it looks
    for a name server that never answers (connected, then silent)."""
    with publishing_to_a_silent_name_server(cluster) as (proc, _):
        wait_for(lambda: proc.poll() is not None or catches_sigterm(proc.pid), 30, "es to start")
        time.sleep(delay)  # a moment later: still starting, or already waiting for the name server
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == "", err


def test_ctrl_c_during_the_name_server_lookup_exits_130_having_published_nothing(cluster):
    with publishing_to_a_silent_name_server(cluster) as (proc, silent):
        silent.settimeout(30)
        conn, _ = silent.accept()  # es is waiting for the name server's answer now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        conn.close()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "reached" not in out


def test_an_unreachable_name_server_port_is_a_quick_error(cluster):
    done = cluster.cli("stats", "--ns-host", HOST, "--ns-port", str(free_port()))
    assert done.returncode == 1 and "no name server answered" in done.stderr, done.stderr
