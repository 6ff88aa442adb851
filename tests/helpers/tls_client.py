"""A TLS client process for tests/test_tls.py. Pyro5 has one SSL switch per process, so
TLS clients run here, configured by the PYRO_SSL* environment variables of the test.

Modes (first argument):
  call URI [--ident X]        plain Pyro5 proxy: connect and call stats() (with --user and
                              --password: presented as its handshake); prints one JSON
                              line {"ok": ..., "error_type": ..., "error": ..., "pyro_or_os": ...}
  publish URI SUBJECT COUNT   eventservice.Publisher(esURI=URI, user=, password=): publishes {"seq": i};
                              prints the same JSON line ("ok" once all were accepted)
  stats-loop URI              calls stats() on a new connection again and again; prints
                              {"start": t0, "end": t1, "ok": ..., "error": ...} per call
"""

import argparse
import json
import sys
import threading
import time

import Pyro5.api
import Pyro5
import Pyro5.errors

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=("call", "publish", "stats-loop"))
parser.add_argument("uri")
parser.add_argument("subject", nargs="?")
parser.add_argument("count", nargs="?", type=int, default=1)
parser.add_argument("--ident")
parser.add_argument("--user")
parser.add_argument("--password")
args = parser.parse_args()


def report(exc=None, **extra):
    line = {"ok": exc is None, "ssl": bool(Pyro5.config.SSL), **extra}
    if exc is not None:
        line.update(error_type=type(exc).__name__, error=str(exc),
                    pyro_or_os=isinstance(exc, (Pyro5.errors.PyroError, OSError)))
    print(json.dumps(line), flush=True)


def call_stats():
    with Pyro5.api.Proxy(args.uri) as proxy:
        if args.user:
            given = {} if args.password is None else {"password": args.password}
            proxy._pyroHandshake = {"user": args.user, **given}
        else:
            proxy._pyroHandshake = args.ident
        proxy._pyroTimeout = 10
        return proxy.stats()


if args.mode == "call":
    try:
        stats = call_stats()
    except Exception as exc:
        report(exc)
        sys.exit(3)
    report(published=stats["published"])
elif args.mode == "publish":
    from eventservice import Publisher
    try:
        with Publisher(ident=args.ident, esURI=args.uri, user=args.user, password=args.password) as pub:
            for i in range(args.count):
                pub.publish(args.subject, {"seq": i})
    except Exception as exc:
        report(exc)
        sys.exit(3)
    report(published=args.count)
else:
    pace = threading.Event()
    while True:
        start = time.time()
        try:
            call_stats()
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"start": start, "end": time.time(), "ok": error is None, "error": error}),
              flush=True)
        pace.wait(0.1)  # pacing between calls, not a wait for anything
