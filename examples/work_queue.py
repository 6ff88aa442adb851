"""Work queues: three workers subscribe to "jobs" in the group "workers" and share the
jobs (each job goes to exactly one of them); an auditor outside the group sees every job.

Run against an es found the usual Pyro5 way:  python examples/work_queue.py
"""

import sys
import time

from eventservice import Publisher, Subscriber

JOBS = 30


class Worker(Subscriber):
    def __init__(self, name, done):
        super().__init__()
        self.name, self.done = name, done

    def event(self, event):
        self.done.append((self.name, event.msg))


def wait(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def main() -> int:
    done, seen = [], []
    workers = [Worker(f"worker-{n}", done) for n in range(3)]
    auditor = Worker("auditor", seen)
    try:
        for worker in workers:
            worker.subscribe("jobs", group="workers")
            worker.start()
        auditor.subscribe("jobs")
        auditor.start()
        with Publisher() as boss:
            for job in range(JOBS):
                boss.publish("jobs", job)
        wait(lambda: len(done) >= JOBS and len(seen) >= JOBS)
    finally:
        for subscriber in workers + [auditor]:
            subscriber.close()
    for worker in workers:
        mine = [job for name, job in done if name == worker.name]
        print(f"{worker.name} did {len(mine)} jobs: {mine}")
    print(f"the auditor saw {len(seen)} jobs")
    once = sorted(job for _, job in done) == list(range(JOBS))
    shared = all(any(name == w.name for name, _ in done) for w in workers)
    return 0 if once and shared and len(seen) == JOBS else 1


if __name__ == "__main__":
    sys.exit(main())
