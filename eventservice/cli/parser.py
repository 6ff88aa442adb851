"""The command line of ``es``: its commands, their options, and which function runs each.

Pure argparse: building the parser imports no client code, so ``es --help`` is quick and
shell completion (:mod:`.completion`) is generated from the same parser.
"""

from __future__ import annotations

import argparse
from typing import Callable, List, NamedTuple, Tuple

from .. import config
from ..bench import cli as bench_cli

EXAMPLES = """\
examples:
  es                                     serve (starts a name server when none answers)
  es listen 'stockquotes.SUN'            print events on a subject
  es publish stockquotes.SUN 22.44       publish one event
  es stats --watch                       counters, refreshed every 2 seconds
Run 'es COMMAND --help' for the options of each."""


def positive_int(text: str) -> int:
    """An argparse type: an int of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def normalise(argv: List[str]) -> List[str]:
    """``es`` alone, or with options first, means ``es serve``."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        return ["serve", *argv]
    return argv


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Leaves room for the commands' indent, which argparse forgets when it aligns their help."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            self._action_max_length += self._indent_increment


def parse(argv: List[str]) -> argparse.Namespace:
    """``argv`` parsed, with options allowed between the positionals (``es publish s --json
    '{"a": 1}'``); argparse alone leaves a positional that comes after an option over."""
    parser = build_parser()
    parsed, extras = parser.parse_known_args(normalise(argv))
    left = []
    for word in extras:
        if word.startswith("-") and word != "-":
            left.append(word)
        elif isinstance(getattr(parsed, "subjects", None), list):
            parsed.subjects.append(word)
        elif getattr(parsed, "message", "") is None and getattr(parsed, "shell_command", None) is None:
            parsed.message = word
        elif getattr(parsed, "pattern", "") is None:
            parsed.pattern = word
        else:
            left.append(word)
    if left:
        getattr(parsed, "usage_error", parser.error)(f"unrecognized arguments: {' '.join(left)}")
    return parsed


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``es`` and all its commands; each command's namespace has ``run``
    ("module:function") and ``usage_error`` (its parser's ``error``)."""
    parser = argparse.ArgumentParser(
        prog="es", formatter_class=_Formatter, epilog=EXAMPLES,
        description="Pyro5 Event Service: publish/subscribe between Python programs. "
                    "With no command, serves (same as 'es serve').")
    parser.add_argument("--version", action="version", version=f"es {config.VERSION} (eventservice)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, spec in COMMANDS.items():
        command = sub.add_parser(name, aliases=list(spec.aliases), help=spec.help,
                                 description=spec.help[0].upper() + spec.help[1:] + ".")
        command.set_defaults(run=spec.run, usage_error=command.error)
        spec.build(command)
        if spec.aliases:  # "publish  publish events (also: pub)" rather than "publish (pub)" on a line of its own
            listed = sub._choices_actions[-1]
            listed.metavar, listed.help = name, f"{spec.help} (also: {', '.join(spec.aliases)})"
    return parser


# -- shared options --------------------------------------------------------------------------

def _ns_options(parser: "argparse.ArgumentParser | argparse._ArgumentGroup") -> None:
    parser.add_argument("--ns-host", metavar="HOST", help="name server host (default: $PYRO_NS_HOST, then broadcast)")
    parser.add_argument("--ns-port", type=int, metavar="PORT", help="name server port (default: $PYRO_NS_PORT or 9090)")


def _client_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("finding the Event Service")
    where.add_argument("--esuri", metavar="URI",
                       help="URI of the Event Service (default: look it up in the name server)")
    where.add_argument("-i", "--ident", metavar="PASSPHRASE",
                       help=f"passphrase of the Event Service (default: ${config.IDENT_ENV})")
    where.add_argument("-u", "--user", help=f"log in as this user of es --users (default: ${config.USER_ENV})")
    where.add_argument("--password", help=f"the user's password, proven, never sent (default: ${config.PASSWORD_ENV})")
    _ns_options(where)
    tls = parser.add_argument_group("TLS (default: Pyro5's PYRO_SSL* settings)")
    tls.add_argument("--tls-ca", metavar="FILE", help="CA that signed the Event Service's certificate; turns TLS on")
    tls.add_argument("--tls-cert", metavar="FILE", help="this client's certificate (also served by listeners)")
    tls.add_argument("--tls-key", metavar="FILE", help="this client's private key")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, with tracebacks")


def _message_options(parser: argparse.ArgumentParser, what: str, lines: bool) -> None:
    parser.add_argument("message", nargs="?", metavar="MESSAGE",
                        help=f"the {what}, a string ({{count}} and {{time}} are filled in; '-': read stdin; "
                             "absent: None)")
    source = parser.add_argument_group(f"the {what}")
    source.add_argument("--json", action="store_true", help="parse the message as JSON")
    source.add_argument("--stdin", action="store_true", help="read the message from stdin (like MESSAGE '-')")
    source.add_argument("--file", metavar="FILE", help="read the message from FILE")
    if lines:
        source.add_argument("--lines", action="store_true", help="one event per line of stdin (the default) or FILE")
    source.add_argument("-c", "--count", type=positive_int, default=1, metavar="N",
                        help="send it N times, {count} counting 1..N (default 1)")
    source.add_argument("--sleep", type=seconds, default=0.0, metavar="SECONDS", help="pause between sends")


def _event_format(parser: argparse.ArgumentParser, kinds: bool = True) -> None:
    parser.add_argument("-c", "--count", type=positive_int, metavar="N", help="exit after N events")
    shown = parser.add_argument_group("how events are shown (default: SUBJECT MESSAGE, one line each)")
    if kinds:
        kind = shown.add_mutually_exclusive_group()
        kind.add_argument("--json", dest="show", action="store_const", const="json",
                          help="JSON Lines: seq, time (ISO 8601), subject, msg; NaN and bytes encoded explicitly")
        kind.add_argument("--raw", dest="show", action="store_const", const="raw", help="the message only")
    shown.add_argument("--timestamps", action=argparse.BooleanOptionalAction, default=None,
                       help="the time of day and a running [#N] before each line (default: on a terminal)")
    parser.set_defaults(show="text")


# -- the commands ----------------------------------------------------------------------------

def _serve(parser: argparse.ArgumentParser) -> None:
    parser.description = (f"Serve an Event Service, registered as {config.EVENTSERVICE_NAME} in a Pyro5 name "
                          "server (started in this process when none answers).")
    parser.add_argument("-n", "--host", default="localhost", help="interface to listen on (default: localhost)")
    parser.add_argument("-p", "--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("-N", "--no-ns", action="store_true", help="serve without a name server; only print the URI")
    parser.add_argument("--replace", action="store_true",
                        help="take over the name from another Event Service that still answers")
    _ns_options(parser)
    config.Settings.add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, with tracebacks")


def _publish(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Prints how many subscribers the events reached (of this es), unless --quiet."
    parser.add_argument("subject", metavar="SUBJECT")
    _message_options(parser, "message", lines=True)
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    _client_options(parser)


def _listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subjects", nargs="*", metavar="SUBJECT", help="exact subjects (case-insensitive)")
    parser.add_argument("--match", action="store_true", help="the SUBJECTs are regex patterns (re.match)")
    parser.add_argument("--group", metavar="NAME", help="share the events with the other members of this work "
                                                        "queue group: each event goes to one of them")
    parser.add_argument("--filter", metavar="JSON", help='only events whose message passes this filter, e.g. '
                                                         '\'["==", "symbol", "SUN"]\'')
    parser.add_argument("--presence", action="store_true", help="also show subscribers joining and leaving")
    _event_format(parser)
    _client_options(parser)


def _tap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default=".*", metavar="PATTERN",
                        help="only subjects matching this regex (default: everything)")
    _event_format(parser)
    _client_options(parser)


def _request(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subject", metavar="SUBJECT")
    _message_options(parser, "request", lines=False)
    parser.add_argument("-t", "--timeout", type=float, default=config.DEFAULT_REQUEST_TIMEOUT, metavar="SECONDS",
                        help=f"seconds to wait for an answer (default {config.DEFAULT_REQUEST_TIMEOUT:g})")
    parser.add_argument("--raw", action="store_true", help="print the answer only (default: [#N] TIME: ANSWER)")
    _client_options(parser)


def _reply(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("In MESSAGE, {request} is the request's message, {count} the running number, {time} the "
                     "time. With neither MESSAGE nor --command, the request's message is sent back.")
    parser.add_argument("subject", metavar="SUBJECT")
    answer = parser.add_mutually_exclusive_group()
    answer.add_argument("message", nargs="?", metavar="MESSAGE", help="the answer")
    answer.add_argument("--command", dest="shell_command", metavar="CMD",
                        help="answer with the output of CMD (run by the shell, the request's message on its stdin)")
    parser.add_argument("--json", action="store_true", help="parse the answer as JSON")
    parser.add_argument("--group", metavar="NAME", help="share the requests with the other repliers of this group")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print the requests")
    _event_format(parser, kinds=False)
    _client_options(parser)


def _stats(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the counters as JSON (no rates)")
    parser.add_argument("--watch", type=seconds, nargs="?", const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C")
    parser.add_argument("--interval", type=seconds, default=1.0, metavar="SECONDS",
                        help="measure rates over this long (default 1; 0: no rates)")
    parser.add_argument("--limit", type=positive_int, default=10, metavar="N", help="busiest subjects shown")
    _client_options(parser)


def _subjects(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", metavar="PATTERN", help="only subjects matching this regex")
    parser.add_argument("--limit", type=positive_int, default=100, metavar="N", help="at most N (default 100)")
    parser.add_argument("--json", action="store_true", help="print them as JSON")
    _client_options(parser)


def _ping(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--count", type=positive_int, default=1, metavar="N", help="ping N times (default 1)")
    parser.add_argument("--interval", type=seconds, default=1.0, metavar="SECONDS",
                        help="between pings (default 1)")
    _client_options(parser)


def _completion(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "bash: source <(es completion bash)    zsh: source <(es completion zsh)"
    parser.add_argument("shell", choices=("bash", "zsh"))
    parser.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)


class Command(NamedTuple):
    aliases: Tuple[str, ...]
    run: str  # "module:function" of this package ("bench": the bench's own)
    help: str
    build: Callable[[argparse.ArgumentParser], None]


COMMANDS = {
    "serve": Command((), "serve:cmd_serve", "serve an Event Service (the default)", _serve),
    "publish": Command(("pub",), "publish:cmd_publish", "publish events", _publish),
    "listen": Command(("sub",), "listen:cmd_listen", "print events as they arrive", _listen),
    "request": Command(("req",), "publish:cmd_request", "send a request and print the answer", _request),
    "reply": Command((), "reply:cmd_reply", "answer requests, with a message or a command's output", _reply),
    "tap": Command((), "listen:cmd_tap", "print everything published, presence events included", _tap),
    "stats": Command((), "status:cmd_stats", "show the counters, subscribers and busiest subjects", _stats),
    "subjects": Command((), "status:cmd_subjects", "list subjects with their subscribers and events", _subjects),
    "ping": Command((), "status:cmd_ping", "measure the round trip to the Event Service", _ping),
    "reload": Command((), "status:cmd_reload", "read the users file of es --users again (admin users)",
                      _client_options),
    "bench": Command((), "bench", bench_cli.HELP, bench_cli.add_arguments),
    "completion": Command((), "completion:cmd_completion", "print a shell completion script (bash, zsh)",
                          _completion),
}
