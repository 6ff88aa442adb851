"""The messages ``es publish`` and ``es request`` send: MESSAGE, stdin (``-`` or
``--stdin``) or ``--file``, whole or one per line (``--lines``), ``--count`` times, with
``{count}`` and ``{time}`` filled in and, with ``--json``, parsed.

Text read from stdin or a file loses one trailing newline (``echo hi`` sends ``hi``); input
that is not UTF-8 is sent as bytes, as it is. Arguments are limited in size by the system
(about 128 KiB each on Linux); stdin and files are not."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import stat
import sys
from typing import IO, Any, Iterator, Optional, Union

from .output import is_terminal, note

Text = Union[str, bytes, None]


def fill(template: str, count: int, **more: str) -> str:
    """``template`` with ``{count}``, ``{time}`` (ISO 8601, local) and ``{NAME}`` for each of
    ``more`` replaced; other braces stay as they are (JSON keeps working)."""
    now = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
    text = template.replace("{count}", str(count)).replace("{time}", now)
    for name, value in more.items():
        text = text.replace("{" + name + "}", value)
    return text


def parse(text: Text, as_json: bool) -> Any:
    """``text`` as the message to send: parsed when ``as_json`` (ValueError if it is no JSON)."""
    if not as_json or text is None:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the message is not valid JSON ({exc}): {str(text)[:60]!r}") from None


def decode(data: bytes) -> Union[str, bytes]:
    """UTF-8 text without one trailing newline, or the bytes as they are if not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


class MessageSource:
    """The messages of one command, in order (iterate it); ``total`` is their number, or
    None while unknown (``--lines``). Usage errors go to ``args.usage_error``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        lines = getattr(args, "lines", False)
        reads_stdin = args.stdin or args.message == "-" or (lines and not args.file and args.message is None)
        if reads_stdin and (args.file or args.message not in (None, "-")):
            args.usage_error("give the message one way: MESSAGE, '-'/--stdin or --file")
        if args.file and args.message is not None:
            args.usage_error("give the message one way: MESSAGE or --file")
        if lines and not (reads_stdin or args.file):
            args.usage_error("--lines reads stdin or --file, not MESSAGE")
        if lines and args.count > 1:
            args.usage_error("--lines sends each line once: leave out --count")
        self.reads_stdin = reads_stdin
        self.lines = lines
        self.total: Optional[int] = None if lines else args.count
        if args.message is None and not (reads_stdin or args.file) and _piped(sys.stdin):
            note("no MESSAGE: sending None (to send what comes on stdin, give '-' or --stdin)")

    def __iter__(self) -> Iterator[Any]:
        for count, text in enumerate(self._texts(), 1):
            if isinstance(text, str):
                text = fill(text, count)
            yield parse(text, self.args.json)

    def _texts(self) -> Iterator[Text]:
        if self.lines:
            with self._open() as stream:
                for raw in stream:
                    yield decode(raw)
            return
        if self.reads_stdin or self.args.file:
            with self._open() as stream:
                whole: Text = decode(stream.read())
        else:
            whole = self.args.message
        for _ in range(self.args.count):
            yield whole

    def _open(self) -> IO[bytes]:
        if self.args.file:
            return open(self.args.file, "rb")
        if is_terminal(sys.stdin):
            note("reading the message from stdin (Ctrl-D ends it)")
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")


def _piped(stream: IO[str]) -> bool:
    """True if ``stream`` is a pipe or a file (something was redirected into it)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)

