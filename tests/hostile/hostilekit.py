"""Tools of the attacker's tests (not a test module): the hostile inputs themselves (crash
bytes, bombs), raw Pyro5 wire messages, and what is measured of a real ``es`` process with
psutil and /proc (RSS, its peak, CPU time, threads, sockets), latency figures, and a few
small servers (an impostor) and helper processes.

Nothing here waits a fixed time: everything polls with a deadline (``wait_for``)."""

from __future__ import annotations

import functools
import marshal
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import psutil
import Pyro5.api
from Pyro5 import protocol
from Pyro5.serializers import serializers

from conftest import HOST, Cluster, Proc, wait_for

HERE = Path(__file__).resolve().parent
HANDSHAKE_TIMEOUT = 5.0  # es's DEFAULT_HANDSHAKE_TIMEOUT
PROMPT = 1.0  # seconds within which another client must be served
MB = 2 ** 20

SERPENT_ID = serializers["serpent"].serializer_id  # 1
MARSHAL_ID = serializers["marshal"].serializer_id  # 2
JSON_ID = serializers["json"].serializer_id  # 3

# -- finding 1: bytes that make marshal.loads segfault ----------------------------------------
#
# How they were found: marshal's FLAG_REF (0x80 on a type code) registers an object in the
# reference table *before* its items are read, and TYPE_REF ('r' + index) hands that object
# out again. A tuple is registered while its slots are still NULL; put a reference to it
# inside a set or frozenset among its own items, and building the set hashes the
# half-built tuple, which hashes its NULL slot: a NULL dereference in C. The candidates
# ``<container with FLAG_REF, 1 item> <set type, 1 item> <TYPE_REF 0>`` for each of the
# containers small tuple / tuple and set / frozenset were run through
# ``python -c "import marshal,sys; marshal.loads(sys.stdin.buffer.read())"`` in a
# subprocess (``find_marshal_crash`` below does it again); on CPython 3.11.7 all of them die
# by SIGSEGV. The shortest, 12 bytes:
#
#   a9          ')' | FLAG_REF: a small tuple, registered as reference 0
#   01          of 1 item
#   3e          '>' TYPE_FROZENSET
#   01000000    of 1 item
#   72          'r' TYPE_REF
#   00000000    reference 0: the tuple being built -> hash(NULL) -> SIGSEGV
MARSHAL_CRASH = bytes.fromhex("a9013e010000007200000000")


def marshal_crash_candidates() -> List[bytes]:
    """The inputs ``find_marshal_crash`` tries, shortest first."""
    found = []
    for container in (b"\xa9\x01", b"\xa8\x01\x00\x00\x00"):  # small tuple, tuple; FLAG_REF; 1 item
        for kind in (b">", b"<"):  # frozenset, set
            found.append(container + kind + struct.pack("<I", 1) + b"r" + struct.pack("<I", 0))
    return sorted(found, key=len)


def crashes_bare_interpreter(data: bytes, timeout: float = 20.0) -> Optional[int]:
    """The signal number that killed a bare ``python`` doing marshal.loads(data), or None
    if it survived (raised or returned)."""
    proc = subprocess.run([sys.executable, "-c", "import marshal,sys; marshal.loads(sys.stdin.buffer.read())"],
                          input=data, capture_output=True, timeout=timeout)
    return -proc.returncode if proc.returncode < 0 else None


def find_marshal_crash() -> Optional[bytes]:
    """The first candidate that kills a bare interpreter here, or None."""
    for candidate in marshal_crash_candidates():
        if crashes_bare_interpreter(candidate):
            return candidate
    return None


# -- finding 2: inputs that cost memory or CPU before authentication --------------------------

def marshal_huge_tuple(items: int = 2 ** 27) -> bytes:
    """5 bytes: TYPE_TUPLE announcing ``items`` slots (2**27 slots = 1 GiB of pointers),
    none of which follow: marshal allocates the tuple before it reads any item."""
    return b"(" + struct.pack("<i", items)


def marshal_self_referencing(depth: int = 22, ident: Any = None) -> bytes:
    """A CONNECT payload of about 200 bytes: a handshake whose value is a tuple of
    ``depth`` levels, each holding the level below twice by marshal reference. Decoding is
    linear, but Pyro5 then walks it as a tree (recreate_classes): 2**depth visits
    (depth 22: about 5 s of CPU on this machine)."""
    value: Any = ()
    for _ in range(depth):
        value = (value, value)
    return marshal.dumps({"handshake": value, "object": "Pyro.EventService"}, 4)


@functools.lru_cache(maxsize=None)
def zlib_bomb(size: int) -> bytes:
    """zlib data that inflates to ``size`` zero bytes (1 GiB -> about 1 MB)."""
    compressor = zlib.compressobj(6)
    chunk = bytes(4 * MB)
    parts = []
    left = size
    while left > 0:
        parts.append(compressor.compress(chunk[:min(len(chunk), left)]))
        left -= len(chunk)
    parts.append(compressor.flush())
    return b"".join(parts)


# -- raw Pyro5 wire messages ------------------------------------------------------------------

def pyro_message(msgtype: int, serializer_id: int, payload: bytes, flags: int = 0, seq: int = 0,
                 data_size: Optional[int] = None) -> bytes:
    """A Pyro5 wire message (header + payload) carrying ``payload`` as is; ``data_size``
    lets the header announce another size than the payload has."""
    size = len(payload) if data_size is None else data_size
    header = struct.pack(protocol._header_format, b"PYRO", protocol.PROTOCOL_VERSION, msgtype, serializer_id,
                         flags, seq, size, 0, b"\0" * 16, 0, protocol._magic_number)
    return header + payload


def connect_payload(serializer_id: int = SERPENT_ID, ident: Any = None, obj: str = "Pyro.EventService") -> bytes:
    """The data of a CONNECT as a Pyro5 proxy sends it."""
    return serializers_by_id(serializer_id).dumps({"handshake": ident, "object": obj})


def serializers_by_id(serializer_id: int) -> Any:
    from Pyro5.serializers import serializers_by_id as table
    return table[serializer_id]


def connect_message(serializer_id: int = SERPENT_ID, ident: Any = None, obj: str = "Pyro.EventService") -> bytes:
    return pyro_message(protocol.MSG_CONNECT, serializer_id, connect_payload(serializer_id, ident, obj))


def invoke_payload(obj: str, method: str, args: Sequence[Any], serializer_id: int = SERPENT_ID) -> bytes:
    return serializers_by_id(serializer_id).dumpsCall(obj, method, list(args), {})


def raw_connect(port: int, host: str = HOST, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def port_of(uri: str) -> int:
    return Pyro5.api.URI(uri).port


def recv_exact(sock: socket.socket, size: int, deadline: float) -> Optional[bytes]:
    """``size`` bytes, or None if the connection closed (or was reset) first.
    socket.timeout past the deadline."""
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(size - len(data))
        except (ConnectionResetError, BrokenPipeError):
            return None
        if not chunk:
            return None
        data.extend(chunk)
    return bytes(data)


def read_reply(sock: socket.socket, timeout: float) -> Tuple[str, Any, float]:
    """What the far side did within ``timeout`` s: ("closed", None, t), ("message",
    (msgtype, flags, serializer_id, data), t) or ("silent", None, t)."""
    begun = time.monotonic()
    deadline = begun + timeout
    try:
        header = recv_exact(sock, protocol._header_size, deadline)
        if header is None:
            return "closed", None, time.monotonic() - begun
        fields = struct.unpack(protocol._header_format, header)
        msgtype, serializer_id, flags, size, annotations = fields[2], fields[3], fields[4], fields[6], fields[7]
        body = recv_exact(sock, size + annotations, deadline) if size + annotations else b""
        if body is None:
            return "closed", None, time.monotonic() - begun
        data = body[annotations:]
        if flags & protocol.FLAGS_COMPRESSED:
            data = zlib.decompress(data)
        return "message", (msgtype, flags, serializer_id, data), time.monotonic() - begun
    except socket.timeout:
        return "silent", None, time.monotonic() - begun


def refused_or_closed(sock: socket.socket, timeout: float) -> Tuple[str, float]:
    """("connectfail" | "closed", seconds) when the far side refused a CONNECT or closed the
    connection within ``timeout``; AssertionError naming what it did otherwise."""
    kind, message, took = read_reply(sock, timeout)
    if kind == "closed":
        return "closed", took
    if kind == "message" and message[0] == protocol.MSG_CONNECTFAIL:
        return "connectfail", took
    if kind == "message":
        raise AssertionError(f"the CONNECT was accepted (message type {message[0]}) instead of refused")
    raise AssertionError(f"no answer and still open after {timeout}s")


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False if the connection was closed meanwhile (by the far side, or here)."""
    try:
        sock.sendall(data)
        return True
    except OSError:  # broken pipe, reset, or the socket closed under this thread (EBADF)
        return False


def handshake(sock: socket.socket, ident: Any = None, serializer_id: int = SERPENT_ID, timeout: float = 10.0) -> None:
    """A Pyro5 handshake on a raw socket (AssertionError if refused)."""
    sock.sendall(connect_message(serializer_id, ident))
    kind, message, _ = read_reply(sock, timeout)
    assert kind == "message" and message[0] == protocol.MSG_CONNECTOK, f"handshake failed: {kind} {message!r:.200}"


# -- measuring a process ----------------------------------------------------------------------

class Watch:
    """psutil and /proc figures of one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.process = psutil.Process(pid)

    def alive(self) -> bool:
        try:
            return self.process.is_running() and self.process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def rss(self) -> int:
        return self.process.memory_info().rss

    def peak_rss(self) -> int:
        """VmHWM: the highest RSS since the process started, or since ``reset_peak``."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return self.rss()

    def reset_peak(self) -> None:
        """Make VmHWM start again from the current RSS (Linux: clear_refs 5)."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as refs:
                refs.write("5")
        except OSError:
            pass

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def threads(self) -> int:
        return self.process.num_threads()

    def sockets(self) -> int:
        return len(self.process.net_connections(kind="tcp"))

    def listening_ports(self) -> List[int]:
        return [c.laddr.port for c in self.process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]


def listening_port(pid: int, exclude: Iterable[int] = ()) -> int:
    """The TCP port a process listens on (other than ``exclude``)."""
    excluded = set(exclude)

    def port() -> Optional[int]:
        for found in Watch(pid).listening_ports():
            if found not in excluded:
                return found
        return None
    return wait_for(port, 15, f"process {pid} to listen")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1) + 0.4999))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def mb(n: float) -> float:
    return round(n / MB, 1)


def proxy(uri: str, timeout: float = 10.0, ident: Any = None) -> Pyro5.api.Proxy:
    p = Pyro5.api.Proxy(uri)
    p._pyroTimeout = timeout
    p._pyroHandshake = ident
    return p


def served(uri: str, limit: float = PROMPT) -> float:
    """A fresh client binds, calls stats() and publish(); returns the seconds it took,
    AssertionError if more than ``limit``."""
    begun = time.monotonic()
    with proxy(uri, timeout=max(limit, 0.5) + 1) as p:
        p._pyroBind()
        p.stats()
        p.publish("hostile.probe", "x")
    took = time.monotonic() - begun
    assert took < limit, f"a fresh client took {took:.2f}s to be served (limit {limit}s)"
    return took


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft NOFILE limit toward ``wanted``; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def spawn_script(cluster: Cluster, script: str, *args: str, name: str = "",
                 env: Optional[Dict[str, str]] = None) -> Proc:
    """Run a helper script of tests/hostile in the test's cluster (killed at the end)."""
    return cluster.spawn([sys.executable, str(HERE / script), *args], name or script, env)


# -- servers in this process ------------------------------------------------------------------

class RawRecorder:
    """A TCP server that records every byte it is sent, each connection for up to
    ``hold`` seconds, answers nothing and then closes it: an impostor that listens."""

    def __init__(self, hold: float = 1.0) -> None:
        self.hold = hold
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="raw-recorder").start()

    @property
    def uri(self) -> str:
        return f"PYRO:Pyro.EventService@{HOST}:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.hold
        with conn:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                conn.settimeout(remaining)
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    self.received.extend(data)

    def data(self) -> bytes:
        with self.lock:
            return bytes(self.received)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def secret_forms(secret: str) -> List[bytes]:
    """The byte forms a passphrase could travel in: as is, UTF-16, base64 (serpent's
    form of bytes), hex, and as serpent, json and marshal encode the str."""
    import base64
    raw = secret.encode()
    forms = {raw, secret.encode("utf-16-le"), base64.b64encode(raw), base64.b64encode(raw).rstrip(b"="),
             raw.hex().encode(), serializers["serpent"].dumps(secret), serializers["json"].dumps(secret),
             marshal.dumps(secret)}
    # a base64 of the secret inside other bytes starts at one of three alignments
    for pad in (b"x", b"xy"):
        encoded = base64.b64encode(pad + raw)
        forms.add(encoded[4:-4])
    return sorted(forms, key=len, reverse=True)


def leaked_forms(data: bytes, secret: str) -> List[bytes]:
    return [form for form in secret_forms(secret) if form and form in data]


def assert_alive(proc: Proc, what: str = "es") -> None:
    """AssertionError naming how ``proc`` ended (its signal) if it is no longer running."""
    code = proc.proc.poll()
    if code is None and Watch(proc.pid).alive():
        return
    try:
        code = proc.proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    how = f"killed by signal {-code}" if isinstance(code, int) and code < 0 else f"exit status {code}"
    raise AssertionError(f"{what} died ({how}):\n{proc.output()[-3000:]}")


def quiesce(threads: Iterable[threading.Thread], timeout: float = 15.0) -> None:
    """Join this process's background client threads (``timeout`` s in all) before a test
    may fail. CPython 3.11's ast.parse is not safe against another thread running ast at
    the same time ("SystemError: AST constructor recursion depth mismatch"): pytest parses
    source with it to report a failure while serpent (Pyro5) decodes replies with
    ast.literal_eval in the threads still running."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        if thread.ident is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
