"""The scenarios of ``es bench``, as data: one registry (:data:`SCENARIOS`) giving each its
description, the mix of processes it starts, the command-line options that change it, and
the reference scenario its ratio is taken against.

The registry's order is the order scenarios run and are reported in: a reference comes
before the scenarios compared with it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

DEFAULT_EVENTS = 100_000  # events per publisher in the throughput scenarios
DEFAULT_PLAIN_SUB_EVENTS = 20_000  # events of plain-sub (one event() call each on the subscriber)
DEFAULT_FROZEN_EVENTS = 40_000  # events of frozen and of its reference s2-ref
DEFAULT_FROZEN_RATE = 10_000.0  # events/s of frozen and s2-ref: below what 10 subscribers can take
DEFAULT_LATENCY_EVENTS = 3_000  # events of s3 (3 s at the default rate)
DEFAULT_RATE = 1_000.0  # events/s of s3
DEFAULT_CALLS = 10_000  # calls of raw, plain-publish and request
DEFAULT_FANOUT_EVENTS = 1000  # events of fanout: x 1,000 subscribers
DEFAULT_PATTERNS = 1_000  # non-matching pattern subscriptions of s4
FANOUT_PROCESSES = 4  # subscriber processes of fanout
FANOUT_OBJECTS = 250  # subscribers per fanout process
FANOUT_SUBJECTS = 100  # subjects each fanout subscriber subscribes to
WORKQUEUE_MEMBERS = 4  # processes in the work-queue group
FROZEN_ES_OPTIONS = ("--overflow", "drop")

# the options of the custom mix; any of them given (and no --scenario) means: run custom
MIX_OPTIONS = ("publishers", "subscribers", "batch", "patterns", "frozen", "plain")


@dataclass(frozen=True)
class Mix:
    """What one run starts and sends: the parameters a run reads (and the JSON's "spec").

    ``kind`` says how it is measured: pubsub, fanout, raw, plain-publish, request, workqueue
    or looplag (see :data:`eventservice.bench.measures.MEASURES`)."""

    kind: str = "pubsub"
    publishers: int = 1
    subscribers: int = 1  # subscriber processes (fanout: of FANOUT_OBJECTS each; workqueue: members)
    batch: bool = True  # Publisher(batch=True), or one call per event
    events: int = DEFAULT_EVENTS  # per publisher (raw, plain-publish, request: calls)
    patterns: int = 0  # non-matching pattern subscriptions of the first subscriber
    frozen: int = 0  # subscribers SIGSTOPped during the run
    plain: bool = False  # plain Pyro5 subscribers (exposing only event())
    rate: Optional[float] = None  # events/s of each publisher; None: as fast as it goes
    payload_size: int = 0  # bytes of an extra string field in each message
    es_options: Tuple[str, ...] = ()  # options of the es started for it
    callback_serializer: Optional[str] = None  # the plain subscribers' callback serializer
    cross: bool = False  # publishers and subscribers on two es joined by a backbone
    users: bool = False  # es --users: the clients log in as a user of a users file

    def as_dict(self) -> Dict[str, Any]:
        """Every parameter by name, as plain JSON values."""
        return {**dataclasses.asdict(self), "es_options": list(self.es_options)}


@dataclass(frozen=True)
class Scenario:
    """One scenario: its name and description, its mix before the command line, which
    option sizes it (``events``, ``calls`` or ``fanout_events``), which of
    :data:`MIX_OPTIONS` change it, the scenario its ratio is taken against and the name of
    that ratio, and a fixed note for the table."""

    name: str
    description: str
    mix: Mix = Mix()
    sized_by: str = "events"
    takes: Tuple[str, ...] = ()
    reference: Optional[str] = None
    ratio_field: Optional[str] = None
    note: str = ""
    in_all: bool = True  # run by --scenario all

    def resolve(self, args: argparse.Namespace) -> Mix:
        """The mix of one run: this scenario's, with what the command line gives for it
        (``--events 0`` and ``--publishers 0`` mean the default)."""
        mix = self.mix
        events = (args.events or mix.events) if self.sized_by == "events" else getattr(args, self.sized_by)
        changes: Dict[str, Any] = {"events": events, "rate": args.rate or mix.rate,
                                   "payload_size": args.payload_size}
        for option in self.takes:
            value = getattr(args, option)
            if value is not None:
                changes[option] = value
        if "publishers" in changes:
            changes["publishers"] = changes["publishers"] or mix.publishers
        return dataclasses.replace(mix, **changes)


def _cross(base: Scenario, description: str) -> Scenario:
    """``base`` across two es joined by a backbone, compared with ``base`` itself."""
    return dataclasses.replace(base, name=f"{base.name}-cross", description=description,
                               mix=dataclasses.replace(base.mix, cross=True), reference=base.name,
                               ratio_field="ratio_to_single", in_all=False)


def _with_users(base: Scenario) -> Scenario:
    """``base`` on an es with a users file (es bench --users), compared with ``base`` itself."""
    return dataclasses.replace(base, name=f"{base.name}-users", description=f"{base.name} with es --users: the "
                               "clients log in as a user whose rules allow what they do",
                               mix=dataclasses.replace(base.mix, users=True), reference=base.name,
                               ratio_field="ratio_to_no_users", in_all=False)


USERS_DEFAULT = ("s1", "s2")  # what es bench --users runs when no --scenario is given

_S1 = Scenario("s1", "1 batched Publisher -> 1 Subscriber")
_S2 = Scenario("s2", "1 batched Publisher -> 10 Subscribers", Mix(subscribers=10))
_S3 = Scenario("s3", "latency: plain Publisher paced at --rate -> 1 Subscriber",
               Mix(batch=False, rate=DEFAULT_RATE, events=DEFAULT_LATENCY_EVENTS))
# s2-ref and frozen are paced: with --overflow drop, a publisher faster than delivery makes
# every subscriber drop; paced below that, only the frozen one's loss is left to see
_FROZEN_MIX = Mix(subscribers=10, es_options=FROZEN_ES_OPTIONS, events=DEFAULT_FROZEN_EVENTS,
                  rate=DEFAULT_FROZEN_RATE)

_S4 = Scenario("s4", "s1 with 1,000 non-matching pattern subscriptions present", Mix(patterns=DEFAULT_PATTERNS),
               takes=("patterns",), reference="s1", ratio_field="ratio_to_s1")

SCENARIOS: Dict[str, Scenario] = {s.name: s for s in (
    _S1,
    _with_users(_S1),  # each run right after its reference's, so the machine's noise hits both alike
    _S2,
    _with_users(_S2),
    _S3,
    _with_users(_S3),
    _S4,
    _with_users(_S4),
    Scenario("raw", "baseline: plain Pyro5 client -> plain Pyro5 daemon, no-op method, two-way, serpent",
             Mix(kind="raw"), sized_by="calls", note="calls/s; es CPU = the raw server's"),
    Scenario("plain-publish", "plain Pyro5 client calling publish(), one event per call, no subscriber",
             Mix(kind="plain-publish"), sized_by="calls", reference="raw", ratio_field="ratio_to_raw",
             note="calls/s"),
    Scenario("plain-sub", "1 batched Publisher -> 1 plain Pyro5 subscriber exposing only event(), which chose "
                          "no serializer (called back in serpent, Pyro5's default)",
             Mix(plain=True, events=DEFAULT_PLAIN_SUB_EVENTS)),
    Scenario("plain-sub-msgpack", "plain-sub, the subscriber's callback proxy naming msgpack",
             Mix(plain=True, events=DEFAULT_PLAIN_SUB_EVENTS, callback_serializer="msgpack")),
    Scenario("fanout", "1 batched Publisher -> 1,000 subscribers in 4 processes, 100 subjects each",
             Mix(kind="fanout", subscribers=FANOUT_PROCESSES), sized_by="fanout_events"),
    Scenario("s2-ref", "s2 paced (10,000/s) on an es with the options of frozen (--overflow drop), nobody "
                       "frozen: the reference of frozen", _FROZEN_MIX),
    Scenario("frozen", "s2 paced (10,000/s), one of the 10 subscribers SIGSTOPped, es --overflow drop",
             dataclasses.replace(_FROZEN_MIX, frozen=1), reference="s2-ref", ratio_field="healthy_ratio_to_ref"),
    Scenario("request", "request/reply: 1 Publisher.request at a time -> 1 responding Subscriber",
             Mix(kind="request"), sized_by="calls", note="round trips/s; latency of a whole request"),
    Scenario("workqueue", "1 batched Publisher -> a group of 4 Subscribers sharing the events",
             Mix(kind="workqueue", subscribers=WORKQUEUE_MEMBERS)),
    Scenario("looplag", "asyncio loop lag while 10,000 events/s arrive at an AsyncSubscriber", Mix(kind="looplag"),
             note="latency columns: how late a 1 ms tick of the loop woke"),
    _cross(_S1, "s1 across two es joined by a NATS backbone: publisher on one, subscriber on the other; "
                "a third es on the backbone has no subscriber"),
    _cross(_S2, "s2 across two es joined by a NATS backbone (as s1-cross)"),
    _cross(_S3, "s3 across two es joined by a NATS backbone (as s1-cross)"),
    Scenario("custom", "the mix given by --publishers/--subscribers/...", takes=MIX_OPTIONS, in_all=False),
)}


def select(args: argparse.Namespace) -> Tuple[List[str], List[str]]:
    """(the scenarios to run, in running order; the references added for their ratios), from
    --scenario (names, ``all``, ``cross``) or, when it is absent, ``custom`` if any mix option
    is given, s1 and s2 with --users, and ``all`` otherwise. With --users each scenario runs
    beside its variant with a users file. ValueError names an unknown scenario, or one
    without a variant with users."""
    mix_given = any(getattr(args, option) is not None for option in MIX_OPTIONS)
    default = ["custom"] if mix_given else list(USERS_DEFAULT) if args.users else ["all"]
    wanted: Set[str] = set()
    for name in args.scenario or default:
        if name == "all":
            wanted.update(n for n, s in SCENARIOS.items() if s.in_all)
        elif name == "cross":
            wanted.update(n for n, s in SCENARIOS.items() if s.mix.cross)
        elif name in SCENARIOS:
            wanted.add(name)
        else:
            raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)}, all, cross)")
    if args.users:
        missing = [n for n in wanted if not SCENARIOS[n].mix.users and f"{n}-users" not in SCENARIOS]
        if missing:
            raise ValueError(f"no variant with users of {', '.join(sorted(missing))} (there are: "
                             f"{', '.join(n for n, s in SCENARIOS.items() if s.mix.users)})")
        wanted.update(f"{n}-users" for n in list(wanted) if not SCENARIOS[n].mix.users)
    added = []
    for name in list(wanted):
        ref = SCENARIOS[name].reference
        if ref and ref not in wanted:
            wanted.add(ref)
            added.append(ref)
    return [n for n in SCENARIOS if n in wanted], added
