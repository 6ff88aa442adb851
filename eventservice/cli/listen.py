"""``es listen`` and ``es tap``: print events as they arrive, one line each.

They unsubscribe when they stop: after ``--count`` events, on SIGINT or SIGTERM, and when
stdout's reader has gone (``es listen x | head -3`` ends after the fourth event)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from typing import List, Optional

from Pyro5.client import Proxy

from .. import config
from ..clients import Subscriber
from ..event import Event
from . import connect
from .formats import EventFormat
from .output import OutputClosed, is_terminal, line, note

PRESENCE_PATTERN = re.escape(config.PRESENCE_PREFIX) + ".*"
NATS_WILDCARDS = re.compile(r"(^|\.)(\*|>)(\.|$)")
REGEX_SIGNS = re.compile(r"[\\^$*+?()\[\]{}|]")


class ShellSubscriber(Subscriber):
    """A Subscriber of a command: numbers what it gets, writes a line for each in the chosen
    format, and stops after ``args.count`` (or when stdout's reader has gone)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(ident=args.ident, esURI=args.esuri, user=args.user, password=args.password)
        self.setThreading(False)
        stamped = args.timestamps if args.timestamps is not None else is_terminal(sys.stdout)
        self.format = EventFormat(args.show, stamped)
        self.limit: Optional[int] = args.count
        self.quiet = getattr(args, "quiet", False)  # count, but write nothing
        self.seq = 0
        self.done = threading.Event()  # set when the command should end
        self.output_closed = False

    def show(self, event: Event) -> bool:
        """Number ``event`` and write its line; False when the command is done already."""
        if self.done.is_set():
            return False
        self.seq += 1
        try:
            if not self.quiet:
                line(self.format(event, self.seq))
        except OutputClosed:
            self.output_closed = True
            self.stop()
            return False
        if self.limit is not None and self.seq >= self.limit:
            self.stop()
        return True

    def stop(self) -> None:
        """End the command (the main thread unsubscribes and closes)."""
        self.done.set()
        self.abort()

    def run(self, banner: str) -> int:
        """Say ``banner`` on stderr, serve until done or interrupted, then unsubscribe."""
        try:
            print(f"{banner} (Ctrl-C stops)", file=sys.stderr, flush=True)
            listener = self.start()
            while listener.is_alive() and not self.done.is_set():
                listener.join(0.2)
        finally:
            self.close()
        if self.output_closed:
            raise OutputClosed()
        return 0


class Printer(ShellSubscriber):
    """Writes a line for each event, but the presence events about itself when ``me`` (its URI)
    is set."""

    me: Optional[str] = None

    def event(self, event: Event) -> None:
        if self.me is not None and isinstance(event.msg, dict) and event.msg.get("subscriber") == self.me:
            return
        self.show(event)


def cmd_listen(args: argparse.Namespace) -> int:
    """Subscribe to the SUBJECTs (or patterns, or presence) and print what arrives."""
    if not args.subjects and not args.presence:
        args.usage_error("give at least one SUBJECT (or --presence)")
    if not args.match:
        _warn_of_patterns(args.subjects)
    filter_spec = _filter(args)
    connect.locate(args)
    printer = Printer(args)
    try:
        if args.subjects:
            subscribe = printer.subscribeMatch if args.match else printer.subscribe
            subscribe(args.subjects, group=args.group, filter=filter_spec)
        if args.presence:
            printer.subscribeMatch(PRESENCE_PATTERN)
    except BaseException:
        printer.close()
        raise
    return printer.run(f"listening on {', '.join(args.subjects + (['presence'] if args.presence else []))}")


def cmd_tap(args: argparse.Namespace) -> int:
    """Print every event whose subject matches PATTERN, presence events included."""
    connect.locate(args)
    printer = Printer(args)
    try:
        printer.me = subscriber_uri(printer)
        printer.subscribeMatch(args.pattern)  # held by the client: made again if the service restarts
        callback = Proxy(printer.me)
        callback._pyroHandshake = None  # the service is given no secret
        service = connect.link(args)
        try:
            service.call("tap", callback, args.pattern)  # presence events too
        finally:
            service.reset()
    except BaseException:
        printer.close()
        raise
    return printer.run(f"listening on everything matching {args.pattern}, presence included")


def subscriber_uri(subscriber: Subscriber) -> str:
    """The URI the service calls ``subscriber`` back at."""
    return subscriber.uri


def _filter(args: argparse.Namespace) -> object:
    if args.filter is None:
        return None
    try:
        return json.loads(args.filter)
    except ValueError as exc:
        return args.usage_error(f"--filter is not valid JSON ({exc}); e.g. --filter '[\"==\", \"symbol\", \"SUN\"]'")


def _warn_of_patterns(subjects: List[str]) -> None:
    """Subjects are exact: say so for those that look like patterns (NATS wildcards, regex)."""
    for subject in subjects:
        if NATS_WILDCARDS.search(subject):
            note(f"{subject!r} looks like a NATS wildcard, but subjects are exact here: for a pattern, use "
                 f"--match {nats_to_regex(subject)!r}", "warning")
        elif REGEX_SIGNS.search(subject):
            note(f"{subject!r} looks like a pattern, but subjects are exact here: add --match to use it as a regex",
                 "warning")


def nats_to_regex(subject: str) -> str:
    """A NATS subject with wildcards (``*``: one token, ``>``: the rest) as a regex."""
    parts = []
    for token in subject.split("."):
        parts.append("[^.]+" if token == "*" else ".+" if token == ">" else re.escape(token))
    return r"\.".join(parts) + "$"
