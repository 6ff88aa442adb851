"""Request/reply: ask the responders among a request's subscribers, first answer wins.

A responder is a subscriber whose object exposes ``respond(event)`` (a plain Pyro5
subscriber: it gets the request as a dict with ``subject``, ``msg`` and ``time`` and returns
the answer, None included; what it raises is its error) or ``respondPacked(bytes)`` (the
project's subscribers: the request and the reply packed by :mod:`eventservice.wire`, so an
error travels as data, and a subscriber that does not answer this request says so and is
sent it as an ordinary event). The other subscribers the request reaches get it as an
ordinary event.

A reply is ``(kind, value)`` (:data:`~eventservice.wire.ANSWERED`, ``FAILED`` or ``PASSED``).
The first answer wins; an error is the reply only when no responder answered.

Bounds: a responder is asked at most :data:`MAX_CALLS_PER_RESPONDER` requests at once; a
request finding all its responders that busy waits for one to be free, within its own
timeout. So responders that never answer hold a few threads each, never the ones requests
to other responders need. Calls go over connections kept per responder (at most
:data:`MAX_IDLE_PROXIES`), dropped when the subscriber goes or unsubscribes everything.
Plain responders are asked in serpent, so a message arrives as the same Python value.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Tuple

from Pyro5 import errors
from Pyro5.client import Proxy

from . import auth, wire
from .config import FALLBACK_SERIALIZER, FAST_SERIALIZER, Settings
from .errors import type_name

log = logging.getLogger(__name__)

RESPOND_METHOD = "respond"
PACKED_RESPOND_METHOD = "respondPacked"
MAX_IDLE_PROXIES = 4  # connections kept per responder
MAX_CALLS_PER_RESPONDER = 4  # requests a responder is asked at once
MAX_REQUEST_THREADS = 256  # threads asking several responders at once, all requests together
NO_RESPONDER = "no responder for subject"  # how the TimeoutError begins when nobody was there to answer

Request = Tuple[str, Any, float]  # subject, message, time
Post = Callable[[Hashable, List[Any]], None]  # queues events for one subscriber (Dispatcher.post)


class Responders:
    """Connections to subscribers for requests, and the threads that make the calls."""

    def __init__(self, settings: Settings,
                 locate: Callable[[Hashable], Optional[Tuple[Any, Optional[str], auth.Credentials]]],
                 post: Post) -> None:
        self.settings = settings
        self.locate = locate  # key -> (uri, serializer, credentials) of a subscriber, or None
        self.post = post  # a request a subscriber passed on goes to it as an ordinary event
        self._idle: Dict[Hashable, List[Proxy]] = {}
        self._can_respond: Dict[Hashable, bool] = {}
        self._busy: Dict[Hashable, int] = {}  # calls under way per responder
        self._lock = threading.Lock()
        self._freed = threading.Condition(threading.Lock())  # guards _busy; told when a call ends
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_REQUEST_THREADS,
                                                           thread_name_prefix="es-request")

    def split(self, keys: Iterable[Hashable]) -> Tuple[List[Hashable], List[Hashable]]:
        """(responders, others) among ``keys``; finding out costs one connection each,
        the first time."""
        responders: List[Hashable] = []
        others: List[Hashable] = []
        for key in keys:
            known = self._can_respond.get(key)
            if known is None:
                proxy = self._take(key)
                known = proxy is not None and bool({RESPOND_METHOD, PACKED_RESPOND_METHOD} & proxy._pyroMethods)
                if self.locate(key) is not None:
                    self._can_respond[key] = known
                if proxy is not None:
                    self._give_back(key, proxy)
            (responders if known else others).append(key)
        return responders, others

    def ask(self, keys: List[Hashable], request: Request, timeout: float) -> wire.Reply:
        """The reply of the responders ``keys``: the first answer, else the first error;
        TimeoutError (naming the subject) when none answers or fails within ``timeout``
        seconds, or (beginning with :data:`NO_RESPONDER`) when there was none to ask."""
        subject = request[0]
        if not keys:
            raise TimeoutError(f"{NO_RESPONDER} {subject!r}")
        deadline = time.monotonic() + timeout
        keys = self._reserve(keys, deadline)
        if not keys:
            raise TimeoutError(f"no reply to a request on subject {subject!r} within {timeout:g}s: "
                               f"its responders were busy all that time")
        timeout = max(0.001, deadline - time.monotonic())
        if len(keys) == 1:  # the common case: asked in this thread, no hand-over
            replies = [self._call(keys[0], request, timeout)]
        else:
            replies = []
            pending = {self._pool.submit(self._call, key, request, timeout) for key in keys}
            while pending:
                done, pending = concurrent.futures.wait(pending, max(0.0, deadline - time.monotonic()),
                                                        return_when=concurrent.futures.FIRST_COMPLETED)
                if not done:
                    break
                replies += [future.result() for future in done]
                if any(reply is not None and reply[0] == wire.ANSWERED for reply in replies):
                    break
        return _first(replies, len(keys), subject, timeout)

    def _reserve(self, keys: List[Hashable], deadline: float) -> List[Hashable]:
        """The responders among ``keys`` that may be asked now (each reserved for one call);
        while all are busy, waits for one to be free until ``deadline``."""
        with self._freed:
            while True:
                free = [key for key in keys if self._busy.get(key, 0) < MAX_CALLS_PER_RESPONDER]
                if free:
                    for key in free:
                        self._busy[key] = self._busy.get(key, 0) + 1
                    return free
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._freed.wait(remaining)

    def _unreserve(self, key: Hashable) -> None:
        with self._freed:
            busy = self._busy.get(key, 1) - 1
            if busy > 0:
                self._busy[key] = busy
            else:
                self._busy.pop(key, None)
            self._freed.notify_all()

    def _call(self, key: Hashable, request: Request, timeout: float) -> Optional[wire.Reply]:
        """Ask one responder (reserved by the caller); None when it could not be asked or
        did not reply in time."""
        try:
            proxy = self._take(key)
            if proxy is None:
                return None
            proxy._pyroTimeout = timeout
            try:
                reply = self._ask_one(proxy, request)
            except (errors.CommunicationError, OSError, wire.WireError) as exc:
                log.info("responder %s failed: %s", key, exc)
                proxy._pyroRelease()
                return None
            self._give_back(key, proxy)
            if reply[0] == wire.PASSED:
                self.post(key, [(*request, None, None)])
            return reply
        finally:
            self._unreserve(key)

    @staticmethod
    def _ask_one(proxy: Proxy, request: Request) -> wire.Reply:
        if PACKED_RESPOND_METHOD in proxy._pyroMethods:
            proxy._pyroSerializer = FAST_SERIALIZER
            return wire.unpack_reply(getattr(proxy, PACKED_RESPOND_METHOD)(wire.pack_request(*request)))
        subject, msg, when = request
        try:
            return wire.ANSWERED, getattr(proxy, RESPOND_METHOD)({"subject": subject, "msg": msg, "time": when})
        except errors.SerializeError as exc:  # it raised a class of its own, which cannot be decoded here
            return wire.FAILED, ("SerializeError", str(exc))
        except Exception as exc:
            if not hasattr(exc, "_pyroTraceback") or isinstance(exc, errors.CommunicationError):
                raise
            return wire.FAILED, (type_name(exc), str(exc))

    def _take(self, key: Hashable) -> Optional[Proxy]:
        with self._lock:
            idle = self._idle.get(key)
            proxy = idle.pop() if idle else None
        if proxy is not None:
            proxy._pyroClaimOwnership()
            return proxy
        where = self.locate(key)
        if where is None:
            return None
        secret, user = where[2]
        proxy = auth.proxy(where[0], secret, serializer=FALLBACK_SERIALIZER,
                           timeout=self.settings.delivery_timeout or None, require=False, user=user)
        try:
            proxy._pyroBind()
        except (errors.PyroError, OSError) as exc:
            log.info("responder %s unreachable: %s", key, exc)
            return None
        return proxy

    def _give_back(self, key: Hashable, proxy: Proxy) -> None:
        with self._lock:
            if self.locate(key) is not None:
                idle = self._idle.setdefault(key, [])
                if len(idle) < MAX_IDLE_PROXIES:
                    idle.append(proxy)
                    return
        proxy._pyroRelease()

    def forget(self, key: Hashable) -> None:
        """``key`` is gone, or holds no subscription any more: drop its connections."""
        with self._lock:
            idle = self._idle.pop(key, [])
            self._can_respond.pop(key, None)
        for proxy in idle:
            try:
                proxy._pyroClaimOwnership()
                proxy._pyroRelease()
            except Exception:
                pass

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for key in list(self._idle):
            self.forget(key)


def _first(replies: List[Optional[wire.Reply]], asked: int, subject: str, timeout: float) -> wire.Reply:
    """The reply to a request from the ``replies`` of the ``asked`` responders (None: no
    reply from one; missing: still under way at the deadline)."""
    failures = [reply for reply in replies if reply is not None and reply[0] == wire.FAILED]
    for reply in replies:
        if reply is not None and reply[0] == wire.ANSWERED:
            return reply
    if failures:
        return failures[0]
    if len(replies) == asked and all(reply is not None for reply in replies):  # everybody passed
        raise TimeoutError(f"{NO_RESPONDER} {subject!r}")
    raise TimeoutError(f"no reply to a request on subject {subject!r} within {timeout:g}s")
