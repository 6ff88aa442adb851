"""How ``es`` shows messages and events: one line each, as text or as JSON.

JSON is always valid JSON: what JSON has no form for is encoded explicitly, as an object
with one key: ``{"$float": "nan" | "inf" | "-inf"}``, ``{"$bytes": BASE64}``, and
``{"$repr": TEXT}`` for any other value; tuples and sets become lists, and dict keys that
are not str become their JSON (or repr) text.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, Dict, Optional

from ..event import Event
from .output import BOLD, CYAN, DIM, clock, iso_time, paint, printable

FLOAT_NAMES = {math.inf: "inf", -math.inf: "-inf"}


def json_value(value: Any) -> Any:
    """``value`` as plain JSON data (see the module)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": "nan" if math.isnan(value) else FLOAT_NAMES[value]}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {_key(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_value(item) for item in value]
    return {"$repr": repr(value)}


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    plain = json_value(key)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


def to_json(value: Any) -> str:
    """``value`` as one line of valid JSON (see the module)."""
    return json.dumps(json_value(value), ensure_ascii=False, allow_nan=False)


def message_text(message: Any) -> str:
    """A message as text: a str as it is, anything else as JSON."""
    return message if isinstance(message, str) else to_json(message)


def event_json(event: Event, seq: Optional[int] = None) -> str:
    """An event as one JSON Lines record: ``seq`` (when given), ``time`` (ISO 8601, UTC),
    ``subject`` and ``msg``."""
    record: Dict[str, Any] = {} if seq is None else {"seq": seq}
    record.update(time=iso_time(event.time), subject=event.subject, msg=json_value(event.msg))
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def event_line(event: Event, seq: Optional[int] = None, stamped: bool = False) -> str:
    """An event as one line of text: ``SUBJECT MESSAGE``; ``stamped``: the time of day and
    ``[#SEQ]`` first. Newlines and control characters are escaped."""
    text = f"{paint(printable(event.subject), BOLD + ';' + CYAN)} {printable(message_text(event.msg))}"
    if not stamped:
        return text
    return f"{paint(clock(event.time), DIM)} {paint(f'[#{seq}]', DIM)} {text}"


class EventFormat:
    """One of the line formats of ``es listen``, ``es tap`` and ``es reply``: text (with time
    and running number when ``stamped``), ``raw`` (the message only) or ``json``."""

    def __init__(self, kind: str = "text", stamped: bool = False) -> None:
        self.kind = kind
        self.stamped = stamped

    def __call__(self, event: Event, seq: int) -> str:
        if self.kind == "json":
            return event_json(event, seq)
        if self.kind == "raw":
            return printable(message_text(event.msg))
        return event_line(event, seq, self.stamped)
