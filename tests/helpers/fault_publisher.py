"""A publisher process for the fault tests: publishes {"seq": i, "src": NAME} on SUBJECT,
i = 0, 1, 2, ..., until SIGTERM/SIGINT (or --count events), and accounts for every event.

Modes:
  plain  an ``eventservice.Publisher``: one call per event. A call that raises is printed
         as ``FAIL <seq> <seconds> <ExceptionType>: <message>``; the event was not accepted.
  batch  a ``Publisher(batch=True)``: events are published in windows of --window events,
         each closed by ``flush()``. Each window is printed as
         ``WIN ok|fail <first> <end> <seconds> [<ExceptionType>: <message>]`` (seqs first..end-1).

On stop it prints ``DONE <json>`` with totals: ``total`` (events handed to publish),
``accepted`` (plain: calls that returned; batch: events of windows whose flush returned),
``failed``, ``max_call`` (longest single publish/flush, seconds) and ``error_types``.
``--quiet`` prints only failures and the final line (and a PROGRESS line every 1000 events
in plain mode, every window in batch mode when not quiet).
"""

import argparse
import json
import signal
import sys
import threading
import time

from eventservice import Publisher

parser = argparse.ArgumentParser()
parser.add_argument("subject")
parser.add_argument("--mode", choices=("plain", "batch"), default="plain")
parser.add_argument("--name", default="p")
parser.add_argument("--count", type=int, default=0, help="stop after this many events (0: until signalled)")
parser.add_argument("--window", type=int, default=50, help="batch mode: events per flush window")
parser.add_argument("--interval", type=float, default=0.0,
                    help="pace: seconds between events (plain) or windows (batch); 0 is full speed")
parser.add_argument("--quiet", action="store_true")
args = parser.parse_args()

stop = threading.Event()


def on_signal(*_):
    stop.set()


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

total = accepted = failed = 0
max_call = 0.0
error_types = {}


def note_error(exc):
    name = f"{type(exc).__module__}.{type(exc).__name__}"
    error_types[name] = error_types.get(name, 0) + 1
    return f"{type(exc).__name__}: {str(exc)[:200]}".replace("\n", " ")


def done():
    return stop.is_set() or (args.count and total >= args.count)


print("READY", flush=True)
if args.mode == "plain":
    pub = Publisher()
    while not done():
        seq = total
        total += 1
        started = time.monotonic()
        try:
            pub.publish(args.subject, {"seq": seq, "src": args.name})
            accepted += 1
        except Exception as exc:  # accounted for: printed and counted
            failed += 1
            text = note_error(exc)
            print(f"FAIL {seq} {time.monotonic() - started:.3f} {text}", flush=True)
        max_call = max(max_call, time.monotonic() - started)
        if not args.quiet and total % 1000 == 0:
            print(f"PROGRESS {accepted} {failed}", flush=True)
        if args.interval:
            stop.wait(args.interval)
    pub.close()
else:
    pub = Publisher(batch=True)
    while not done():
        first = total
        end = first + args.window if not args.count else min(first + args.window, args.count)
        for seq in range(first, end):
            pub.publish(args.subject, {"seq": seq, "src": args.name})
        total = end
        started = time.monotonic()
        try:
            pub.flush(timeout=60)
            accepted += end - first
            if not args.quiet:
                print(f"WIN ok {first} {end} {time.monotonic() - started:.3f}", flush=True)
        except Exception as exc:  # accounted for: the whole window counts as reported
            failed += end - first
            text = note_error(exc)
            print(f"WIN fail {first} {end} {time.monotonic() - started:.3f} {text}", flush=True)
        max_call = max(max_call, time.monotonic() - started)
        if args.interval:
            stop.wait(args.interval)
    try:
        pub.close()  # nothing is pending: every window was flushed
    except Exception as exc:
        print(f"CLOSE-ERROR {note_error(exc)}", flush=True)

print("DONE " + json.dumps({"total": total, "accepted": accepted, "failed": failed,
                            "max_call": round(max_call, 3), "error_types": error_types}), flush=True)
sys.exit(0)
