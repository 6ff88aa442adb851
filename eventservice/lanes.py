"""The threads that call subscribers: a fast lane, a slow lane and a watchdog between them.

Delivery calls are blocking Pyro5 calls. A subscriber that takes seconds per call must not
hold the threads every other subscriber needs, so:

- ``threads`` **fast senders** serve the line of ready subscribers in turn. When all of them
  have been in a call for :data:`GROW_AFTER` seconds and subscribers wait in the line, the
  lane grows by as many senders as wait (up to :data:`MAX_FAST` senders), so that a crowd of
  subscribers not yet known to be slow cannot keep the others waiting while they are found
  out; senders beyond ``threads`` end after :data:`FAST_IDLE_EXIT` idle seconds;
- a **watchdog** looks at them every :data:`TICK` seconds while the lane is full (every fast
  sender in a call; otherwise it sleeps and costs nothing). A call that has taken longer than
  ``threshold`` seconds then is *detached*: its subscriber is marked slow, and a new fast
  sender takes the detached one's place at once, so the fast lane never has fewer than
  ``threads`` senders for long. A call that took longer than :data:`SLOW_CALL` seconds marks
  its subscriber slow too, full lane or not;
- **slow senders** (at most ``slow_threads``, started when needed, ending after
  :data:`SLOW_IDLE_EXIT` idle seconds) serve the subscribers marked slow, so all the slow ones
  together hold at most that many threads. A slow subscriber whose calls are quick
  again for :data:`QUICK_CALLS_TO_RETURN` calls goes back to the fast lane.

A detached sender, its call done, goes back to the fast lane if it is short of threads, else
to the slow lane if that has room, else ends. Threads in all: at most :data:`MAX_FAST` +
``slow_threads`` + :data:`MAX_DETACHED`.

The served objects need the attributes ``slow`` (bool) and ``key``; ``serve(obj)`` is
called with one at a time and must not raise.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, List, Optional

log = logging.getLogger(__name__)

TICK = 0.005  # seconds between the watchdog's looks while calls are under way
DEFAULT_THRESHOLD = 0.02  # seconds a call may take before its subscriber counts as slow
GROW_AFTER = 0.005  # seconds every fast sender must have been busy before the lane grows
SLOW_CALL = 0.25  # seconds: a call this long marks its subscriber slow, even in an uncrowded lane
MAX_FAST = 64  # fast senders at most, while the lane has grown
FAST_IDLE_EXIT = 1.0  # seconds a fast sender beyond ``threads`` waits for work before it ends
QUICK_CALLS_TO_RETURN = 3  # quick calls in a row that bring a slow subscriber back to the fast lane
MAX_DETACHED = 64  # detached calls under way at once, at most
SLOW_IDLE_EXIT = 2.0  # seconds a slow sender waits for work before it ends


_IDLE = object()


class _Sender:
    __slots__ = ("lane", "busy_since", "current", "detached", "thread")

    def __init__(self, lane: str) -> None:
        self.lane = lane
        self.busy_since = 0.0
        self.current: Any = None
        self.detached = False
        self.thread: Optional[threading.Thread] = None


class Lanes:
    """Fast and slow senders serving ``serve(obj)`` (see the module)."""

    def __init__(self, serve: Callable[[Any], None], threads: int, slow_threads: int,
                 threshold: float = DEFAULT_THRESHOLD, name: str = "es-sender", max_fast: int = MAX_FAST) -> None:
        self.serve = serve
        self.threads = threads
        self.max_fast = max(max_fast, threads)
        self.slow_threads = slow_threads
        self.threshold = threshold
        self.name = name
        self._fast_line: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._slow_line: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._fast: List[_Sender] = []
        self._slow: List[_Sender] = []
        self._detached = 0
        self._slow_idle = 0  # slow senders waiting for work
        self._in_flight = 0  # fast senders in a call
        self._crowded = threading.Event()  # set while every fast sender is in a call
        self._stopping = False
        self.detaches = 0  # calls detached so far
        with self._lock:
            for _ in range(threads):
                self._start("fast")
        self._watchdog = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._watchdog.start()

    # -- public ----------------------------------------------------------------------------
    def schedule(self, obj: Any, slow: bool = False) -> None:
        """Put ``obj`` in the line of its lane (``obj.slow`` says which), or with ``slow`` in
        the slow lane's this once (work that must not make the fast lane grow)."""
        if obj.slow or slow:
            self._slow_line.put(obj)
            with self._lock:
                if self._slow_idle == 0 and len(self._slow) < self.slow_threads and not self._stopping:
                    self._start("slow")
        else:
            self._fast_line.put(obj)
            if self._in_flight - self._detached >= len(self._fast):  # no sender free: the watchdog must look
                self._crowded.set()

    def counts(self) -> "dict[str, int]":
        """Threads of each kind now."""
        with self._lock:
            return {"fast": len(self._fast), "slow": len(self._slow), "detached": self._detached,
                    "detaches": self.detaches}

    def close(self, timeout: float = 2.0) -> None:
        """Stop every sender (queued objects are not served)."""
        with self._lock:
            self._stopping = True
            senders = self._fast + self._slow
        for _ in range(len(senders) + self._detached + 1):
            self._fast_line.put(None)
            self._slow_line.put(None)
        self._crowded.set()
        deadline = time.monotonic() + timeout
        for sender in senders:
            if sender.thread is not None and sender.thread is not threading.current_thread():
                sender.thread.join(max(0.0, deadline - time.monotonic()))

    # -- senders ---------------------------------------------------------------------------
    def _start(self, lane: str) -> _Sender:
        """A new sender in ``lane`` (lock held)."""
        sender = _Sender(lane)
        (self._fast if lane == "fast" else self._slow).append(sender)
        sender.thread = threading.Thread(target=self._run, args=(sender,), name=f"{self.name}-{lane}", daemon=True)
        sender.thread.start()
        return sender

    def _run(self, sender: _Sender) -> None:
        while True:
            if sender.lane == "fast":
                try:
                    obj = self._fast_line.get(timeout=FAST_IDLE_EXIT)
                except queue.Empty:
                    with self._lock:
                        if len(self._fast) > self.threads and sender in self._fast:
                            self._fast.remove(sender)  # the lane shrinks back
                            return
                    continue
            else:
                with self._lock:
                    self._slow_idle += 1
                try:
                    obj = self._slow_line.get(timeout=SLOW_IDLE_EXIT)
                except queue.Empty:
                    obj = _IDLE
                finally:
                    with self._lock:
                        self._slow_idle -= 1
                if obj is _IDLE:
                    with self._lock:
                        if self._slow_line.empty() or self._stopping:
                            self._slow.remove(sender)  # no slow subscriber needs it: a thread less
                            return
                    continue
            if obj is None:
                return
            if sender.lane == "fast":
                with self._lock:
                    sender.current, sender.busy_since = obj, time.monotonic()
                    self._in_flight += 1
                    if self._in_flight - self._detached >= len(self._fast):  # none free: the watchdog looks
                        self._crowded.set()
            try:
                self.serve(obj)
            except Exception:  # serve() must not raise; a bug here must not kill the sender
                log.exception("serving %s failed unexpectedly", getattr(obj, "key", obj))
            if sender.lane == "fast" and not self._after_fast_call(sender):
                return

    def _after_fast_call(self, sender: _Sender) -> bool:
        """Bookkeeping after a fast sender's call; False if the sender is to end."""
        with self._lock:
            obj, took = sender.current, time.monotonic() - sender.busy_since
            sender.current, sender.busy_since = None, 0.0
            self._in_flight -= 1
            if not sender.detached:
                if took > SLOW_CALL and obj is not None:
                    self._mark_slow(obj)
                return True
            self._detached -= 1
            sender.detached = False
            if self._stopping:
                return False
            if len(self._fast) < self.threads:
                self._fast.append(sender)
                return True
            if len(self._slow) < self.slow_threads:
                sender.lane = "slow"
                self._slow.append(sender)
                return True
            return False

    # -- the watchdog ----------------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            self._crowded.wait()
            if self._stopping:
                return
            time.sleep(TICK)
            now = time.monotonic()
            with self._lock:
                for sender in list(self._fast):
                    if sender.busy_since and now - sender.busy_since > self.threshold \
                            and self._detached < MAX_DETACHED:
                        self._detach(sender)
                self._grow(now)
                missing = self.threads - len(self._fast)
                for _ in range(max(0, missing)):
                    self._start("fast")  # in the place of the detached ones
                if self._in_flight - self._detached < len(self._fast):
                    self._crowded.clear()  # a sender is free: nobody waits for the watchdog

    def _grow(self, now: float) -> None:
        """Grow the fast lane (lock held) by a sender per waiting subscriber when all its
        senders have been busy a while."""
        if self._stopping or self._fast_line.empty() or len(self._fast) >= self.max_fast:
            return
        if all(sender.busy_since and now - sender.busy_since > GROW_AFTER for sender in self._fast):
            for _ in range(min(self._fast_line.qsize(), self.max_fast - len(self._fast))):
                self._start("fast")

    def _detach(self, sender: _Sender) -> None:
        """Take ``sender`` (lock held) out of the fast lane for the rest of its call, mark
        what it serves slow, and start a sender in its place."""
        sender.detached = True
        self._fast.remove(sender)
        self._detached += 1
        self.detaches += 1
        if sender.current is not None:
            self._mark_slow(sender.current)

    @staticmethod
    def _mark_slow(obj: Any) -> None:
        if not obj.slow:
            obj.slow = True
            log.warning("subscriber %s is slow (its calls take long): served by the slow lane from now on",
                        getattr(obj, "key", obj))
