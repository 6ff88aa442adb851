"""The ``es`` command: serve an Event Service, or publish, listen and look at one.

Exit status: 0 done; 1 an error (one line on stderr that says what to do next); 2 a usage
error; 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM, with no traceback either way; and
0, quietly, when stdout is a pipe whose reader has gone (like ``cat``). ``es serve`` ends
with 0 on SIGINT and SIGTERM.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
from typing import Any, List, Optional

log = logging.getLogger("eventservice.cli")


class Interrupted(KeyboardInterrupt):
    """A signal that ends a command (SIGTERM); ``signum`` gives the exit status 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of ``es``; returns the exit status (see the module)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    parsed = None
    try:
        from .parser import parse

        parsed = parse(list(sys.argv[1:] if args is None else args))
        logging.basicConfig(level=logging.DEBUG if parsed.verbose else logging.WARNING,
                            format="es: %(levelname)s %(name)s: %(message)s")
        code = _run(parsed)
        _flush()
        return code
    except SystemExit:  # --help, --version, usage errors: what argparse printed must not fail at exit
        try:
            _flush()
        except Exception:
            pass
        raise
    except KeyboardInterrupt as exc:
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except Exception as exc:
        return _failed(exc, parsed)


def _run(parsed: Any) -> int:
    if parsed.run == "bench":
        from ..bench import cli as bench_cli

        return bench_cli.run(parsed)
    module, function = parsed.run.split(":")
    status: int = getattr(importlib.import_module(f".{module}", __name__), function)(parsed)
    return status


def _flush() -> None:
    """Flush stdout; a closed pipe means quiet from now on (OutputClosed)."""
    from .output import OutputClosed, silence_stdout, write

    try:
        write("")
    except OutputClosed:
        silence_stdout()
        raise


def _failed(exc: Exception, parsed: Any) -> int:
    from .connect import explain
    from .output import OutputClosed, note, silence_stdout, stdout_gone

    if isinstance(exc, OutputClosed) or (isinstance(exc, BrokenPipeError) and stdout_gone()):
        silence_stdout()
        return 0
    if parsed is not None and getattr(parsed, "verbose", False):
        log.exception("failed")
    try:
        note(explain(exc, parsed), "error")
    except BrokenPipeError:
        pass
    return 1
