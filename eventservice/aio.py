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
import inspect
import logging
from typing import Any, Awaitable, Callable, Generator, List, Optional, Set, Tuple

from .aio_support import (AsyncHandler, Callback, ChangeQueue, EventBuffer, HandlerRunner, HandlerRunners,
                          LoopCallbacks, Worker)
from .auth import client_credentials
from .config import DEFAULT_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT, client_name
from .event import Event
from .filters import compile_filter
from .handlers import (NO_ANSWER, ErrorCallback, HandlerTable, handler_key, holder_key, is_coroutine_function,
                       log_handler_error)
from .link import Subjects, check_subjects
from .patterns import compile_pattern, glob_pattern
from .publisher_core import PublisherCore
from .subscriber_core import PATTERN, SUBJECT, SubscriberCore, Wanted

log = logging.getLogger(__name__)

__all__ = ["AsyncPublisher", "AsyncSubscriber", "Subscription", "DEFAULT_BUFFER_SIZE"]

DEFAULT_BUFFER_SIZE = 10_000  # events a Subscription (or a coroutine handler) holds before dropping the oldest
CLOSE_TIMEOUT = 15.0  # seconds aclose() waits for the worker to finish closing


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
    ``user``, ``password``, ``name`` and ``announce`` as for :class:`~eventservice.Publisher`
    (announced from ``async with``, or the first call).
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, batch: bool = False, *,
                 user: Optional[str] = None, password: Optional[str] = None,
                 name: Optional[str] = None, announce: bool = False,
                 on_disconnect: Optional[Callback] = None, on_reconnect: Optional[Callback] = None) -> None:
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._callbacks = LoopCallbacks()
        self._core = PublisherCore(client_credentials(ident, user, password), esURI, batch, name=name,
                                   announce=announce,
                                   on_disconnect=lambda e: self._callbacks.from_thread(self.on_disconnect, e),
                                   on_reconnect=lambda u: self._callbacks.from_thread(self.on_reconnect, u))
        self.name = self._core.name
        self._worker = Worker("es-async-publisher")
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
        if self._core.announce:
            await self._worker.submit(self._core.connect)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


# -- subscriber ----------------------------------------------------------------------------------
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
        self._buffer = EventBuffer(maxsize)
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


class _Delivery:
    """A subscriber's events into its loop: each batch from the service is matched to the
    table in the daemon's thread and enters the loop in one call, where plain handlers are
    called (what they raise goes to ``failed``) and coroutine handlers' runners and
    subscriptions are given the event. Nothing is handed on once ``closed``."""

    def __init__(self, table: HandlerTable, responders: HandlerTable, failed: ErrorCallback) -> None:
        self.table = table
        self.responders = responders
        self.failed = failed
        self.loop: Optional[asyncio.AbstractEventLoop] = None  # set when the subscriber starts
        self.closed = False

    def deliver(self, events: List[Event]) -> None:
        """From a daemon thread: one batch of events, in order."""
        targets = self.table.targets
        batch = []
        for event in events:
            found = targets(event.subject, event.msg)
            if found:
                batch.append((event, found))
        if batch and self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._on_batch, batch)
            except RuntimeError:
                pass  # the loop is closed

    def answer(self, event: Event) -> Any:
        """From a daemon thread: a request, answered on the loop by the first responder
        handler that wants it (NO_ANSWER without one)."""
        loop = self.loop
        found = self.responders.targets(event.subject, event.msg)
        if not found or loop is None or self.closed:
            return NO_ANSWER
        return asyncio.run_coroutine_threadsafe(_answer(found[0], event), loop).result(MAX_REQUEST_TIMEOUT)

    def _on_batch(self, batch: List[Tuple[Event, Tuple[Any, ...]]]) -> None:
        if self.closed:
            return
        for event, targets in batch:
            for target in targets:
                if type(target) is HandlerRunner:
                    target.put(event)
                elif type(target) is Subscription:
                    target._put(event)
                else:
                    try:
                        target(event)
                    except Exception as exc:
                        self.failed(exc, event, target)


async def _answer(responder: AsyncHandler, event: Event) -> Any:
    answer = responder(event)
    return await answer if inspect.isawaitable(answer) else answer


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
    re-subscription itself is automatic, within 10 s of the service being back). ``user``,
    ``password`` and ``name`` as for :class:`~eventservice.Subscriber`.
    """

    def __init__(self, ident: Optional[str] = None, esURI: Any = None, *, name: Optional[str] = None,
                 user: Optional[str] = None, password: Optional[str] = None,
                 maxsize: int = DEFAULT_BUFFER_SIZE,
                 on_error: Optional[Callable[[BaseException, Event, Any], Any]] = None,
                 on_disconnect: Optional[Callback] = None, on_reconnect: Optional[Callback] = None) -> None:
        EventBuffer(maxsize)  # checks it
        self.credentials = client_credentials(ident, user, password)
        self.user = self.credentials.user
        self.ident = None if self.user else self.credentials.secret
        self.name = client_name(name)
        self.esURI = esURI
        self.maxsize = maxsize
        self.on_error = on_error or log_handler_error
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._table = HandlerTable()  # handlers and subscriptions, for dispatch: the service holds the core's set
        self._responders = HandlerTable()  # responder handlers (on(..., respond=True)), for requests
        self._callbacks = LoopCallbacks()
        self._worker = Worker("es-async-subscriber")
        self._core: Optional[SubscriberCore] = None
        self._delivery = _Delivery(self._table, self._responders, self._handler_failed)
        self._started = False
        self._closed = False
        self._closing: Optional["asyncio.Future[Any]"] = None
        self._runners = HandlerRunners(self._handler_failed)
        self._changes = ChangeQueue(self._worker)
        self._subscriptions: Set[Subscription] = set()
        self._dropped_by_closed = 0  # events that subscriptions closed so far had dropped

    # -- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Make the subscriber's daemon and listen (``async with`` calls this)."""
        if self._started:
            return
        if self._closed:
            raise RuntimeError("subscriber is closed")
        self._started = True
        self._callbacks.bind()
        self._delivery.loop = asyncio.get_running_loop()
        self._core = await self._worker.submit(self._make_core)
        self._runners.start()
        self._changes.start(self._core)

    def _make_core(self) -> SubscriberCore:
        core = SubscriberCore(self.credentials, self.esURI, name=self.name, deliver=self._delivery.deliver,
                              answer=self._delivery.answer,
                              on_disconnect=lambda e: self._callbacks.from_thread(self.on_disconnect, e),
                              on_reconnect=lambda u: self._callbacks.from_thread(self.on_reconnect, u))
        core.start()
        return core

    async def aclose(self) -> None:
        """Unsubscribe, stop every handler task and subscription (iterators end), close the
        daemon and end every thread this subscriber made."""
        if self._closing is None:
            self._closed = self._delivery.closed = True
            for subscription in list(self._subscriptions):
                subscription._buffer.close()
            if self._core is not None:
                self._closing = self._worker.submit(self._core.close)
            else:
                self._closing = asyncio.get_running_loop().create_future()
                self._closing.set_result(None)
            self._worker.stop()
        try:
            await asyncio.shield(self._closing)
        finally:
            await self._runners.stop_all()
            await self._worker.join(CLOSE_TIMEOUT)
            await self._callbacks.cancel_all()

    async def __aenter__(self) -> "AsyncSubscriber":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    @property
    def uri(self) -> Optional[str]:
        """The callback URI the service knows this subscriber by; None before :meth:`start`."""
        return None if self._core is None else self._core.uri

    @property
    def connected(self) -> bool:
        """False from the service found gone until it is back and subscribed again."""
        return self._core is None or self._core.connected

    @property
    def dropped(self) -> int:
        """Events dropped by full buffers, of all subscriptions and coroutine handlers."""
        return (self._dropped_by_closed + self._runners.dropped
                + sum(subscription.dropped for subscription in list(self._subscriptions)))

    # -- handlers ----------------------------------------------------------------------------
    def on(self, subjects: Subjects, handler: Optional[AsyncHandler] = None, *, maxsize: Optional[int] = None,
           filter: Any = None, group: Optional[str] = None, respond: bool = False) -> Any:
        """Call ``handler(event)`` (a plain or a coroutine function) for every event on these
        exact subjects; returns ``handler``, or without it a decorator. See the class.
        ``filter``, ``group`` and ``respond=True`` (it answers requests instead, on the
        loop) as for :meth:`Subscriber.on`."""
        subjects = check_subjects(subjects)
        if handler is None:
            return lambda fn: self.on(subjects, fn, maxsize=maxsize, filter=filter, group=group, respond=respond)
        self._check_open()
        self._attach(handler, maxsize, Wanted(SUBJECT, subjects, filter, group, respond), subjects=subjects)
        return handler

    def on_match(self, patterns: Subjects, handler: Optional[AsyncHandler] = None, *, maxsize: Optional[int] = None,
                 filter: Any = None, group: Optional[str] = None, respond: bool = False) -> Any:
        """Like :meth:`on`, for regex patterns (``re.IGNORECASE``, ``re.match``); ``ValueError``
        for an invalid pattern, at once."""
        patterns = check_subjects(patterns, "pattern")
        if handler is None:
            return lambda fn: self.on_match(patterns, fn, maxsize=maxsize, filter=filter, group=group,
                                            respond=respond)
        compiled = [compile_pattern(p) for p in patterns]
        self._check_open()
        self._attach(handler, maxsize, Wanted(PATTERN, patterns, filter, group, respond), patterns=compiled)
        return handler

    def on_glob(self, globs: Subjects, handler: Optional[AsyncHandler] = None, *, maxsize: Optional[int] = None,
                filter: Any = None, group: Optional[str] = None, respond: bool = False) -> Any:
        """Like :meth:`on_match`, for glob-style patterns (``sensor.*``, ``*``: see
        :func:`~eventservice.patterns.glob_pattern`)."""
        patterns = [glob_pattern(glob) for glob in check_subjects(globs, "glob")]
        return self.on_match(patterns, handler, maxsize=maxsize, filter=filter, group=group, respond=respond)

    def _attach(self, handler: AsyncHandler, maxsize: Optional[int], wanted: Wanted, **held: Any) -> None:
        """Attach ``handler`` here at once and subscribe what it wants in the background
        (undone here if the service refuses)."""
        if not callable(handler):
            raise TypeError(f"a handler must be callable, not {type(handler).__name__}")
        table = self._responders if wanted.respond else self._table
        target = handler if wanted.respond else self._target(handler, maxsize)
        added = table.add(target, filter=wanted.filter, **held)
        key = holder_key(target, wanted.respond)
        self._changes.add(lambda core: core.subscribe(key, wanted.kind, wanted.names, wanted.options),
                          undo=lambda: table.remove(target, added[0] + added[1]))

    def remove_handler(self, handler: AsyncHandler, subjects: Optional[Subjects] = None) -> bool:
        """Detach ``handler`` from these subjects and patterns, or from all (see
        :meth:`Subscriber.remove_handler`); the service is told in the background. A
        coroutine handler left with nothing is stopped (events waiting for it are dropped)."""
        names = None if subjects is None else check_subjects(subjects, "subject or pattern")
        self._check_open()
        removed = False
        if self._responders.remove(handler, names):
            removed = True
            self._changes.add(lambda core: core.release(holder_key(handler, True), names))
        target = self._runners.target(handler)
        if not self._table.holds(target):
            return removed
        removed = self._table.remove(target, names) or removed
        if not self._table.holds(target):
            stopping = self._runners.stop(handler)
            if stopping is not None:
                self._callbacks.tasks.add(stopping)
                stopping.add_done_callback(self._callbacks.tasks.discard)
        key = holder_key(target)
        self._changes.add(lambda core: core.release(key, names))
        return removed

    def handlers(self) -> List[AsyncHandler]:
        """The attached handlers (not subscriptions), in the order they were first attached."""
        return [target.handler if isinstance(target, HandlerRunner) else target
                for target in self._table.handlers() if not isinstance(target, Subscription)]

    def _target(self, handler: AsyncHandler, maxsize: Optional[int]) -> Any:
        if not is_coroutine_function(handler):
            return handler
        return self._runners.runner(handler, maxsize or self.maxsize)

    def subscription(self, subjects: Subjects, *, match: bool = False, glob: bool = False,
                     maxsize: Optional[int] = None, filter: Any = None, group: Optional[str] = None) -> _Opening:
        """A :class:`Subscription` to these exact subjects (or, with ``match=True``, regex
        patterns; with ``glob=True``, glob-style ones): ``await`` it (it is live when the
        await returns) or use it in ``async with``. ``filter`` and ``group`` as for
        :meth:`Subscriber.on`."""
        if glob:
            subjects, match = [glob_pattern(g) for g in check_subjects(subjects, "glob")], True
        names = check_subjects(subjects, "pattern" if match else "subject")
        compiled = [compile_pattern(p) for p in names] if match else []
        wanted = Wanted(PATTERN if match else SUBJECT, names, filter, group)
        size = maxsize or self.maxsize
        EventBuffer(size)
        if filter is not None:
            compile_filter(filter)  # a bad one is a ValueError at once

        async def open_() -> Subscription:
            await self.start()
            if self._closed:
                raise RuntimeError("subscriber is closed")
            subscription = Subscription(self, [] if match else names, names if match else [], size)
            self._subscriptions.add(subscription)
            if match:
                added = self._table.add(subscription, patterns=compiled, filter=filter)[1]
            else:
                added = self._table.add(subscription, subjects=names, filter=filter)[0]
            try:
                await self._worker.submit(self._running().subscribe, handler_key(subscription), wanted.kind, names,
                                          wanted.options)
            except BaseException:
                self._table.remove(subscription, added)
                self._subscriptions.discard(subscription)
                raise
            return subscription
        return _Opening(open_)

    async def _detach(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        self._dropped_by_closed += subscription.dropped
        if self._closed:
            return
        self._table.remove(subscription)
        if self._started:
            try:
                await self._worker.submit(self._running().release, handler_key(subscription))
            except RuntimeError:
                pass  # closed meanwhile: everything is unsubscribed anyway

    # -- service changes ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("subscriber is closed")

    def _running(self) -> SubscriberCore:
        assert self._core is not None, "the subscriber has not started"
        return self._core

    async def flush(self) -> None:
        """Wait until every subscription change made so far reached the service; raise the
        first error one met (that change was undone here)."""
        await self.start()
        await self._changes.flush()

    def _handler_failed(self, exc: BaseException, event: Event, handler: Any) -> None:
        try:
            result = self.on_error(exc, event, handler)
            if inspect.isawaitable(result):
                self._callbacks.run(lambda _: result, None)
        except Exception:
            log.exception("the error callback raised, for handler %r and %s", handler, event)
