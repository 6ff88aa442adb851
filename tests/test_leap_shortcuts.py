"""The two-line module in leap.common.events' shape, against a real ``es``: ``emit(subject,
*content)``, callbacks ``cb(subject, *content)``, ``register(..., uid=, replace=)``,
``unregister(subject)`` and ``unregister(subject, uid=)``; its current form still works."""

from __future__ import annotations

import threading
import uuid
from typing import Any, List

import pytest

import eventservice
from conftest import wait_for
from eventservice import shortcuts


@pytest.fixture
def shared(es):
    try:
        yield
    finally:
        shortcuts.shutdown()


class Seen:
    def __init__(self) -> None:
        self.calls: List[Any] = []
        self.lock = threading.Lock()

    def add(self, *call: Any) -> None:
        with self.lock:
            self.calls.append(call)

    def wait(self, n: int) -> List[Any]:
        wait_for(lambda: len(self.calls) >= n, 10, f"{n} calls (have {self.calls})")
        return list(self.calls)


def test_emit_content_and_callbacks_of_leaps_shape(shared):
    subject = f"CLIENT_UID.{uuid.uuid4().hex[:6]}"
    seen = Seen()

    def leap_callback(event, *content):  # leap's shape: the subject, then the content
        seen.add("leap", event, content)

    eventservice.register(subject, leap_callback)
    eventservice.register(subject, lambda event: seen.add("event", event.msg))  # the current form
    eventservice.emit(subject)
    eventservice.emit(subject, "one")
    eventservice.emit(subject, "a", 2, {"c": 3})
    calls = seen.wait(6)
    assert [c for c in calls if c[0] == "leap"] == [("leap", subject, ()), ("leap", subject, ("one",)),
                                                    ("leap", subject, ("a", 2, {"c": 3}))]
    assert [c[1] for c in calls if c[0] == "event"] == [None, "one", ("a", 2, {"c": 3})]


def test_uids_replace_and_unregister_by_subject(shared):
    subject = f"uid.{uuid.uuid4().hex[:6]}"
    seen = Seen()
    eventservice.register(subject, lambda s, *c: seen.add("first", *c), uid="printer")
    with pytest.raises(ValueError, match="replace=True"):
        eventservice.register(subject, lambda s, *c: seen.add("twice", *c), uid="printer")
    eventservice.register(subject, lambda s, *c: seen.add("second", *c), uid="printer", replace=True)
    eventservice.register(subject, lambda s, *c: seen.add("other", *c), uid="logger")
    eventservice.emit(subject, 1)
    assert sorted(seen.wait(2)) == [("other", 1), ("second", 1)]
    assert eventservice.unregister(subject, uid="printer") is True
    assert eventservice.unregister(subject, uid="printer") is False
    eventservice.emit(subject, 2)
    assert seen.wait(3)[-1] == ("other", 2)
    assert eventservice.unregister(subject) is True  # every callback of the subject
    assert eventservice.unregister(subject) is False
    eventservice.register(subject + ".fence", lambda event: seen.add("fence"))
    eventservice.emit(subject, 3)
    eventservice.emit(subject + ".fence")
    assert seen.wait(4)[-1] == ("fence",), "nothing called for the unregistered subject"
