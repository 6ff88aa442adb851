"""Pyro5 daemons that treat every byte from the network as hostile.

The Event Service, each ``Subscriber`` and the name server ``es`` starts inside itself serve
through :class:`GuardMixin`:

- **Before authentication** a connection costs a small fixed amount: its handshake may be
  at most :data:`PRE_AUTH_LIMIT` bytes, must not be compressed, and is decoded only with a
  safe serializer (serpent, json or msgpack: never marshal). The whole exchange, including
  the proof of a challenged connection (see :mod:`eventservice.auth`), must finish within
  ``handshake_timeout`` seconds however slowly its bytes drip.
- **Requests**: marshal is refused with a clear error; a request larger than
  ``max_message_size`` bytes is answered with ``ValueError`` in the caller without being
  read into memory; a compressed one is inflated at most to that size (beyond, the same
  error); a request, once begun, must arrive within the handshake timeout plus its size at
  :data:`MIN_RECEIVE_RATE`; the bytes of large requests in transit at once are bounded.
- **Connections** are counted. When they near ``max_connections``, the ones that stayed
  idle longest are closed to make room (clients reconnect on their next call), so held-open
  idle connections cannot lock new clients out.

What a client's handshake says about it (:func:`eventservice.auth.hello_of`: its name...)
is kept as the connection's ``es_hello``, where the objects it calls find it through Pyro5's
``current_context.client``. ``on_hello("joined" | "left", conn)`` is told when a connection
whose handshake asked to be announced is authenticated, and when it closes.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import socket
import ssl
import struct
import threading
import time
import uuid
import zlib
from typing import Any, Callable, Dict, List, Optional

from Pyro5 import config, errors, protocol, serializers
from Pyro5.callcontext import current_context
from Pyro5.server import Daemon

from ._compat.pyro5 import HEADER_FORMAT, HEADER_SIZE, ConnectionHook, metadata, send_exception
from .auth import PROOF_METHOD, Authority, hello_of
from .config import DEFAULT_HANDSHAKE_TIMEOUT

log = logging.getLogger(__name__)

PRE_AUTH_LIMIT = 64 * 1024  # bytes a connection may send before it is authenticated
SAFE_SERIALIZERS = frozenset((1, 3, 4))  # Pyro5's serpent, json, msgpack (2 is marshal)
REPLY_SERIALIZER = 1  # serpent: what every Pyro5 client decodes, for refusals
DRAIN_FACTOR = 64  # a message up to this many times the limit is read and discarded, to answer it cleanly
DRAIN_CHUNK = 1 << 20  # bytes read at a time while discarding
MIN_RECEIVE_RATE = 1 << 20  # bytes/s: a request must arrive at least this fast (beyond the handshake timeout)
LARGE_MESSAGE = 1 << 16  # bytes: requests this large count against the budget of bytes in transit
REAPER_TICK = 0.25  # seconds between looks for connections past their deadline
IN_TRANSIT_FACTOR = 16  # budget of bytes in transit = this many times the largest message
ROOM = 16  # connections kept free for newcomers: idle ones are closed to keep this many


class Reaper:
    """One thread that shuts down connections whose deadline passed: a deadline covers a
    whole exchange (a handshake, a request), however slowly its bytes drip in. It looks
    every REAPER_TICK seconds while any deadline is watched, and ends when none is."""

    def __init__(self) -> None:
        self._heap: List[List[Any]] = []  # [deadline, seq, sock, active]
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def watch(self, sock: socket.socket, seconds: float) -> List[Any]:
        """Shut ``sock`` down after ``seconds`` unless :meth:`cancel` is called first."""
        entry = [time.monotonic() + seconds, next(self._seq), sock, True]
        with self._lock:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="es-reaper", daemon=True)
                self._thread.start()
        return entry

    @staticmethod
    def cancel(entry: Optional[List[Any]]) -> None:
        if entry is not None:
            entry[3] = False
            entry[2] = None

    def _run(self) -> None:
        while True:
            time.sleep(REAPER_TICK)
            now = time.monotonic()
            expired = []
            with self._lock:
                while self._heap and (not self._heap[0][3] or self._heap[0][0] <= now):
                    entry = heapq.heappop(self._heap)
                    if entry[3]:
                        expired.append(entry[2])
                if not self._heap:
                    self._thread = None
                    done = True
                else:
                    done = False
            for sock in expired:
                log.debug("closing a connection that missed its deadline")
                _shut(sock)
            if done:
                return


REAPER = Reaper()


def user_of(conn: Any) -> Optional[str]:
    """The user a connection served by a guarded daemon logged in as (None: no user)."""
    return getattr(conn, "es_user", None)


def _common_name(conn: Any) -> Optional[str]:
    """The common name of a connection's verified TLS client certificate, if any."""
    getpeercert = getattr(conn.sock, "getpeercert", None)
    cert = getpeercert() if getpeercert is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def _shut(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


class GuardMixin(ConnectionHook):
    """The guards above, for a class deriving from :class:`Pyro5.server.Daemon` (see the
    module). Keyword arguments: ``authority`` (who may connect), ``handshake_timeout``,
    ``max_message_size``, ``max_connections``."""

    def _guard_init(self, authority: Optional[Authority], handshake_timeout: float,
                    max_message_size: Optional[int], max_connections: Optional[int]) -> None:
        self.authority = authority or Authority(None)
        self._handshake_timeout = handshake_timeout or DEFAULT_HANDSHAKE_TIMEOUT
        self._max_message_size = max_message_size
        self._max_connections = max_connections or config.THREADPOOL_SIZE
        self._conns: Dict[Any, float] = {}  # every connection being served -> when it started
        self._idle: "collections.OrderedDict[Any, float]" = collections.OrderedDict()  # waiting for a request
        self._conns_lock = threading.Lock()
        self.evicted = 0  # idle connections closed to make room
        self.on_hello: Optional[Callable[[str, Any], None]] = None  # see the module

    def _guard_listener(self, client_certs: bool = False) -> None:
        """TLS: handshakes in the connections' workers; with ``client_certs``, a client's
        certificate is asked for (and checked when given) even where it is not required."""
        listener = getattr(self.transportServer, "sock", None)  # type: ignore[attr-defined]
        if listener is not None and hasattr(listener, "do_handshake_on_connect"):
            # TLS: do the TLS handshake in the connection's worker, under the handshake
            # timeout, not in the accept loop where one silent client would stall it
            listener.do_handshake_on_connect = False
            if client_certs and listener.context.verify_mode == ssl.CERT_NONE:
                listener.context.verify_mode = ssl.CERT_OPTIONAL

    # -- connections -----------------------------------------------------------------------
    def connections(self) -> List[Any]:
        """The connections being served now."""
        with self._conns_lock:
            return list(self._conns)

    def _admit(self, conn: Any) -> None:
        """Count a new connection; close the longest idle ones if room runs short."""
        victims = []
        with self._conns_lock:
            self._conns[conn] = time.monotonic()
            while self._idle and len(self._conns) > self._max_connections - ROOM:
                victim, _ = self._idle.popitem(last=False)
                victims.append(victim)
            self.evicted += len(victims)
        if victims:
            log.info("closing %d idle connection(s) to make room (limit %d)", len(victims), self._max_connections)
        for victim in victims:
            _shut(victim.sock)

    def _forget(self, conn: Any) -> None:
        with self._conns_lock:
            self._conns.pop(conn, None)
            self._idle.pop(conn, None)

    def clientDisconnect(self, conn: Any) -> None:
        self._forget(conn)
        if getattr(conn, "es_joined", False):
            self._tell_hello("left", conn)

    def _tell_hello(self, kind: str, conn: Any) -> None:
        """Tell ``on_hello`` that ``conn`` "joined" (is authenticated; only when its handshake
        asked to be announced) or "left"."""
        if self.on_hello is None or not conn.es_hello.get("announce"):
            return
        conn.es_joined = True
        try:
            self.on_hello(kind, conn)
        except Exception:
            log.exception("telling that a client %s failed", kind)

    def hang_up(self) -> None:
        """Shut every connection down (closing the daemon then waits for no client)."""
        for conn in self.connections():
            _shut(conn.sock)

    # -- handshake -------------------------------------------------------------------------
    def validateHandshake(self, conn: Any, data: Any) -> Any:
        """Greet a new connection (see :class:`~eventservice.auth.Authority`); the user it
        logs in as is ``conn.es_user`` (once its proof, if one must follow, arrived), what it
        says of itself ``conn.es_hello``."""
        greeting = self.authority.greet(data, _common_name(conn))
        conn.es_pending = greeting.pending
        conn.es_user = greeting.user
        conn.es_hello = hello_of(data)
        return greeting.answer

    def on_connect(self, conn: Any, denied_reason: Optional[str] = None) -> bool:
        """The handshake of a new connection, under the guards; False: it is closed."""
        if denied_reason:  # in the accept loop: answer without reading anything
            self._send_reply(conn, protocol.MSG_CONNECTFAIL, 0, REPLY_SERIALIZER, denied_reason)
            return False
        self._admit(conn)
        deadline = REAPER.watch(conn.sock, self._handshake_timeout)
        ok = False
        try:
            if hasattr(conn.sock, "do_handshake"):
                conn.sock.do_handshake()
            ok = self._greet(conn)
            return ok
        except (OSError, errors.CommunicationError) as exc:  # ssl.SSLError is an OSError
            log.debug("connection closed during handshake: %s", exc)
            return False
        finally:
            if ok and getattr(conn, "es_pending", None) is not None:
                conn.es_deadline = deadline  # the proof must come within the same time
            else:
                REAPER.cancel(deadline)
            if not ok:
                self._forget(conn)
            elif conn.es_pending is None:
                self._tell_hello("joined", conn)

    def _greet(self, conn: Any) -> bool:
        header = conn.recv(HEADER_SIZE)
        tag, version, msgtype, serializer_id, flags, seq, data_size, annotations_size, corr_id, _, magic = \
            struct.unpack(HEADER_FORMAT, header)
        reply_with = serializer_id if serializer_id in SAFE_SERIALIZERS else REPLY_SERIALIZER
        size = data_size + annotations_size
        refusal = None
        if tag != b"PYRO" or version != protocol.PROTOCOL_VERSION or magic != 0x4DC5 or msgtype != protocol.MSG_CONNECT:
            refusal = "not a Pyro5 connect message"
        elif serializer_id not in SAFE_SERIALIZERS or serializer_id not in serializers.serializers_by_id:
            refusal = "serializer refused: use serpent, json or msgpack (marshal is never accepted)"
        elif flags & protocol.FLAGS_COMPRESSED:
            refusal = "a compressed handshake is refused"
        elif size > PRE_AUTH_LIMIT:
            refusal = f"handshake of {size} bytes refused (at most {PRE_AUTH_LIMIT} before authentication)"
        if refusal is not None:
            log.info("refused a connection: %s", refusal)
            self._send_reply(conn, protocol.MSG_CONNECTFAIL, seq, reply_with, refusal)
            return False
        current_context.correlation_id = uuid.UUID(bytes=corr_id) if flags & protocol.FLAGS_CORR_ID \
            else uuid.uuid4()
        msg = protocol.ReceivingMessage(header)
        msg.add_payload(conn.recv(size) if size else b"")
        serializer = serializers.serializers_by_id[serializer_id]
        try:
            data = serializer.loads(msg.data)
            if type(data) is not dict or not isinstance(data.get("object"), str):
                raise errors.ProtocolError("invalid handshake")
            answer = self.validateHandshake(conn, data.get("handshake"))
            reply = {"handshake": answer, "meta": metadata(self, data["object"])}
        except Exception as exc:
            log.debug("handshake refused: %s", exc)
            self._send_reply(conn, protocol.MSG_CONNECTFAIL, seq, serializer_id, str(exc))
            return False
        self._send_reply(conn, protocol.MSG_CONNECTOK, seq, serializer_id, reply)
        return True

    def _send_reply(self, conn: Any, msgtype: int, seq: int, serializer_id: int, data: Any) -> None:
        try:
            payload = serializers.serializers_by_id[serializer_id].dumps(data)
            message = protocol.SendingMessage(msgtype, 0, seq, serializer_id, payload,
                                              annotations=self.annotations())  # type: ignore[attr-defined]
            conn.send(message.data)
        except Exception as exc:
            log.debug("could not answer a connection: %s", exc)

    # -- requests --------------------------------------------------------------------------
    def handleRequest(self, conn: Any) -> None:
        """Read one request under the guards (see the module), then let Pyro5 handle it."""
        pending = getattr(conn, "es_pending", None)
        if pending is None:
            with self._conns_lock:
                if conn in self._conns:
                    self._idle[conn] = time.monotonic()
            try:
                first = conn.recv(1)  # waits as long as the connection stays idle
            finally:
                with self._conns_lock:
                    self._idle.pop(conn, None)
            deadline = REAPER.watch(conn.sock, self._handshake_timeout)
        else:
            first = conn.recv(1)
            deadline = conn.es_deadline
        try:
            header = first + conn.recv(HEADER_SIZE - 1)
            fields = struct.unpack(HEADER_FORMAT, header)
            tag, serializer_id, flags, seq = fields[0], fields[3], fields[4], fields[5]
            size = fields[6] + fields[7]
            if tag != b"PYRO":
                raise errors.ProtocolError("invalid message")
            if serializer_id not in SAFE_SERIALIZERS or serializer_id not in serializers.serializers_by_id:
                self._refuse(conn, seq, ValueError("serializer refused: use serpent, json or msgpack "
                                                   "(marshal is never accepted)"))
            if pending is not None:
                self._prove(conn, pending, header, fields)
                return None
            limit = self._max_message_size
            if limit is not None and size > limit:
                REAPER.cancel(deadline)
                deadline = REAPER.watch(conn.sock, self._receive_time(size))
                self._refuse_large(conn, serializer_id, seq, size, limit)
                return None
            if size >= LARGE_MESSAGE:
                REAPER.cancel(deadline)
                deadline = REAPER.watch(conn.sock, self._receive_time(size))
            with self._in_transit(size, conn, serializer_id, seq):
                body = conn.recv(size) if size else b""
                REAPER.cancel(deadline)
                if flags & protocol.FLAGS_COMPRESSED:
                    header, body = self._inflate(conn, fields, body)
                super().handleRequest(_Replay(conn, header + body))  # type: ignore[misc]
                return None
        finally:
            REAPER.cancel(deadline)

    def _prove(self, conn: Any, pending: Any, header: bytes, fields: Any) -> None:
        """The first request of a challenged connection: its proof, and nothing else."""
        msgtype, serializer_id, flags, seq, size = fields[2], fields[3], fields[4], fields[5], fields[6] + fields[7]
        if msgtype != protocol.MSG_INVOKE or flags & protocol.FLAGS_COMPRESSED or size > PRE_AUTH_LIMIT:
            self._refuse(conn, seq, errors.SecurityError("prove the passphrase first"), serializer_id)
        msg = protocol.ReceivingMessage(header)
        msg.add_payload(conn.recv(size) if size else b"")
        try:
            _obj, method, vargs, _kwargs = serializers.serializers_by_id[serializer_id].loadsCall(msg.data)
        except Exception:
            method, vargs = None, ()
        if method != PROOF_METHOD or len(vargs) != 1 or not pending.check(vargs[0]):
            log.info("refused a connection: wrong proof of the passphrase")
            self._refuse(conn, seq, errors.SecurityError("passphrase refused"), serializer_id)
        conn.es_pending = None
        conn.es_user = pending.user
        REAPER.cancel(conn.es_deadline)
        self._send_reply(conn, protocol.MSG_RESULT, seq, serializer_id, True)
        self._tell_hello("joined", conn)

    def _refuse(self, conn: Any, seq: int, error: Exception, serializer_id: int = REPLY_SERIALIZER) -> None:
        """Answer ``error`` and close the connection (raises ConnectionClosedError)."""
        if serializer_id not in SAFE_SERIALIZERS:
            serializer_id = REPLY_SERIALIZER
        send_exception(self, conn, seq, serializer_id, error)
        raise errors.ConnectionClosedError(f"request refused: {error}")

    def _inflate(self, conn: Any, fields: Any, body: bytes) -> "tuple[bytes, bytes]":
        """A compressed request as an uncompressed one (header, body), inflated at most to the
        message size limit; beyond, the caller gets ValueError."""
        limit = self._max_message_size or config.MAX_MESSAGE_SIZE
        annotations_size = fields[7]
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(body[annotations_size:], limit + 1)
            complete = inflater.eof and len(data) <= limit
        except zlib.error:
            data, complete = b"", False
        if not complete:
            self._refuse(conn, fields[5], ValueError(
                f"compressed message refused: it inflates beyond {limit} bytes, or is not valid "
                f"(this Event Service accepts at most {limit} bytes: es --max-message-size)"), fields[3])
        header = struct.pack(HEADER_FORMAT, fields[0], fields[1], fields[2], fields[3],
                             fields[4] & ~protocol.FLAGS_COMPRESSED, fields[5], len(data), annotations_size,
                             fields[8], fields[9], fields[10])
        return header, body[:annotations_size] + data

    def _receive_time(self, size: int) -> float:
        return self._handshake_timeout + size / MIN_RECEIVE_RATE

    def _in_transit(self, size: int, conn: Any, serializer_id: int, seq: int) -> "_Budget":
        return _Budget(self, size if size >= LARGE_MESSAGE else 0, conn, serializer_id, seq)

    def _refuse_large(self, conn: Any, serializer_id: int, seq: int, size: int, limit: int) -> None:
        """Answer an oversized request with an error; read and drop its body when that is
        affordable, else close the connection after answering."""
        error = ValueError(f"message of {size} bytes refused: this Event Service accepts at most "
                           f"{limit} bytes (es --max-message-size)")
        log.warning("refused a message of %d bytes (limit %d)", size, limit)
        if size > DRAIN_FACTOR * limit:
            self._refuse(conn, seq, error, serializer_id)
        remaining = size
        while remaining:
            remaining -= len(conn.recv(min(DRAIN_CHUNK, remaining)))
        send_exception(self, conn, seq, serializer_id, error)


class GuardedDaemon(GuardMixin, Daemon):  # type: ignore[misc]
    """A :class:`Pyro5.server.Daemon` with the guards of this module."""

    def __init__(self, host: Optional[str] = None, port: int = 0, *, authority: Optional[Authority] = None,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, max_message_size: Optional[int] = None,
                 max_connections: Optional[int] = None, client_certs: bool = False, **kwargs: Any) -> None:
        self._guard_init(authority, handshake_timeout, max_message_size, max_connections)
        super().__init__(host=host, port=port, **kwargs)
        self._guard_listener(client_certs)


class _Budget:
    """Counts the bytes of large requests being received at once; past the daemon's budget
    (IN_TRANSIT_FACTOR x the largest message) a request is refused, so that clients that
    announce large messages and send them slowly cannot make memory grow without bound."""

    lock = threading.Lock()
    in_transit = 0

    def __init__(self, daemon: GuardMixin, size: int, conn: Any, serializer_id: int, seq: int) -> None:
        self.daemon, self.size, self.conn, self.serializer_id, self.seq = daemon, size, conn, serializer_id, seq

    def __enter__(self) -> None:
        if not self.size:
            return
        budget = IN_TRANSIT_FACTOR * (self.daemon._max_message_size or config.MAX_MESSAGE_SIZE)
        with _Budget.lock:
            fits = _Budget.in_transit + self.size <= budget
            if fits:
                _Budget.in_transit += self.size
        if not fits:
            self.size = 0
            self.daemon._refuse(self.conn, self.seq, ValueError(
                "the Event Service is receiving too many large messages at once: try again"), self.serializer_id)

    def __exit__(self, *exc_info: Any) -> None:
        if self.size:
            with _Budget.lock:
                _Budget.in_transit -= self.size


class _Replay:
    """A connection whose first ``recv`` calls return bytes already read."""

    def __init__(self, conn: Any, data: bytes) -> None:
        self._conn = conn
        self._data = data

    def recv(self, size: int) -> bytes:
        if self._data:
            head, self._data = self._data[:size], self._data[size:]
            if len(head) < size:
                head += self._conn.recv(size - len(head))
            return head
        data: bytes = self._conn.recv(size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

