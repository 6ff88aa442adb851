"""``es publish`` and ``es request``: send messages (see :mod:`.messages`) and say what came of them."""

from __future__ import annotations

import argparse
import time

from .. import config
from . import connect
from .formats import message_text, to_json
from .messages import MessageSource
from .output import DIM, Progress, line, note, paint, plural, printable


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish each message on SUBJECT; print how many subscribers they reached."""
    source = MessageSource(args)
    service = connect.link(args)
    progress = Progress("published", source.total)
    sent = reached = 0
    try:
        for message in source:
            if sent and args.sleep:
                time.sleep(args.sleep)
            reached += service.call("publish", args.subject, message) or 0  # an older es answers None
            sent += 1
            progress.update(sent)
    except KeyboardInterrupt:
        progress.done()
        note(f"interrupted after publishing {plural(sent, 'event')}")
        raise
    finally:
        progress.done()
        service.reset()
    if not args.quiet:
        line(f"reached {plural(reached, 'subscriber')}" if sent == 1 else
             f"published {plural(sent, 'event')}; they reached {plural(reached, 'subscriber')} in all")
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    """Send each message as a request on SUBJECT; print each answer as it comes."""
    source = MessageSource(args)
    service = connect.link(args, timeout=args.timeout + config.DEFAULT_CLIENT_TIMEOUT)
    try:
        for seq, message in enumerate(source, 1):
            if seq > 1 and args.sleep:
                time.sleep(args.sleep)
            started = time.perf_counter()
            answer = service.call("request", args.subject, message, args.timeout,
                                  serializer=config.FALLBACK_SERIALIZER)
            took = time.perf_counter() - started
            if args.json:
                line(to_json(answer))
            elif args.raw:
                line(printable(message_text(answer)))
            else:
                line(f"{paint(f'[#{seq}] {took * 1000:.2f} ms', DIM)} {printable(message_text(answer))}")
    finally:
        service.reset()
    return 0
