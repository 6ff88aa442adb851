"""``es reply``: answer requests from the shell, like ``nats reply``.

The answer is MESSAGE (``{request}``, ``{count}`` and ``{time}`` filled in), the output of
``--command`` (run by the shell with the request's message on stdin and ``ES_SUBJECT`` in
its environment), or else the request's message itself. A ``--command`` that fails or
takes too long sends the requester an error saying so (a ``RemoteError``). Each request is
printed like an event of ``es listen`` unless ``--quiet``."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
from typing import Any

from ..event import Event
from ..handlers import NO_ANSWER
from . import connect
from .formats import message_text
from .listen import ShellSubscriber
from .messages import decode, fill, parse
from .output import note

log = logging.getLogger(__name__)
COMMAND_TIMEOUT = 60.0  # seconds a --command may take to answer


class Replier(ShellSubscriber):
    """Answers each request on its subject; ordinary events on it are ignored."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.args = args

    def event(self, event: Event) -> None:
        pass  # a published event, not a request: nothing to answer

    def respond(self, event: Event) -> Any:
        if not self.show(event):
            return NO_ANSWER  # past --count: left to other responders
        return self.answer(event, self.seq)

    def answer(self, event: Event, seq: int) -> Any:
        """The answer to the request ``event``, the ``seq``-th one."""
        request = message_text(event.msg) if event.msg is not None else ""
        if self.args.shell_command is not None:
            return self._run_command(event, request)
        if self.args.message is None:
            return event.msg
        return parse(fill(self.args.message, seq, request=request), self.args.json)

    def _run_command(self, event: Event, request: str) -> Any:
        try:
            done = subprocess.run(self.args.shell_command, shell=True, input=request.encode("utf-8"),
                                  capture_output=True, timeout=COMMAND_TIMEOUT,
                                  env={**os.environ, "ES_SUBJECT": event.subject})
        except subprocess.TimeoutExpired:
            note(f"--command took longer than {COMMAND_TIMEOUT:g}s: the requester is told", "warning")
            raise RuntimeError(f"es reply: --command took longer than {COMMAND_TIMEOUT:g}s") from None
        if done.returncode != 0:
            why = decode(done.stderr) if done.stderr else b""
            note(f"--command failed (exit {done.returncode}): the requester is told. {why!s:.200}", "warning")
            raise RuntimeError(f"es reply: --command failed (exit {done.returncode}) {why!s:.200}")
        return parse(decode(done.stdout), self.args.json)


def cmd_reply(args: argparse.Namespace) -> int:
    """Answer requests on SUBJECT until interrupted (or ``--count`` answered)."""
    connect.locate(args)
    replier = Replier(args)
    try:
        replier.subscribe(args.subject, group=args.group)
    except BaseException:
        replier.close()
        raise
    return replier.run(f"answering requests on {args.subject}")
