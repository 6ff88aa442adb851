"""The delivery lanes, without a network: slow work holds only the slow lane."""

from __future__ import annotations

import threading
import time
from typing import List

from eventservice.lanes import MAX_FAST, Lanes


class Job:
    def __init__(self, key: str, seconds: float) -> None:
        self.key, self.seconds, self.slow = key, seconds, False
        self.served: List[float] = []


def test_slow_calls_are_detached_and_quick_ones_keep_being_served() -> None:
    release = threading.Event()

    def serve(job: Job) -> None:
        if job.seconds:
            release.wait(job.seconds)
        job.served.append(time.monotonic())

    lanes = Lanes(serve, threads=2, slow_threads=2, threshold=0.02, max_fast=2)  # no growth: detaching alone
    try:
        slow = [Job(f"slow{n}", 10.0) for n in range(8)]  # four times the fast lane
        for job in slow:
            lanes.schedule(job)
        quick = Job("quick", 0.0)
        waits = []
        for _ in range(20):
            begun = time.monotonic()
            lanes.schedule(quick)
            deadline = begun + 5
            while len(quick.served) < len(waits) + 1 and time.monotonic() < deadline:
                time.sleep(0.001)
            waits.append(time.monotonic() - begun)
        assert len(quick.served) == 20
        assert sorted(waits)[-2] < 0.5, f"quick jobs waited {sorted(waits)[-3:]}"
        started = [job for job in slow if job.slow]
        assert len(started) >= 2, "the slow jobs under way were not marked slow"
        counts = lanes.counts()
        assert counts["fast"] == 2 and counts["slow"] <= 2 and counts["detached"] <= 8
    finally:
        release.set()
        lanes.close()


def test_threads_stay_bounded_and_slow_jobs_all_get_served() -> None:
    def serve(job: Job) -> None:
        time.sleep(job.seconds)
        job.served.append(time.monotonic())

    lanes = Lanes(serve, threads=2, slow_threads=3, threshold=0.02)
    try:
        jobs = [Job(f"j{n}", 0.1) for n in range(12)]
        for job in jobs:
            lanes.schedule(job)
        deadline = time.monotonic() + 10
        while not all(job.served for job in jobs) and time.monotonic() < deadline:
            assert threading.active_count() < 40
            time.sleep(0.01)
        assert all(job.served for job in jobs)
        counts = lanes.counts()
        assert counts["fast"] <= MAX_FAST and counts["slow"] <= 3
    finally:
        lanes.close()


def test_a_crowd_of_slow_newcomers_makes_the_fast_lane_grow_and_shrink_back() -> None:
    release = threading.Event()

    def serve(job: Job) -> None:
        if job.seconds:
            release.wait(job.seconds)
        job.served.append(time.monotonic())

    lanes = Lanes(serve, threads=2, slow_threads=2, threshold=5.0)  # never detached: only growth helps
    try:
        for n in range(10):
            lanes.schedule(Job(f"slow{n}", 10.0))
        quick = Job("quick", 0.0)
        begun = time.monotonic()
        lanes.schedule(quick)
        while not quick.served and time.monotonic() - begun < 5:
            time.sleep(0.001)
        assert quick.served and quick.served[0] - begun < 0.5
        assert 2 < lanes.counts()["fast"] <= MAX_FAST
        release.set()
        deadline = time.monotonic() + 10
        while lanes.counts()["fast"] > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lanes.counts()["fast"] == 2  # the senders beyond the base ended once idle
    finally:
        release.set()
        lanes.close()
