"""The Event type, and its registration with Pyro5's serializers.

Importing this module (``import eventservice`` does) registers :class:`Event`, so an
event arrives as an ``Event``. A client that never imported ``eventservice`` cannot
decode the tagged form; the service sends it a plain dict with the keys ``subject``,
``msg`` and ``time`` instead.
"""

from __future__ import annotations

import time as _time
from typing import Any, Dict, Optional

from Pyro5.api import register_class_to_dict, register_dict_to_class

from . import typed
from .wire import EVENT_CLASS_TAG, event_dict, event_fields, tagged_event_dict


class Event:
    """One published event: ``subject`` as the publisher spelled it, ``msg`` the message,
    ``time`` the ``time.time()`` of the Event Service when it accepted the event."""

    __slots__ = ("subject", "msg", "time")

    def __init__(self, subject: str, msg: Any, time: float) -> None:
        self.subject = subject
        self.msg = msg
        self.time = time

    def __str__(self) -> str:
        return f"<Event {self.subject} at {_time.ctime(self.time)}: {self.msg}>"

    def __repr__(self) -> str:
        return f"Event(subject={self.subject!r}, msg={self.msg!r}, time={self.time!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.subject, self.msg, self.time) == (other.subject, other.msg, other.time)

    def __hash__(self) -> int:
        return hash((self.subject, self.time))

    @property
    def type_name(self) -> Optional[str]:
        """The registered type name of the message (see :func:`eventservice.register_type`):
        also when this process did not register it and the message arrived as a dict with
        the key ``"__es_type__"``; None for plain data."""
        return typed.type_name(self.msg)

    def as_dict(self) -> Dict[str, Any]:
        """The plain form, as a client without ``eventservice`` receives it."""
        return event_dict(self.subject, self.msg, self.time)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Event":
        """The Event of a plain or tagged event dict; ValueError for a dict that is not one."""
        return cls(*event_fields(data))


def _event_to_dict(event: Event) -> Dict[str, Any]:
    return tagged_event_dict(event.subject, event.msg, event.time)


def _dict_to_event(classname: str, data: Dict[str, Any]) -> Event:
    return Event.from_dict(data)


register_class_to_dict(Event, _event_to_dict)
register_dict_to_class(EVENT_CLASS_TAG, _dict_to_event)
