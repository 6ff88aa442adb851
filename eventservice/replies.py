"""Request/reply: ask the responders among a request's subscribers, first answer wins.

A responder is a subscriber whose object exposes ``respond(event)``: it gets the request
as a dict with ``subject``, ``msg`` and ``time`` and returns the answer (``None`` means it
has none). The other subscribers the request reaches get it as an ordinary event.

Bounds: a responder is asked at most :data:`MAX_CALLS_PER_RESPONDER` requests at once; a
request finding all its responders that busy waits for one to be free, within its own
timeout. So responders that never answer hold a few threads each, never the ones requests
to other responders need. Calls go over connections kept per responder (at most
:data:`MAX_IDLE_PROXIES`), dropped when the subscriber goes or unsubscribes everything.
Requests travel in serpent, so a message arrives as the same Python value.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Tuple

from Pyro5 import errors
from Pyro5.client import Proxy

from . import auth
from .config import FALLBACK_SERIALIZER, Settings

log = logging.getLogger(__name__)

RESPOND_METHOD = "respond"
MAX_IDLE_PROXIES = 4  # connections kept per responder
MAX_CALLS_PER_RESPONDER = 4  # requests a responder is asked at once
MAX_REQUEST_THREADS = 256  # threads asking several responders at once, all requests together


class Responders:
    """Connections to subscribers for requests, and the threads that make the calls."""

    def __init__(self, settings: Settings,
                 locate: Callable[[Hashable], Optional[Tuple[Any, Optional[str], auth.Credentials]]]) -> None:
        self.settings = settings
        self.locate = locate  # key -> (uri, serializer, credentials) of a subscriber, or None
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
                known = proxy is not None and RESPOND_METHOD in proxy._pyroMethods
                if self.locate(key) is not None:
                    self._can_respond[key] = known
                if proxy is not None:
                    self._give_back(key, proxy)
            (responders if known else others).append(key)
        return responders, others

    def ask(self, keys: List[Hashable], request: Dict[str, Any], timeout: float) -> Any:
        """The first answer that is not None from the responders ``keys``; TimeoutError
        (naming the subject) when none answers within ``timeout`` seconds."""
        subject = request["subject"]
        if not keys:
            raise TimeoutError(f"no responder for subject {subject!r}")
        deadline = time.monotonic() + timeout
        keys = self._reserve(keys, deadline)
        if not keys:
            raise TimeoutError(f"no reply to a request on subject {subject!r} within {timeout:g}s: "
                               f"its responders were busy all that time")
        timeout = max(0.001, deadline - time.monotonic())
        if len(keys) == 1:  # the common case: asked in this thread, no hand-over
            answered, answer = self._call(keys[0], request, timeout)
            if answered:
                return answer
            raise TimeoutError(f"no reply to a request on subject {subject!r} within {timeout:g}s")
        pending = {self._pool.submit(self._call, key, request, timeout) for key in keys}
        while pending:
            done, pending = concurrent.futures.wait(pending, max(0.0, deadline - time.monotonic()),
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                answered, answer = future.result()
                if answered:
                    return answer
        raise TimeoutError(f"no reply to a request on subject {subject!r} within {timeout:g}s")

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

    def _call(self, key: Hashable, request: Dict[str, Any], timeout: float) -> Tuple[bool, Any]:
        """Ask one responder (reserved by the caller)."""
        try:
            proxy = self._take(key)
            if proxy is None:
                return False, None
            proxy._pyroTimeout = timeout
            try:
                answer = getattr(proxy, RESPOND_METHOD)(request)
            except (errors.CommunicationError, OSError) as exc:
                log.info("responder %s failed: %s", key, exc)
                proxy._pyroRelease()
                return False, None
            except Exception as exc:  # the responder's own error: no answer from it
                log.info("responder %s raised: %s", key, exc)
                answer = None
            self._give_back(key, proxy)
            return answer is not None, answer
        finally:
            self._unreserve(key)

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
