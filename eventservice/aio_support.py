"""The asyncio plumbing of :mod:`eventservice.aio`: a worker thread whose results come back
to the loop as futures (:class:`Worker`), user callbacks run on the loop from any thread
(:class:`LoopCallbacks`), a bounded buffer of events on the loop (:class:`EventBuffer`),
the tasks of coroutine handlers (:class:`HandlerRunners`), and subscription changes made
in the background, in order (:class:`ChangeQueue`).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import queue
import threading
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple, TypeVar

from .event import Event
from .handlers import ErrorCallback
from .subscriber_core import SubscriberCore

log = logging.getLogger(__name__)

T = TypeVar("T")
Callback = Callable[[Any], Any]  # a plain function or a coroutine function
Job = Tuple[Callable[..., Any], Tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
AsyncHandler = Callable[[Event], Any]  # a plain function or a coroutine function taking an Event
Change = Callable[[SubscriberCore], Any]  # a subscription change, made in the worker thread
Undo = Callable[[], Any]  # takes a refused change back here


class Worker:
    """One thread running blocking calls in the order they were submitted; each result comes
    back to the loop as the result of an asyncio future. Started at the first job."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: "queue.SimpleQueue[Optional[Job]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def submit(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        """Run ``fn(*args)`` in the thread after the jobs before it; a future of the running
        loop gets its result or exception. ``RuntimeError`` once stopped."""
        if self._stopped:
            raise RuntimeError("client is closed")
        loop = asyncio.get_running_loop()
        future: "asyncio.Future[T]" = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put((fn, args, loop, future))
        return future

    def stop(self) -> None:
        """No more jobs: the thread ends after those submitted."""
        if not self._stopped:
            self._stopped = True
            self._jobs.put(None)

    async def join(self, timeout: float) -> None:
        """Wait (without blocking the loop) until the thread ended."""
        thread = self._thread
        if thread is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.001
        while thread.is_alive() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, loop, future = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            _settle(loop, future, result, error)


def _settle(loop: asyncio.AbstractEventLoop, future: "asyncio.Future[Any]", result: Any,
            error: Optional[BaseException]) -> None:
    def settle() -> None:
        if future.cancelled():  # its caller went away; the call itself ran to its end
            if error is not None:
                log.debug("a call whose caller was cancelled failed: %s", error)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: nobody waits any more


class LoopCallbacks:
    """Runs user callbacks (plain or coroutine functions) on the loop, from any thread."""

    def __init__(self) -> None:
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.tasks: Set["asyncio.Task[Any]"] = set()

    def bind(self) -> None:
        """Remember the running loop (the first call's): callbacks run there."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()

    def from_thread(self, callback: Optional[Callback], detail: Any) -> None:
        """From any thread: run ``callback(detail)`` on the loop (nothing if either is None
        or the loop is closed)."""
        loop = self.loop
        if callback is None or loop is None:
            return
        try:
            loop.call_soon_threadsafe(self.run, callback, detail)
        except RuntimeError:
            pass  # the loop is closed

    def run(self, callback: Callback, detail: Any) -> None:
        """On the loop: call ``callback(detail)``; an awaitable result runs as a task (cancelled
        by :meth:`cancel_all`). What it raises is logged."""
        try:
            result = callback(detail)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self.tasks.add(task)
                task.add_done_callback(self._done)
        except Exception:
            log.exception("callback %r raised", callback)

    def _done(self, task: "asyncio.Task[Any]") -> None:
        self.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error("callback task raised", exc_info=(type(exc), exc, exc.__traceback__))

    async def cancel_all(self) -> None:
        """Cancel the callback tasks still running and wait until they ended."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class EventBuffer:
    """A bounded FIFO of events on the loop; when full, the oldest event is dropped and counted."""

    def __init__(self, maxsize: int) -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError("maxsize must be an int of at least 1")
        self.maxsize = maxsize
        self.events: Deque[Event] = collections.deque()
        self.dropped = 0
        self.closed = False
        self._waiter: Optional["asyncio.Future[None]"] = None

    def put(self, event: Event) -> None:
        """Add an event (on the loop); ignored once closed."""
        if self.closed:
            return
        if len(self.events) >= self.maxsize:
            self.events.popleft()
            self.dropped += 1
        self.events.append(event)
        self._wake()

    def close(self) -> None:
        """No more events: :meth:`get` ends once the buffer is empty."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Event:
        """The oldest event, waiting for one; ``StopAsyncIteration`` once closed and empty."""
        while not self.events:
            if self.closed:
                raise StopAsyncIteration
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self.events.popleft()


class HandlerRunner:
    """Runs a coroutine handler in a task of its own, one event at a time, in order, over a
    bounded buffer (oldest dropped when full); what it raises goes to ``failed(exc, event,
    handler)``."""

    def __init__(self, handler: AsyncHandler, maxsize: int, failed: ErrorCallback) -> None:
        self.handler = handler
        self.buffer = EventBuffer(maxsize)
        self.failed = failed
        self.task: Optional["asyncio.Task[None]"] = None

    def start(self) -> None:
        """Start the task (on the loop), once."""
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    def put(self, event: Event) -> None:
        """An event for the handler (on the loop)."""
        self.buffer.put(event)

    async def _run(self) -> None:
        while True:
            try:
                event = await self.buffer.get()
            except StopAsyncIteration:
                return
            try:
                await self.handler(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed(exc, event, self.handler)

    async def stop(self) -> None:
        """Drop what waits and end the task."""
        self.buffer.close()
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class HandlerRunners:
    """The runners of one subscriber's coroutine handlers, one per handler (by identity),
    started once the subscriber started."""

    def __init__(self, failed: ErrorCallback) -> None:
        self.failed = failed
        self.started = False
        self.dropped_by_stopped = 0  # events the runners stopped so far had dropped
        self._by_id: Dict[int, HandlerRunner] = {}

    def target(self, handler: AsyncHandler) -> Any:
        """What a handler table holds for ``handler``: its runner if it has one, else itself."""
        return self._by_id.get(id(handler), handler)

    def runner(self, handler: AsyncHandler, maxsize: int) -> HandlerRunner:
        """The runner of a coroutine handler, made (and started, once started) at first."""
        runner = self._by_id.get(id(handler))
        if runner is None:
            runner = self._by_id[id(handler)] = HandlerRunner(handler, maxsize, self.failed)
            if self.started:
                runner.start()
        return runner

    def start(self) -> None:
        """Start every runner, and those made later at once (on the loop)."""
        self.started = True
        for runner in list(self._by_id.values()):
            runner.start()

    def stop(self, handler: AsyncHandler) -> Optional["asyncio.Task[None]"]:
        """Forget ``handler``'s runner; returns the task that stops it, if it ran."""
        runner = self._by_id.pop(id(handler), None)
        if runner is None:
            return None
        self.dropped_by_stopped += runner.buffer.dropped
        return asyncio.ensure_future(runner.stop()) if self.started else None

    async def stop_all(self) -> None:
        """Stop every runner and wait until their tasks ended."""
        await asyncio.gather(*(runner.stop() for runner in list(self._by_id.values())), return_exceptions=True)

    @property
    def dropped(self) -> int:
        """Events dropped by full buffers, of the runners now and of those stopped."""
        return self.dropped_by_stopped + sum(runner.buffer.dropped for runner in list(self._by_id.values()))


class ChangeQueue:
    """Subscription changes made at the service in the background, in order, by the worker
    thread; those added before the core exists wait for it. A change the service refuses is
    undone here (its ``undo``, in the worker thread) and its error kept for :meth:`flush`."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._core: Optional[SubscriberCore] = None
        self._waiting: List[Tuple[Change, Optional[Undo]]] = []
        self._pending: List["asyncio.Future[Any]"] = []  # changes not yet awaited by flush()

    def start(self, core: SubscriberCore) -> None:
        """Send the changes that waited, then each as it comes (on the loop)."""
        self._core = core
        waiting, self._waiting = self._waiting, []
        for change, undo in waiting:
            self.add(change, undo)

    def add(self, change: Change, undo: Optional[Undo] = None) -> None:
        """Queue ``change(core)`` (on the loop); ``undo()`` if the service refuses it."""
        core = self._core
        if core is None:
            self._waiting.append((change, undo))
            return

        def run() -> None:
            try:
                change(core)
            except BaseException:
                if undo is not None:
                    undo()
                raise
        future = self._worker.submit(run)
        self._pending.append(future)
        future.add_done_callback(_log_failed_change)

    async def flush(self) -> None:
        """Wait until every change so far was made; raise the first error one met."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)


def _log_failed_change(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a subscription change failed: %s", future.exception())
