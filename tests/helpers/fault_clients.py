"""Many idle clients in one process: opens COUNT plain Pyro5 proxies to the Event Service at
URI and binds each (a real TCP connection with a completed handshake, kept open), prints
``BOUND <n> <seconds>``; then on SIGUSR1 calls ``ping()`` once on every proxy, over its own
connection (the one it bound; a proxy that had to connect again counts as failed),
and prints ``CALLED <ok> <failed> <slowest seconds>``. The connections stay open
until the process is killed."""

import argparse
import signal
import sys
import time

import Pyro5.api
from Pyro5 import errors

parser = argparse.ArgumentParser()
parser.add_argument("uri")
parser.add_argument("count", type=int)
args = parser.parse_args()

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

proxies = []
started = time.monotonic()
failed_binds = 0
for _ in range(args.count):
    proxy = Pyro5.api.Proxy(args.uri)
    proxy._pyroTimeout = 30
    try:
        proxy._pyroBind()
        proxies.append((proxy, proxy._pyroLocalSocket))
    except errors.PyroError as exc:
        failed_binds += 1
        print(f"BIND-FAILED {type(exc).__name__}: {exc}", flush=True)
print(f"BOUND {len(proxies)} {time.monotonic() - started:.3f}", flush=True)

signal.sigwait({signal.SIGUSR1})
ok = failed = 0
slowest = 0.0
for proxy, local in proxies:
    begun = time.monotonic()
    try:
        proxy._pyroClaimOwnership()
        proxy.ping()
        if proxy._pyroLocalSocket != local:  # it had to connect again: the old one was gone
            raise errors.CommunicationError(f"connection {local} was replaced by {proxy._pyroLocalSocket}")
        ok += 1
    except errors.PyroError as exc:
        failed += 1
        print(f"CALL-FAILED {type(exc).__name__}: {exc}", flush=True)
    slowest = max(slowest, time.monotonic() - begun)
print(f"CALLED {ok} {failed + failed_binds} {slowest:.3f}", flush=True)
signal.sigwait({signal.SIGUSR1})  # keep the connections until killed (or told to go)
sys.exit(0)
