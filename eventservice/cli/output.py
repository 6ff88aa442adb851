"""What ``es`` writes: lines on stdout that end quietly when the pipe closes, colour only on
a terminal (never with ``NO_COLOR``), progress on stderr only on a terminal, terminal
control characters escaped, and numbers, durations and rates in human units."""

from __future__ import annotations

import datetime
import errno
import os
import select
import sys
import time
from typing import IO, Optional

# ANSI styles, used only where colour() says so
BOLD, DIM, RED, GREEN, YELLOW, CYAN = "1", "2", "31", "32", "33", "36"
CLEAR_SCREEN = "\x1b[H\x1b[2J"
CLEAR_LINE = "\r\x1b[K"
PROGRESS_AFTER = 0.5  # seconds an operation runs before its progress shows
PROGRESS_EVERY = 0.2  # seconds between progress updates


class OutputClosed(Exception):
    """stdout is a pipe whose reader has gone: the command ends quietly (exit 0)."""


def is_terminal(stream: IO[str]) -> bool:
    """True if ``stream`` is a terminal."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def colour(stream: IO[str]) -> bool:
    """True if ``stream`` gets colour: a terminal, ``NO_COLOR`` unset or empty, ``TERM`` not dumb."""
    return is_terminal(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str, stream: Optional[IO[str]] = None) -> str:
    """``text`` in ``style`` where ``stream`` (default stdout) gets colour, else as it is."""
    return f"\x1b[{style}m{text}\x1b[0m" if colour(stream or sys.stdout) else text


def write(text: str, stream: Optional[IO[str]] = None) -> None:
    """Write ``text`` and flush; :class:`OutputClosed` when stdout's reader has gone."""
    stream = stream or sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise OutputClosed() from None
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise OutputClosed() from None
        raise


def line(text: str = "") -> None:
    """One line on stdout (see :func:`write`)."""
    write(text + "\n")


def stdout_gone() -> bool:
    """True if stdout is a pipe whose reader has gone."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing fails writing to a closed pipe at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def note(text: str, kind: str = "note") -> None:
    """``es: KIND: TEXT`` on stderr (warnings in yellow, errors in red, on a terminal)."""
    style = {"error": RED, "warning": YELLOW}.get(kind, DIM)
    print(f"{paint('es: ' + kind + ':', style, sys.stderr)} {text}", file=sys.stderr, flush=True)


# -- escaping --------------------------------------------------------------------------------

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES = {c: _NAMED.get(chr(c), f"\\x{c:02x}") for c in [*range(0x20), *range(0x7f, 0xa0)]}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def printable(text: str) -> str:
    """``text`` with newlines and terminal control characters escaped (``\\n``, ``\\x1b``),
    so that it stays on one line and cannot steer a terminal."""
    return text.translate(_ESCAPES)


# -- human units -----------------------------------------------------------------------------

def number(value: float) -> str:
    """1234567 -> ``1,234,567``; fractions keep one decimal below 100."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{int(value):,}"


def rate(per_second: float) -> str:
    """Events per second: ``1,234/s``."""
    return f"{number(round(per_second, 1))}/s"


def duration(seconds: float) -> str:
    """``3d 4h``, ``2h 05m``, ``4m 09s``, ``12.3s``: two units at most."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def local_time(epoch: float) -> str:
    """``2026-01-02 12:00:01`` in local time."""
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def clock(epoch: float) -> str:
    """``12:00:01.234`` in local time: the time of day, to the millisecond."""
    return datetime.datetime.fromtimestamp(epoch).strftime("%H:%M:%S.%f")[:-3]


def iso_time(epoch: float) -> str:
    """ISO 8601 in UTC, to the microsecond: ``2026-01-02T11:00:01.234567+00:00``."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="microseconds")


def plural(count: int, word: str) -> str:
    """``1 subscriber``, ``2 subscribers``."""
    return f"{number(count)} {word}{'' if count == 1 else 's'}"


class Progress:
    """A progress line on stderr, rewritten in place; shown only on a terminal, and only once
    the operation has run for :data:`PROGRESS_AFTER` seconds. :meth:`done` clears it."""

    def __init__(self, what: str, total: Optional[int] = None) -> None:
        self.what = what
        self.total = total
        self.enabled = is_terminal(sys.stderr)
        self.started = time.monotonic()
        self.next_update = self.started + PROGRESS_AFTER
        self.shown = False

    def update(self, count: int) -> None:
        """Say that ``count`` are done (cheap: writes at most every :data:`PROGRESS_EVERY` s)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self.next_update:
            return
        self.next_update = now + PROGRESS_EVERY
        of = f"/{number(self.total)}" if self.total else ""
        self.show(f"{number(count)}{of} ({rate(count / max(now - self.started, 1e-9))})")

    def show(self, text: str) -> None:
        """Show ``what`` and ``text`` as the progress line (on a terminal)."""
        if self.enabled:
            sys.stderr.write(f"{CLEAR_LINE}{self.what} {text}")
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        """Clear the progress line, if one was shown."""
        if self.shown:
            sys.stderr.write(CLEAR_LINE)
            sys.stderr.flush()
            self.shown = False
