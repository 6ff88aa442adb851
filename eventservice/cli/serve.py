"""``es serve`` (and ``es`` alone): serve an Event Service until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys

import Pyro5

from .. import config


def _say(text: str) -> None:
    print(text, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then unregister and return 0."""
    from ..server import is_loopback, start_es

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
