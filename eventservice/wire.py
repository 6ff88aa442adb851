"""The packed form of event batches between eventservice's own parts.

A batch travels as one ``bytes`` value holding ``marshal`` data: decoding it is one C call,
where Pyro5 would otherwise walk every decoded value in Python to look for classes to
recreate (the largest cost per event). Values marshal cannot carry make ``pack`` return
None; the caller then sends the batch the ordinary way (as Pyro5 arguments, in serpent).
"""

from __future__ import annotations

import marshal

import serpent
from typing import Any, List, Optional

MARSHAL_VERSION = 4  # stable since Python 3.4


def pack(items: List[Any]) -> Optional[bytes]:
    """``items`` as marshal bytes, or None if a value cannot be marshalled."""
    try:
        return marshal.dumps(items, MARSHAL_VERSION)
    except (ValueError, TypeError):
        return None


def unpack(data: Any) -> List[Any]:
    """The list packed in ``data``; ValueError for anything else. Bytes that crossed
    the wire in serpent arrive as serpent's dict form and are accepted too."""
    if isinstance(data, dict):
        try:
            data = serpent.tobytes(data)
        except (TypeError, ValueError, KeyError):
            raise TypeError("packed events must be bytes") from None
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"packed events must be bytes, not {type(data).__name__}")
    try:
        items = marshal.loads(data)
    except (ValueError, EOFError, TypeError) as exc:
        raise ValueError(f"packed events are not valid: {exc}") from None
    if not isinstance(items, list):
        raise ValueError("packed events must hold a list")
    return items
