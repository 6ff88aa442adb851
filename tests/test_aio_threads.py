"""The README promises that the asyncio clients leave no threads behind: checked in a process
of its own (nothing else of eventservice runs there), for aclose(), leaving ``async with``
and cancelling a task inside ``async for``; the process-wide ``es-reaper`` thread included."""

from __future__ import annotations


def test_no_thread_is_left_after_the_asyncio_clients_end(es, cluster):
    proc = cluster.python("aio_threads.py")
    code = proc.wait_exit(60)
    lines = [line for line in proc.stdout if line.startswith("after ")]
    assert lines == ["after aclose(): threads []", "after async with: threads []",
                     "after cancelling: threads []"], proc.output()
    assert code == 0, proc.output()
