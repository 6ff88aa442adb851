"""The forms events take between eventservice's own parts, and the checks on them.

Every byte string here may come from anyone who can reach a socket or an engine, so
decoding is done by a well-kept library (msgpack) with its limits on: no length may claim
more than the buffer holds, nesting is bounded, and nothing can run code. Python's
``marshal`` is never used: it is not safe on untrusted input.

The forms:

- **delivery batch** (service -> the project's Subscriber, backbone -> service): events
  ``(subject, msg, time)``; :func:`pack` / :func:`unpack`.
- **publish batch** (the project's Publisher -> service): ``(subjects, msg)`` pairs;
  :func:`pack_publish` / :func:`unpack_publish`.
- **envelope** (one engine message of the backbone): origin, sequence number, a small dict
  of metadata and a delivery batch, optionally signed with HMAC-SHA256;
  :func:`pack_envelope` / :func:`unpack_envelope`.
- **request** (the project's Publisher -> service -> the project's Subscriber): subject,
  message and a number (the timeout, then the time); **reply** (back): an answer, an error
  (its type name and text) or a pass (no responder for it); :func:`pack_request` /
  :func:`unpack_request`, :func:`pack_reply` / :func:`unpack_reply`.
- **Event dicts**: ``{"subject", "msg", "time"}``, what a client that never imported
  eventservice receives (:func:`event_dict`), and the same with the class tag Pyro5's
  serializers use for an ``Event`` (:func:`tagged_event_dict`); :func:`event_fields` checks
  either on the way in.

msgpack carries None, bool, int, float, str, bytes, list and dict; extension types carry
tuples, sets, frozensets and integers beyond 64 bits, so a message arrives as the same
Python value it was published as. A message holding anything else (an ``Event``, a
``datetime``, a class registered with Pyro5) makes the packing functions return None; the
caller then sends it the slower way, through Pyro5's serpent serializer.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from itertools import chain
from typing import Any, Dict, List, Optional, Sequence, Tuple

import msgpack

Item = Tuple[str, Any, float]  # one event inside the service: (subject, msg, time)

MAX_EXT_DEPTH = 32  # tuples/sets nested in tuples/sets, at most
MAC_SIZE = 32  # bytes of an HMAC-SHA256
_EXT_TUPLE, _EXT_SET, _EXT_FROZENSET, _EXT_BIGINT = 1, 2, 3, 4
_ENVELOPE = b"E3"  # format tag of an envelope
_NO_MAC, _MAC = b"\x00", b"\x01"
_BODY_MSGPACK, _BODY_SERPENT = b"m", b"s"
_depth = threading.local()


class WireError(ValueError):
    """Bytes that are not a valid form of this module (malformed, forged, too deep)."""


# -- the codec ----------------------------------------------------------------------------------
def _default(obj: Any) -> Any:
    t = type(obj)
    if t is tuple:
        return msgpack.ExtType(_EXT_TUPLE, _dumps(list(obj)))
    if t is set:
        return msgpack.ExtType(_EXT_SET, _dumps(list(obj)))
    if t is frozenset:
        return msgpack.ExtType(_EXT_FROZENSET, _dumps(list(obj)))
    if t is int:  # beyond 64 bits
        return msgpack.ExtType(_EXT_BIGINT, str(obj).encode("ascii"))
    raise TypeError(f"not carried by the fast codec: {t.__name__}")


def _dumps(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True, strict_types=True, default=_default)
    return packed


def _ext_hook(code: int, data: bytes) -> Any:
    depth = getattr(_depth, "n", 0)
    if depth >= MAX_EXT_DEPTH:
        raise WireError(f"values nested deeper than {MAX_EXT_DEPTH} tuples or sets")
    _depth.n = depth + 1
    try:
        if code == _EXT_BIGINT:
            return int(data.decode("ascii"))  # Python bounds the digits (int_max_str_digits)
        items = _loads(data)
        if not isinstance(items, list):
            raise WireError("a tuple or set must hold a list")
        if code == _EXT_TUPLE:
            return tuple(items)
        if code == _EXT_SET:
            return set(items)
        if code == _EXT_FROZENSET:
            return frozenset(items)
    finally:
        _depth.n = depth
    raise WireError(f"unknown extension type {code}")


def _loads(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True)


def dumps(value: Any) -> Optional[bytes]:
    """``value`` in the fast codec, or None when it holds something the codec cannot carry."""
    try:
        return _dumps(value)
    except (TypeError, ValueError, OverflowError):
        return None


def loads(data: Any) -> Any:
    """The value in ``data`` (bytes); :class:`WireError` for anything that does not decode."""
    if isinstance(data, memoryview):
        data = bytes(data)
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"packed data must be bytes, not {type(data).__name__}")
    try:
        return _loads(bytes(data))
    except WireError:
        raise
    except Exception as exc:  # msgpack's errors, unhashable keys, bad digits, recursion
        raise WireError(f"packed data is not valid: {type(exc).__name__}: {exc}"[:300]) from None


def pack_value(value: Any) -> bytes:
    """``value`` as bytes: msgpack when it can carry it, else Pyro5's serpent form (an
    ``Event``, a ``datetime``...). TypeError when neither can."""
    packed = dumps(value)
    if packed is not None:
        return _BODY_MSGPACK + packed
    try:
        serpent: bytes = _serpent().dumps(value)
    except Exception as exc:
        raise TypeError(f"cannot be sent: {type(exc).__name__}: {exc}"[:300]) from None
    return _BODY_SERPENT + serpent


def unpack_value(data: Any) -> Any:
    """The value in bytes made by :func:`pack_value`; :class:`WireError` for anything else."""
    data = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if not isinstance(data, bytes):
        raise TypeError(f"packed data must be bytes, not {type(data).__name__}")
    kind, body = data[:1], data[1:]
    if kind == _BODY_MSGPACK:
        return loads(body)
    if kind == _BODY_SERPENT:
        try:
            return _serpent().loads(body)
        except Exception as exc:
            raise WireError(f"packed data is not valid: {type(exc).__name__}") from None
    raise WireError("packed data is not valid: unknown form")


# -- delivery batches ---------------------------------------------------------------------------
def pack(items: Sequence[Item]) -> Optional[bytes]:
    """Events ``(subject, msg, time)`` as bytes, or None if a message cannot be packed."""
    return dumps(list(chain.from_iterable(items)))


def unpack(data: Any) -> List[Item]:
    """The events packed in ``data``, checked: each a (str subject, msg, number time).
    :class:`WireError` (a ValueError) or TypeError for anything else."""
    flat = loads(data)
    if type(flat) is not list or len(flat) % 3:
        raise WireError("packed events must be a flat list of (subject, msg, time)")
    it = iter(flat)
    items = list(zip(it, it, it))
    for subject, _msg, when in items:
        if type(subject) is not str or type(when) not in (float, int):
            raise WireError("each packed event must be (subject: str, msg, time: number)")
    return items


def pack_event(subject: str, msg: Any, time: float) -> Optional[bytes]:
    """One event packed on its own, for :func:`pack_parts` (None if the message cannot be):
    an event going to several subscribers is packed once, not once per subscriber."""
    packed = dumps([subject, msg, time])
    return None if packed is None else packed[1:]  # without its array header (fixarray of 3)


def pack_parts(parts: Sequence[bytes]) -> bytes:
    """The delivery batch of events packed by :func:`pack_event` (what :func:`pack` gives
    for the same events): an array header, then the parts as they are."""
    n = 3 * len(parts)
    if n <= 15:
        header = bytes((0x90 | n,))
    elif n <= 0xFFFF:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    return header + b"".join(parts)


# -- publish batches ----------------------------------------------------------------------------
def pack_publish(pairs: Sequence[Tuple[Any, Any]]) -> Optional[bytes]:
    """``(subjects, msg)`` pairs as bytes (subjects a str or a list of str), or None."""
    return dumps(list(chain.from_iterable(pairs)))


def unpack_publish(data: Any) -> List[Tuple[Any, Any]]:
    """The ``(subjects, msg)`` pairs packed in ``data``; the subjects are left to the caller
    to check. :class:`WireError` or TypeError for anything that is not such a list."""
    flat = loads(data)
    if type(flat) is not list or len(flat) % 2:
        raise WireError("packed events must be a flat list of (subjects, message)")
    it = iter(flat)
    return list(zip(it, it))


# -- requests and replies -----------------------------------------------------------------------
ANSWERED, FAILED, PASSED = 0, 1, 2  # the kinds of reply: an answer, the responder's error, no responder
Reply = Tuple[int, Any]  # (ANSWERED, answer) | (FAILED, (type name, text)) | (PASSED, None)


def pack_request(subject: str, msg: Any, number: float) -> bytes:
    """A request: its subject, message and a number (the requester's timeout, or the time
    the service stamped). TypeError when the message cannot be sent."""
    return pack_value([subject, msg, number])


def unpack_request(data: Any) -> Tuple[str, Any, float]:
    """(subject, msg, number) of a request; :class:`WireError` or TypeError for anything else."""
    request = unpack_value(data)
    if type(request) is not list or len(request) != 3 or type(request[0]) is not str \
            or type(request[2]) not in (int, float):
        raise WireError("a packed request is (subject: str, msg, number)")
    return request[0], request[1], request[2]


def pack_reply(kind: int, value: Any = None) -> bytes:
    """A reply: ``(ANSWERED, answer)``, ``(FAILED, (type name, text))`` or ``(PASSED, None)``.
    An answer that cannot be sent becomes a FAILED TypeError."""
    try:
        return pack_value([kind, value])
    except TypeError as exc:
        return pack_value([FAILED, ["TypeError", f"the answer {exc}"]])


def unpack_reply(data: Any) -> Reply:
    """(kind, value) of a reply, checked; :class:`WireError` or TypeError for anything else."""
    reply = unpack_value(data)
    if type(reply) is not list or len(reply) != 2 or reply[0] not in (ANSWERED, FAILED, PASSED):
        raise WireError("a packed reply is (kind, value)")
    kind, value = reply
    if kind == FAILED:
        if type(value) not in (list, tuple) or len(value) != 2 or not all(type(v) is str for v in value):
            raise WireError("a packed error is (type name, text)")
        value = (value[0][:200], value[1][:2000])
    return kind, value


# -- backbone envelopes -------------------------------------------------------------------------
def envelope_key(secret: "str | bytes | None") -> Optional[bytes]:
    """The HMAC key for a backbone secret (``es --backbone-key``): a str is stretched to
    32 bytes, bytes are used as they are, None or empty means unsigned."""
    if not secret:
        return None
    if isinstance(secret, str):
        return hashlib.sha256(b"eventservice/backbone/1:" + secret.encode("utf-8")).digest()
    return bytes(secret)


def pack_envelope(origin: str, seq: int, items: Sequence[Item], key: "str | bytes | None" = None,
                  meta: Optional[Dict[str, Any]] = None) -> Optional[bytes]:
    """One engine message: ``origin`` (the sending es), its ``seq``, ``meta`` (small plain
    data) and the events; signed with HMAC-SHA256 when ``key`` is given (see
    :func:`envelope_key`). The body is msgpack,
    or Pyro5's serpent form when a message needs it (an ``Event``, a ``datetime``...); None
    when neither can carry it."""
    try:
        body = pack_value([origin, seq, meta or {}, list(chain.from_iterable(items))])
    except TypeError:
        return None
    key = envelope_key(key)
    if key is None:
        return _ENVELOPE + _NO_MAC + body
    return _ENVELOPE + _MAC + hmac.new(key, body, hashlib.sha256).digest() + body


class ForgedError(WireError):
    """An envelope without the right signature."""


def unpack_envelope(data: Any, key: "str | bytes | None" = None) -> Tuple[str, int, Dict[str, Any], List[Item]]:
    """(origin, seq, meta, events) of an envelope. With ``key``, an envelope whose signature
    is missing or wrong raises :class:`ForgedError` before anything is decoded; without a key,
    signed envelopes are refused too (the sender has a key this receiver lacks). Anything
    malformed raises :class:`WireError`."""
    key = envelope_key(key)
    data = bytes(data)
    if data[:2] != _ENVELOPE:
        raise WireError("not an envelope")
    flag = data[2:3]
    if flag == _MAC:
        if key is None:
            raise ForgedError("a signed envelope, and this es has no --backbone-key")
        mac, body = data[3:3 + MAC_SIZE], data[3 + MAC_SIZE:]
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
            raise ForgedError("the envelope's signature is wrong")
    elif flag == _NO_MAC:
        if key is not None:
            raise ForgedError("an unsigned envelope, and this es requires --backbone-key")
        body = data[3:]
    else:
        raise WireError("not an envelope")
    envelope = unpack_value(body)
    if type(envelope) not in (list, tuple) or len(envelope) != 4:
        raise WireError("not an envelope")
    origin, seq, meta, flat = envelope
    if type(origin) is not str or type(seq) is not int or type(meta) is not dict \
            or type(flat) not in (list, tuple) or len(flat) % 3:
        raise WireError("not an envelope")
    it = iter(flat)
    return origin, seq, meta, list(zip(it, it, it))


def _serpent() -> Any:
    """Pyro5's serpent serializer (it recreates registered classes such as ``Event``)."""
    from Pyro5.serializers import serializers
    from . import event  # noqa: F401  registers Event with the serializers
    return serializers["serpent"]


# -- the Event dict forms -------------------------------------------------------------------------
EVENT_CLASS_TAG = "eventservice.Event"  # the "__class__" value of an Event in Pyro5's serializers


def event_dict(subject: str, msg: Any, time: float) -> Dict[str, Any]:
    """The plain form of an event, for clients that cannot decode an ``Event``."""
    return {"subject": subject, "msg": msg, "time": time}


def tagged_event_dict(subject: str, msg: Any, time: float) -> Dict[str, Any]:
    """The form Pyro5's serializers give an ``Event``: the plain form and its class tag."""
    return {"__class__": EVENT_CLASS_TAG, "subject": subject, "msg": msg, "time": time}


def event_fields(data: Any) -> Tuple[str, Any, float]:
    """(subject, msg, time) of an event dict (plain or tagged); ValueError for a dict that
    is not one."""
    if not isinstance(data, dict):
        raise ValueError(f"an event must be a dict, not {type(data).__name__}")
    subject, msg, when = data.get("subject"), data.get("msg"), data.get("time")
    if not isinstance(subject, str) or type(when) not in (float, int) or "msg" not in data:
        raise ValueError("an event dict holds subject (str), msg and time (a number)")
    return subject, msg, float(when)  # type: ignore[arg-type]
