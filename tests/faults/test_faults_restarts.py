"""The Event Service and the name server SIGKILLed and started again under running clients."""

from __future__ import annotations

import builtins
import re
import signal
import time
from typing import Dict, List, Set, Tuple

import pytest
import Pyro5.api
from Pyro5 import errors

from eventservice import EVENTSERVICE_NAME, Publisher
from eventservice import errors as es_errors

from conftest import HOST, wait_for
from faultkit import done_line, quiescent, seqs_of

SUBJECT = "restart.stream"


def _fails(proc) -> List[Tuple[int, float, str]]:
    """(seq, seconds, error) of each FAIL line of a plain fault_publisher."""
    found = []
    for line in list(proc.stdout):
        m = re.match(r"^FAIL (\d+) ([\d.]+) (.*)$", line)
        if m:
            found.append((int(m.group(1)), float(m.group(2)), m.group(3)))
    return found


def _windows(proc) -> List[Tuple[str, int, int, str]]:
    """(ok|fail, first, end, error) of each WIN line of a batch fault_publisher."""
    found = []
    for line in list(proc.stdout):
        m = re.match(r"^WIN (ok|fail) (\d+) (\d+) ([\d.]+) ?(.*)$", line)
        if m:
            found.append((m.group(1), int(m.group(2)), int(m.group(3)), m.group(5)))
    return found


def _settled(service) -> Dict:
    """stats(True) once nothing is queued or in a call, and the counters stayed put over
    three polls (publishers are frozen, so nothing new arrives)."""
    last: List = []

    def check():
        stats = service.stats(True)
        if not all(quiescent(c) for c in stats["per_subscriber"].values()):
            last.clear()
            return None
        last.append(stats)
        if len(last) >= 3 and all(s["published"] == last[-1]["published"] for s in last[-3:]):
            return stats
        return None
    return wait_for(check, 30, "the service to settle")


@pytest.mark.timeout(180)
def test_es_killed_and_restarted_under_running_clients(cluster):
    """es SIGKILLed and a new es started under the same name server while two project
    Subscriber processes, a plain Publisher process and a Publisher(batch=True) process run:

    - the subscribers subscribe again by themselves, within 10 s of the new es printing
      "started", and receive again;
    - the plain Publisher's calls while no es runs raise a Pyro5 error or OSError, each
      within 10 s; once the new es runs its next call succeeds (no user code);
    - the batching Publisher loses nothing silently: every event of a window whose
      ``flush()`` returned reaches both subscribers; windows that met the dead service make
      ``flush()`` raise;
    - both subscribers get the plain publisher's accepted events exactly once, in order.

    So that "accepted" can be checked event by event, the publisher processes are frozen
    (SIGSTOP) while es1 settles (everything it accepted delivered) before it is killed, and
    again while es2 starts and the subscribers find it, so that nothing reaches es2 before
    they are back. They run (and fail) while no es exists.
    """
    cluster.start_ns()
    es1 = cluster.es()
    subs = [cluster.python("subscriber.py", SUBJECT, name=f"sub{n}") for n in (1, 2)]
    for sub in subs:
        sub.wait_line("READY", 30)
    plain = cluster.python("fault_publisher.py", SUBJECT, "--mode", "plain", "--name", "plain",
                           "--interval", "0.005", name="plain-publisher")
    batch = cluster.python("fault_publisher.py", SUBJECT, "--mode", "batch", "--name", "batch",
                           "--window", "20", "--interval", "0.02", name="batch-publisher")
    for sub in subs:
        for src in ("plain", "batch"):
            wait_for(lambda: len(seqs_of(sub, src)) >= 50, 30, f"{sub.name} to receive from {src}")

    # es1 settles with the publishers frozen, then dies
    publishers = (plain, batch)
    for p in publishers:
        p.signal(signal.SIGSTOP)
    _settled(es1.proxy())
    es1.signal(signal.SIGKILL)
    es1.wait_exit(10)
    for p in publishers:
        p.signal(signal.SIGCONT)

    # no service: calls fail, within 10 s each
    wait_for(lambda: len(_fails(plain)) >= 3, 30, "plain publishes to fail while no es runs")
    wait_for(lambda: len([w for w in _windows(batch) if w[0] == "fail"]) >= 3, 30,
             "batch flushes to fail while no es runs")

    # es2 starts with the publishers frozen; the subscribers come back by themselves
    for p in publishers:
        p.signal(signal.SIGSTOP)
    fails_before = len(_fails(plain))
    windows_before = len(_windows(batch))
    es2 = cluster.es()
    started = time.monotonic()
    service = es2.proxy()
    wait_for(lambda: service.stats()["subscribers"] == 2, 10,
             "both subscribers to subscribe again to the new es within 10 s")
    resubscribed = time.monotonic() - started
    counts = [len(sub.stdout) for sub in subs]
    for p in publishers:
        p.signal(signal.SIGCONT)
    for sub, count in zip(subs, counts):
        for src in ("plain", "batch"):
            wait_for(lambda: len([line for line in sub.stdout[count:] if f'"src": "{src}"' in line]) >= 50, 30,
                     f"{sub.name} to receive from {src} through the new es")
    for p in publishers:
        p.signal(signal.SIGTERM)
    plain_done, batch_done = done_line(plain), done_line(batch)
    _settled(service)

    # the plain publisher: failures were quick Pyro5/OS errors; the first call after
    # es2 came (at most the one call in flight when it was frozen) succeeded
    fails = _fails(plain)
    assert fails, "no publish failed while no es ran"
    assert max(f[1] for f in fails) < 10, fails
    assert plain_done["max_call"] < 10, plain_done
    for name in plain_done["error_types"]:
        module, _, cls = name.rpartition(".")
        exc_type = getattr({"Pyro5.errors": errors, "eventservice.errors": es_errors}.get(module, builtins), cls, None)
        assert isinstance(exc_type, type) and issubclass(exc_type, (errors.PyroError, OSError)), name
    assert len(fails) - fails_before <= 1, f"plain publisher failed after the new es came: {fails[fails_before:]}"
    failed_plain = {f[0] for f in fails}
    accepted_plain = [s for s in range(plain_done["total"]) if s not in failed_plain]
    assert len(accepted_plain) == plain_done["accepted"]

    # the batching publisher: a window whose flush returned arrived in full
    windows = _windows(batch)
    assert sum(w[2] - w[1] for w in windows) == batch_done["total"], "a window was not reported"
    assert any(w[0] == "fail" for w in windows)
    assert len([w for w in windows[windows_before:] if w[0] == "fail"]) <= 1, windows[windows_before:]
    ok_seqs: Set[int] = {s for w in windows if w[0] == "ok" for s in range(w[1], w[2])}
    failed_seqs: Set[int] = {s for w in windows if w[0] == "fail" for s in range(w[1], w[2])}
    for sub in subs:
        got_plain = seqs_of(sub, "plain")
        assert got_plain == accepted_plain, f"{sub.name}: plain events lost, repeated or out of order"
        got_batch = seqs_of(sub, "batch")
        assert got_batch == sorted(set(got_batch)), f"{sub.name}: batch events repeated or out of order"
        lost = ok_seqs - set(got_batch)
        assert not lost, f"{sub.name}: {len(lost)} events of flushed windows silently lost: {sorted(lost)[:20]}"
        assert set(got_batch) <= ok_seqs | failed_seqs
    print(f"resubscribed after {resubscribed:.2f}s; plain: {plain_done}; batch: {batch_done}; "
          f"batch events of failed windows that arrived anyway: "
          f"{len(failed_seqs & set(seqs_of(subs[0], 'batch')))} of {len(failed_seqs)}")


@pytest.mark.timeout(90)
def test_name_server_killed_and_restarted(cluster):
    """The name server SIGKILLed and a new one started on the same port: the running es
    (same process, same run id) registers itself again by itself (it checks every 5 s; the
    contract allows 30 s), and clients that find the service by name work again."""
    ns = cluster.start_ns()
    es = cluster.es()
    service = es.proxy()
    run_id = service.ping()
    ns.kill()
    cluster.start_ns()

    def registered():
        with Pyro5.api.locate_ns(HOST, cluster.ns_port) as ns_proxy:
            try:
                return str(ns_proxy.lookup(EVENTSERVICE_NAME)) == es.uri
            except errors.NamingError:
                return False
    began = time.monotonic()
    wait_for(registered, 30, "es to register again in the new name server")
    took = time.monotonic() - began
    assert es.proc.poll() is None and service.ping() == run_id, "es was restarted"
    assert took < 15, f"registered again only after {took:.1f}s (checks every 5 s)"

    sub = cluster.python("subscriber.py", "after.ns", name="sub")
    sub.wait_line("READY", 30)
    with Publisher() as pub:
        pub.publish("after.ns", {"seq": 0, "src": "p"})
    wait_for(lambda: seqs_of(sub) == [0], 15, "an event through the service found by name")
    print(f"registered again {took:.2f}s after the new name server answered")
