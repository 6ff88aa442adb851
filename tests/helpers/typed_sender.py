"""Publishes on SUBJECT, from a process of its own, a dataclass and a namedtuple that only
this process registered under the names "Reading" and "Point", then exits."""

import sys
from collections import namedtuple
from dataclasses import dataclass

import eventservice


@eventservice.register_type
@dataclass
class Reading:
    sensor: str
    value: float


Point = eventservice.register_type(namedtuple("Point", "x y"))

with eventservice.Publisher() as publisher:
    publisher.publish(sys.argv[1], Reading("temp", 21.5))
    publisher.publish(sys.argv[1], Point(1, 2))
print("published")
