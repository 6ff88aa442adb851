"""The ``es`` command: serve an Event Service, or publish, listen and look at one."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any, Callable, Dict, List, Optional

import Pyro5

from . import config
from .auth import client_credentials
from .bench import cli as bench_cli
from .clients import ServiceLink, Subscriber, Publisher
from .event import Event

log = logging.getLogger("eventservice.cli")

SUBCOMMANDS = ("serve", "publish", "listen", "request", "stats", "reload", "bench")


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--esuri", help="URI of the Event Service (default: look it up in the name server)")
    parser.add_argument("-i", "--ident", help=f"passphrase of the Event Service (default: ${config.IDENT_ENV})")
    parser.add_argument("-u", "--user", help=f"log in as this user of es --users (default: ${config.USER_ENV})")
    parser.add_argument("--password", help=f"the user's password, proven, never sent (default: ${config.PASSWORD_ENV})")
    _add_ns_options(parser)
    tls = parser.add_argument_group("TLS (default: Pyro5's PYRO_SSL* settings)")
    tls.add_argument("--tls-ca", help="CA that signed the Event Service's certificate; turns TLS on")
    tls.add_argument("--tls-cert", help="this client's certificate (also served by 'listen')")
    tls.add_argument("--tls-key", help="this client's private key")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, with tracebacks")


def _add_ns_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ns-host", help="name server host (default: $PYRO_NS_HOST, then broadcast)")
    parser.add_argument("--ns-port", type=int, help="name server port (default: $PYRO_NS_PORT or 9090)")


def _serve_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--host", default="localhost", help="interface to listen on (default: localhost)")
    parser.add_argument("-p", "--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("-N", "--no-ns", action="store_true", help="serve without a name server; only print the URI")
    parser.add_argument("--replace", action="store_true",
                        help="take over the name from another Event Service that still answers")
    _add_ns_options(parser)
    config.Settings.add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, with tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="es", description="Pyro5 Event Service. With no sub-command, serves (same as 'es serve').",
        epilog="Run 'es SUB-COMMAND --help' for the options of each.")
    sub = parser.add_subparsers(dest="command", metavar="SUB-COMMAND")
    _serve_parser(sub.add_parser("serve", help="serve an Event Service (the default)",
                                 description="Serve an Event Service, registered as "
                                             f"{config.EVENTSERVICE_NAME} in a Pyro5 name server."))
    publish = sub.add_parser("publish", help="publish one event", description="Publish one event.")
    publish.add_argument("subject")
    publish.add_argument("message", nargs="?", help="the message, a string (None when absent)")
    publish.add_argument("--json", action="store_true", help="parse MESSAGE as JSON")
    _add_client_options(publish)
    listen = sub.add_parser("listen", help="print events as they arrive",
                            description="Print one line per event: the subject, then the message.")
    listen.add_argument("subjects", nargs="+", metavar="SUBJECT")
    listen.add_argument("--match", action="store_true", help="the SUBJECTs are regex patterns")
    listen.add_argument("-c", "--count", type=int, help="exit after this many events")
    listen.add_argument("--json", action="store_true", help="print each event as a JSON object")
    _add_client_options(listen)
    request = sub.add_parser("request", help="send a request and print the first answer",
                             description="Send a request on SUBJECT; print the first answer of a responder.")
    request.add_argument("subject")
    request.add_argument("message", nargs="?", help="the message, a string (None when absent)")
    request.add_argument("--json", action="store_true", help="parse MESSAGE as JSON and print the answer as JSON")
    request.add_argument("-t", "--timeout", type=float, default=config.DEFAULT_REQUEST_TIMEOUT,
                         help=f"seconds to wait for an answer (default {config.DEFAULT_REQUEST_TIMEOUT:g})")
    _add_client_options(request)
    stats = sub.add_parser("stats", help="show the counters of an Event Service",
                           description="Show subscribers, subscriptions, events in, delivered, dropped.")
    stats.add_argument("--json", action="store_true", help="print the counters as JSON")
    _add_client_options(stats)
    _add_client_options(sub.add_parser("reload", help="read the users file of es --users again (admin users)"))
    bench_cli.add_arguments(sub.add_parser("bench", help=bench_cli.HELP))
    return parser


def _say(text: str) -> None:
    print(text, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import is_loopback, start_es

    settings = config.Settings.from_args(args)
    if not is_loopback(args.host) and settings.ident is None and not settings.users and not settings.tls:
        print(f"es: warning: listening on {args.host or 'all interfaces'} with neither passphrase nor TLS: "
              "anyone who can reach this port can publish and subscribe", file=sys.stderr, flush=True)
    ns_host = args.ns_host or (Pyro5.config.NS_HOST if args.ns_port else None)
    server = start_es(args.host, args.port, settings=settings, use_ns=not args.no_ns,
                      ns_host=ns_host, ns_port=args.ns_port, replace=args.replace, announce=_say)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    server.reload_on_sighup()
    _say(f"URI: {server.uri}")
    where = f"registered as {config.EVENTSERVICE_NAME} in the name server at {server.ns_uri}" \
        if server.ns_uri else "without a name server"
    _say(f"Event Service started ({where})")
    server.loop()
    _say("Event Service stopped")
    return 0


def _client_setup(args: argparse.Namespace) -> None:
    if args.ns_host:
        Pyro5.config.NS_HOST = args.ns_host
    if args.ns_port:
        Pyro5.config.NS_PORT = args.ns_port
    if args.tls_ca or args.tls_cert:
        Pyro5.config.SSL = True
        if args.tls_ca:
            Pyro5.config.SSL_CACERTS = args.tls_ca
        if args.tls_cert:
            # a client certificate, and the certificate a listener serves callbacks with
            Pyro5.config.SSL_CLIENTCERT = Pyro5.config.SSL_SERVERCERT = args.tls_cert
            Pyro5.config.SSL_CLIENTKEY = Pyro5.config.SSL_SERVERKEY = args.tls_key or ""


def _message(args: argparse.Namespace) -> Any:
    if args.json and args.message is not None:
        try:
            return json.loads(args.message)
        except ValueError as exc:
            raise ValueError(f"MESSAGE is not valid JSON: {exc}") from None
    return args.message


def cmd_publish(args: argparse.Namespace) -> int:
    _client_setup(args)
    with Publisher(ident=args.ident, esURI=args.esuri, user=args.user, password=args.password) as publisher:
        publisher.publish(args.subject, _message(args))
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    _client_setup(args)
    link = ServiceLink(client_credentials(args.ident, args.user, args.password), args.esuri,
                       timeout=args.timeout + config.DEFAULT_CLIENT_TIMEOUT)
    try:
        answer = link.call("request", args.subject, _message(args), args.timeout, serializer=config.FALLBACK_SERIALIZER)
    finally:
        link.reset()
    print(json.dumps(answer, default=str) if args.json else answer, flush=True)
    return 0


def _event_line(event: Event, as_json: bool) -> str:
    if as_json:
        return json.dumps(event.as_dict(), default=str)
    message = event.msg if isinstance(event.msg, str) else repr(event.msg)
    return f"{event.subject} {message}"


class _Printer(Subscriber):
    """Prints each event on one line; stops after ``count`` events if given."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(ident=args.ident, esURI=args.esuri, user=args.user, password=args.password)
        self.setThreading(False)
        self.as_json, self.remaining = args.json, args.count

    def event(self, event: Event) -> None:
        if self.remaining is not None and self.remaining <= 0:
            return
        sys.stdout.write(_event_line(event, self.as_json) + "\n")
        sys.stdout.flush()
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.abort()


def cmd_listen(args: argparse.Namespace) -> int:
    _client_setup(args)
    printer = _Printer(args)
    try:
        if args.match:
            printer.subscribeMatch(args.subjects)
        else:
            printer.subscribe(args.subjects)
        print(f"listening on {', '.join(args.subjects)} (Ctrl-C stops)", file=sys.stderr, flush=True)
        listener = printer.start()
        while listener.is_alive():
            listener.join(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        printer.close()
    return 0


def _ask(args: argparse.Namespace, method: str) -> Any:
    """The answer of one call to the service, on a connection of its own."""
    _client_setup(args)
    link = ServiceLink(client_credentials(args.ident, args.user, args.password), args.esuri)
    try:
        return link.call(method)
    finally:
        link.reset()


def cmd_stats(args: argparse.Namespace) -> int:
    stats: Dict[str, Any] = _ask(args, "stats")
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        for key in ("subscribers", "subject_subscriptions", "pattern_subscriptions", "published",
                    "delivered", "dropped", "removed"):
            print(f"{key:22} {stats.get(key)}")
        for key in sorted(set(stats) - {"subscribers", "subject_subscriptions", "pattern_subscriptions",
                                         "published", "delivered", "dropped", "removed", "backbone"}):
            print(f"{key:22} {stats[key]}")
        if isinstance(stats.get("backbone"), dict):
            print(_backbone_text(stats["backbone"]))
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    done: Dict[str, Any] = _ask(args, "reload")
    print(f"reloaded: {done['users']} users; revoked the subscriptions of {len(done['revoked'])} subscriber(s)")
    return 0


def _backbone_text(bb: Dict[str, Any]) -> str:
    """The backbone section of ``es stats``: a headline, then one counter a line."""
    state = bb.get("state", "?")
    where = f" via {bb['server']}" if bb.get("server") else ""
    lines = [f"{'backbone':22} {state}: {bb.get('url')} (event space {bb.get('name')!r}{where})"]
    for key in ("sent", "received", "failed", "reconnects", "outages", "pending", "messages_sent",
                "messages_received", "duplicates", "inbound_dropped", "invalid"):
        if key in bb:
            lines.append(f"  {key:20} {bb[key]}")
    routed = "the whole space" if bb.get("whole_space") else \
        f"{bb.get('routed_subjects', 0)} exact subjects"
    lines.append(f"  {'receiving':20} {routed}")
    if bb.get("last_error") and state != "connected":
        lines.append(f"  {'last_error':20} {bb['last_error']}")
    return "\n".join(lines)


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve, "publish": cmd_publish, "listen": cmd_listen, "request": cmd_request, "stats": cmd_stats,
    "reload": cmd_reload, "bench": bench_cli.run,
}


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of ``es``; returns the exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")
    parsed = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if parsed.verbose else logging.WARNING,
                        format="es: %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[parsed.command](parsed)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        if parsed.verbose:
            log.exception("failed")
        print(f"es: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
