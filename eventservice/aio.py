"""The asyncio face of the clients: :class:`AsyncPublisher` and :class:`AsyncSubscriber`.

Nothing here blocks the event loop. Each client owns one worker thread that makes its
blocking Pyro5 calls, in the order they were asked for; results come back to the loop
through futures. A subscriber's events arrive in the threads of its Pyro5 daemon, are
matched to handlers there, and enter the loop with one ``loop.call_soon_threadsafe`` per
delivered batch (not per event).

``aclose()`` (and leaving ``async with``, also by cancellation) ends every thread and closes
every socket the client made; when the closing coroutine is cancelled itself, the worker
still finishes the job on its own. Works under any asyncio loop (the default one, uvloop).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import queue
import threading
from typing import (Any, Awaitable, Callable, Deque, Dict, Generator, List, Optional, Set, Tuple, TypeVar, Union)

from .clients import Subjects, Subscriber, check_subjects
from .config import DEFAULT_REQUEST_TIMEOUT
from .event import Event
from .handlers import HandlerTable, log_handler_error
from .patterns import compile_pattern
from .publisher_core import PublisherCore

log = logging.getLogger(__name__)

__all__ = ["AsyncPublisher", "AsyncSubscriber", "Subscription", "DEFAULT_BUFFER_SIZE"]

DEFAULT_BUFFER_SIZE = 10_000  # events a Subscription (or a coroutine handler) holds before dropping the oldest
CLOSE_TIMEOUT = 15.0  # seconds aclose() waits for the worker to finish closing

T = TypeVar("T")
AsyncHandler = Callable[[Event], Any]  # a plain function or a coroutine function taking an Event
Callback = Callable[[Any], Any]  # a plain function or a coroutine function


# -- the worker thread ---------------------------------------------------------------------------
class _Worker:
    """One thread running blocking calls in the order they were submitted; each result comes
    back to the loop as the result of an asyncio future. Started at the first job."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: "queue.SimpleQueue[Optional[Tuple[Callable[..., Any], Tuple[Any, ...], asyncio.AbstractEventLoop, asyncio.Future[Any]]]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def submit(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
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


def _is_coroutine_function(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class _Callbacks:
    """Runs user callbacks (plain or coroutine functions) on the loop, from any thread."""

    def __init__(self) -> None:
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.tasks: Set["asyncio.Task[Any]"] = set()

    def bind(self) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()

    def from_thread(self, callback: Optional[Callback], detail: Any) -> None:
        loop = self.loop
        if callback is None or loop is None:
            return
        try:
            loop.call_soon_threadsafe(self.run, callback, detail)
        except RuntimeError:
            pass  # the loop is closed

    def run(self, callback: Callback, detail: Any) -> None:
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
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("callback task raised", exc_info=(type(exc), exc, exc.__traceback__))

    async def cancel_all(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


# -- publisher -----------------------------------------------------------------------------------
class AsyncPublisher:
    """An asyncio :class:`~eventservice.Publisher`: ``await publish(subjects, msg)``.

    By default ``publish`` returns once the service accepted the event (the call runs in the
    publisher's worker thread) and raises what the service raised. With ``batch=True`` it
    checks its arguments, queues the event and returns at once (it waits only while
    100,000 events are queued); ``await flush()`` waits until every queued event was
    accepted and raises the first error any met; ``aclose()`` and leaving ``async with``
    flush. Type errors (subjects, unregistered classes in the message) are raised before
    anything is sent or queued.

    ``on_disconnect(error)`` and ``on_reconnect(uri)`` (plain or coroutine functions) are told
    on the loop when a call finds the service gone and when a later call reached it again.
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, batch: bool = False, *,
                 on_disconnect: Optional[Callback] = None, on_reconnect: Optional[Callback] = None) -> None:
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._callbacks = _Callbacks()
        self._core = PublisherCore(ident, esURI, batch,
                                   on_disconnect=lambda e: self._callbacks.from_thread(self.on_disconnect, e),
                                   on_reconnect=lambda u: self._callbacks.from_thread(self.on_reconnect, u))
        self._worker = _Worker("es-async-publisher")
        self._closed = False
        self._closing: Optional["asyncio.Future[Any]"] = None

    @property
    def connected(self) -> bool:
        """False from a call that found the service gone until one reaches it again."""
        return self._core.connected

    async def publish(self, subjects: Subjects, msg: Any) -> None:
        """Publish ``msg`` on each subject (a str or list/tuple of str)."""
        if self._closed:
            raise RuntimeError("publisher is closed")
        self._callbacks.bind()
        subjects, msg = self._core.prepare(subjects, msg)
        if not (self._core.batching and self._core.offer(subjects, msg)):  # room: queued at once
            await self._worker.submit(self._core.publish, subjects, msg)

    async def request(self, subject: str, msg: Any = None, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send a request and return the first answer of a responder, as
        :meth:`eventservice.Publisher.request` does (``NoResponderError`` when none
        answers); the loop goes on meanwhile (the publisher's other calls wait for it in
        its worker thread)."""
        if self._closed:
            raise RuntimeError("publisher is closed")
        self._callbacks.bind()
        return await self._worker.submit(self._core.request, subject, msg, timeout)

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every queued event was accepted; raise the first error any met."""
        self._callbacks.bind()
        if self._core.batching:
            await self._worker.submit(self._core.flush, timeout)

    async def aclose(self) -> None:
        """Flush (with ``batch=True``), release the connection and end the worker thread."""
        if self._closing is None:
            self._callbacks.bind()
            self._closed = True
            self._closing = self._worker.submit(self._core.close)
            self._worker.stop()
        try:
            await asyncio.shield(self._closing)
        finally:
            await self._worker.join(CLOSE_TIMEOUT)
            await self._callbacks.cancel_all()

    async def __aenter__(self) -> "AsyncPublisher":
        self._callbacks.bind()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


# -- subscriber ----------------------------------------------------------------------------------
class _Buffer:
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
        if self.closed:
            return
        if len(self.events) >= self.maxsize:
            self.events.popleft()
            self.dropped += 1
        self.events.append(event)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Event:
        while not self.events:
            if self.closed:
                raise StopAsyncIteration
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self.events.popleft()


class Subscription:
    """The events on some subjects (or patterns) as an async iterator::

        async with sub.subscription("stockquotes.sun") as quotes:
            async for event in quotes:
                ...

    Events wait in a buffer of ``maxsize`` events; when it is full the oldest is dropped to
    make room and counted in :attr:`dropped`. ``await aclose()`` (or leaving ``async with``)
    unsubscribes what no other handler or subscription of the subscriber holds, discards
    what is buffered and ends the iteration; when the subscriber is closed, the iteration
    yields what is buffered and then ends.
    """

    def __init__(self, owner: "AsyncSubscriber", subjects: List[str], patterns: List[str], maxsize: int) -> None:
        self._owner = owner
        self.subjects = subjects
        self.patterns = patterns
        self._buffer = _Buffer(maxsize)

    @property
    def maxsize(self) -> int:
        return self._buffer.maxsize

    @property
    def dropped(self) -> int:
        """Events dropped because the buffer was full (the oldest go first)."""
        return self._buffer.dropped

    @property
    def pending(self) -> int:
        """Events waiting in the buffer."""
        return len(self._buffer.events)

    @property
    def closed(self) -> bool:
        return self._buffer.closed

    def _put(self, event: Event) -> None:
        self._buffer.put(event)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        return await self._buffer.get()

    async def get(self) -> Event:
        """The next event (waiting for one); ``StopAsyncIteration`` once closed and empty."""
        return await self._buffer.get()

    async def aclose(self) -> None:
        """Stop receiving; events still buffered are discarded."""
        if self._buffer.closed:
            return
        self._buffer.close()
        self._buffer.events.clear()
        await self._owner._detach(self)

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


class _Opening:
    """What :meth:`AsyncSubscriber.subscription` returns: await it for the Subscription, or
    use it in ``async with`` (which closes the subscription at the end)."""

    def __init__(self, opener: Callable[[], Awaitable[Subscription]]) -> None:
        self._opener = opener
        self._subscription: Optional[Subscription] = None

    async def _open(self) -> Subscription:
        if self._subscription is None:
            self._subscription = await self._opener()
        return self._subscription

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._open().__await__()

    async def __aenter__(self) -> Subscription:
        return await self._open()

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._subscription is not None:
            await self._subscription.aclose()


class _Runner:
    """Runs a coroutine handler in a task of its own, one event at a time, in order, over a
    bounded buffer (oldest dropped when full)."""

    def __init__(self, owner: "AsyncSubscriber", handler: AsyncHandler, maxsize: int) -> None:
        self.owner = owner
        self.handler = handler
        self.buffer = _Buffer(maxsize)
        self.task: Optional["asyncio.Task[None]"] = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    def _put(self, event: Event) -> None:
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
                self.owner._handler_failed(exc, event, self.handler)

    async def stop(self) -> None:
        self.buffer.close()
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


_Sink = Union[Subscription, _Runner]


class _Bridge(Subscriber):
    """The threaded Subscriber inside an AsyncSubscriber: matches each delivered batch to
    the handler table (in the daemon's thread) and posts it to the loop in one call."""

    def __init__(self, owner: "AsyncSubscriber", ident: Optional[str], esURI: Any) -> None:
        super().__init__(ident, esURI,
                         on_disconnect=lambda e: owner._callbacks.from_thread(owner.on_disconnect, e),
                         on_reconnect=lambda u: owner._callbacks.from_thread(owner.on_reconnect, u))
        self._handlers = owner._table
        self._post = owner._post

    def _deliver(self, events: List[Event]) -> None:
        targets = self._handlers.targets
        batch = []
        for event in events:
            found = targets(event.subject)
            if found:
                batch.append((event, found))
        if batch:
            self._post(batch)


class AsyncSubscriber:
    """An asyncio subscriber: handlers (plain or coroutine functions) and async iterators.

    ::

        async with AsyncSubscriber() as sub:
            @sub.on("stockquotes.sun")
            async def quote(event): ...
            await sub.flush()                    # the subscription reached the service
            async with sub.subscription(r"stockquotes\\..*", match=True) as quotes:
                async for event in quotes: ...

    Semantics as for :class:`~eventservice.Subscriber`'s handlers: matching with the
    service's rules, each handler once per event, the service sends each event once.
    A plain function runs on the loop when its batch arrives (keep it quick); a coroutine
    handler runs in a task of its own, one event at a time, in order, with up to ``maxsize``
    events waiting (beyond that the oldest is dropped and counted in :attr:`dropped`). A
    handler that raises goes to ``on_error(exc, event, handler)`` (default: logged with its
    traceback). ``on``, ``on_match`` and ``remove_handler`` change the table at once and
    send the change to the service in the background, in order; ``await flush()`` waits
    until every change so far reached the service and raises the first error one met.

    ``on_disconnect(error)`` and ``on_reconnect(uri)`` (plain or coroutine functions) are told
    on the loop when the service went away and when it is back and subscribed again (the
    re-subscription itself is automatic, within 10 s of the service being back).
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, *,
                 maxsize: int = DEFAULT_BUFFER_SIZE,
                 on_error: Optional[Callable[[BaseException, Event, Any], Any]] = None,
                 on_disconnect: Optional[Callback] = None, on_reconnect: Optional[Callback] = None) -> None:
        _Buffer(maxsize)  # checks it
        self.ident = ident
        self.esURI = esURI
        self.maxsize = maxsize
        self.on_error = on_error or log_handler_error
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._table = HandlerTable()
        self._callbacks = _Callbacks()
        self._worker = _Worker("es-async-subscriber")
        self._inner: Optional[_Bridge] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._started = False
        self._closed = False
        self._closing: Optional["asyncio.Future[Any]"] = None
        self._sinks: Dict[int, _Sink] = {}  # id(handler) -> the runner of a coroutine handler
        self._subscriptions: Set[Subscription] = set()
        self._before_start: List[Callable[[Subscriber], Any]] = []
        self._changes: List["asyncio.Future[Any]"] = []  # service changes not yet awaited by flush()
        self._dropped_by_closed = 0

    # -- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Make the subscriber's daemon and listen (``async with`` calls this)."""
        if self._started:
            return
        if self._closed:
            raise RuntimeError("subscriber is closed")
        self._started = True
        self._callbacks.bind()
        self._loop = asyncio.get_running_loop()
        self._inner = await self._worker.submit(self._make_inner)
        for sink in list(self._sinks.values()):
            if isinstance(sink, _Runner):
                sink.start()
        for change in self._before_start:
            self._change(change)
        self._before_start.clear()

    def _make_inner(self) -> _Bridge:
        inner = _Bridge(self, self.ident, self.esURI)
        inner.start()
        return inner

    async def aclose(self) -> None:
        """Unsubscribe, stop every handler task and subscription (iterators end), close the
        daemon and end every thread this subscriber made."""
        if self._closing is None:
            self._closed = True
            for subscription in list(self._subscriptions):
                subscription._buffer.close()
            if self._inner is not None:
                self._closing = self._worker.submit(self._inner.close)
            else:
                self._closing = asyncio.get_running_loop().create_future()
                self._closing.set_result(None)
            self._worker.stop()
        try:
            await asyncio.shield(self._closing)
        finally:
            await asyncio.gather(*(s.stop() for s in list(self._sinks.values()) if isinstance(s, _Runner)),
                                 return_exceptions=True)
            await self._worker.join(CLOSE_TIMEOUT)
            await self._callbacks.cancel_all()

    async def __aenter__(self) -> "AsyncSubscriber":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        """False from the service found gone until it is back and subscribed again."""
        return self._inner is None or self._inner.connected

    @property
    def dropped(self) -> int:
        """Events dropped by full buffers, of all subscriptions and coroutine handlers."""
        total = self._dropped_by_closed
        for sink in list(self._sinks.values()):
            total += sink.buffer.dropped if isinstance(sink, _Runner) else 0
        for subscription in list(self._subscriptions):
            total += subscription.dropped
        return total

    # -- handlers ----------------------------------------------------------------------------
    def on(self, subjects: Subjects, handler: Optional[AsyncHandler] = None, *,
           maxsize: Optional[int] = None) -> Any:
        """Call ``handler(event)`` (a plain or a coroutine function) for every event on these
        exact subjects; returns ``handler``, or without it a decorator. See the class."""
        subjects = check_subjects(subjects)
        if handler is None:
            return lambda fn: self.on(subjects, fn, maxsize=maxsize)
        self._check_open()
        target = self._target(handler, maxsize)
        added = self._table.add(target, subjects=subjects)
        self._change(_subscribing("subscribe", subjects), undo=lambda: self._table.remove(target, added[0]))
        return handler

    def on_match(self, patterns: Subjects, handler: Optional[AsyncHandler] = None, *,
                 maxsize: Optional[int] = None) -> Any:
        """Like :meth:`on`, for regex patterns (``re.IGNORECASE``, ``re.match``); ``ValueError``
        for an invalid pattern, at once."""
        patterns = check_subjects(patterns, "pattern")
        if handler is None:
            return lambda fn: self.on_match(patterns, fn, maxsize=maxsize)
        compiled = [compile_pattern(p) for p in patterns]
        self._check_open()
        target = self._target(handler, maxsize)
        added = self._table.add(target, patterns=compiled)
        self._change(_subscribing("subscribeMatch", patterns), undo=lambda: self._table.remove(target, added[1]))
        return handler

    def remove_handler(self, handler: AsyncHandler, subjects: Optional[Subjects] = None) -> bool:
        """Detach ``handler`` from these subjects and patterns, or from all (see
        :meth:`Subscriber.remove_handler`); the service is told in the background. A
        coroutine handler left with nothing is stopped (events waiting for it are dropped)."""
        names = None if subjects is None else check_subjects(subjects, "subject or pattern")
        self._check_open()
        target = self._sinks.get(id(handler), handler)
        if not self._table.holds(target):
            return False
        before = self._snapshot()
        removed = self._table.remove(target, names)
        if not self._table.holds(target):
            sink = self._sinks.pop(id(handler), None)
            if isinstance(sink, _Runner):
                self._dropped_by_closed += sink.buffer.dropped
                if self._started:
                    task = asyncio.ensure_future(sink.stop())
                    self._callbacks.tasks.add(task)
                    task.add_done_callback(self._callbacks.tasks.discard)
        self._change(lambda inner: self._release(inner, before))
        return removed

    def handlers(self) -> List[AsyncHandler]:
        """The attached handlers (not subscriptions), in the order they were first attached."""
        out = []
        for target in self._table.handlers():
            if isinstance(target, _Runner):
                out.append(target.handler)
            elif not isinstance(target, Subscription):
                out.append(target)
        return out

    def _target(self, handler: AsyncHandler, maxsize: Optional[int]) -> Any:
        if not callable(handler):
            raise TypeError(f"a handler must be callable, not {type(handler).__name__}")
        if not _is_coroutine_function(handler):
            return handler
        runner = self._sinks.get(id(handler))
        if runner is None:
            runner = _Runner(self, handler, maxsize or self.maxsize)
            self._sinks[id(handler)] = runner
            if self._started:
                runner.start()
        return runner

    def subscription(self, subjects: Subjects, *, match: bool = False,
                     maxsize: Optional[int] = None) -> _Opening:
        """A :class:`Subscription` to these exact subjects (or, with ``match=True``, patterns):
        ``await`` it (it is live when the await returns) or use it in ``async with``."""
        names = check_subjects(subjects, "pattern" if match else "subject")
        compiled = [compile_pattern(p) for p in names] if match else []
        size = maxsize or self.maxsize
        _Buffer(size)

        async def open_() -> Subscription:
            await self.start()
            if self._closed:
                raise RuntimeError("subscriber is closed")
            subscription = Subscription(self, [] if match else names, names if match else [], size)
            self._subscriptions.add(subscription)
            if match:
                added = self._table.add(subscription, patterns=compiled)
                method, undo = "subscribeMatch", added[1]
            else:
                added = self._table.add(subscription, subjects=names)
                method, undo = "subscribe", added[0]
            try:
                await self._worker.submit(_subscribing(method, names), self._inner)
            except BaseException:
                self._table.remove(subscription, undo)
                self._subscriptions.discard(subscription)
                raise
            return subscription
        return _Opening(open_)

    async def _detach(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        self._dropped_by_closed += subscription.dropped
        if self._closed:
            return
        before = self._snapshot()
        self._table.remove(subscription)
        if self._started:
            try:
                await self._worker.submit(self._release, self._inner, before)
            except RuntimeError:
                pass  # closed meanwhile: everything is unsubscribed anyway

    # -- service changes ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("subscriber is closed")

    def _snapshot(self) -> Tuple[List[str], List[str]]:
        subjects, patterns = self._table.held()
        return sorted(subjects), sorted(patterns)

    @staticmethod
    def _release(inner: Optional[Subscriber], before: Tuple[List[str], List[str]]) -> None:
        if inner is not None:
            with inner._change_lock:
                inner._release(before)

    def _change(self, change: Callable[[Subscriber], Any], undo: Optional[Callable[[], Any]] = None) -> None:
        """Send a subscription change to the service in the background, in order."""
        if self._closed:
            raise RuntimeError("subscriber is closed")
        if not self._started:
            self._before_start.append(change if undo is None else _Undoable(change, undo))
            return
        inner = self._inner

        def run() -> None:
            assert inner is not None
            with inner._change_lock:
                try:
                    change(inner)
                except BaseException:
                    if undo is not None:
                        undo()
                    raise
        future = self._worker.submit(run)
        self._changes.append(future)
        future.add_done_callback(self._change_done)

    def _change_done(self, future: "asyncio.Future[Any]") -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning("a subscription change failed: %s", future.exception())

    async def flush(self) -> None:
        """Wait until every subscription change made so far reached the service; raise the
        first error one met (that change was undone here)."""
        await self.start()
        changes, self._changes = self._changes, []
        if changes:
            await asyncio.gather(*changes)

    # -- events (the loop) -------------------------------------------------------------------
    def _post(self, batch: List[Tuple[Event, Tuple[Any, ...]]]) -> None:
        """From a daemon thread: one batch of (event, handlers) into the loop."""
        try:
            self._loop.call_soon_threadsafe(self._on_batch, batch)  # type: ignore[union-attr]
        except RuntimeError:
            pass  # the loop is closed

    def _on_batch(self, batch: List[Tuple[Event, Tuple[Any, ...]]]) -> None:
        if self._closed:
            return
        for event, targets in batch:
            for target in targets:
                if type(target) is Subscription or type(target) is _Runner:
                    target._put(event)
                    continue
                try:
                    target(event)
                except Exception as exc:
                    self._handler_failed(exc, event, target)

    def _handler_failed(self, exc: BaseException, event: Event, handler: Any) -> None:
        try:
            result = self.on_error(exc, event, handler)
            if inspect.isawaitable(result):
                self._callbacks.run(lambda _: result, None)
        except Exception:
            log.exception("the error callback raised, for handler %r and %s", handler, event)


def _subscribing(method: str, names: List[str]) -> Callable[[Subscriber], None]:
    """A change that subscribes ``names`` (exact subjects or patterns, by ``method``)."""
    def change(inner: Subscriber) -> None:
        with inner._change_lock:
            inner._link.call(method, names, inner._callback)
            inner._remember(None)
    return change


class _Undoable:
    """A change queued before start, with what undoes it here when the service refuses it."""

    def __init__(self, change: Callable[[Subscriber], Any], undo: Callable[[], Any]) -> None:
        self.change = change
        self.undo = undo

    def __call__(self, inner: Subscriber) -> Any:
        try:
            return self.change(inner)
        except BaseException:
            self.undo()
            raise
