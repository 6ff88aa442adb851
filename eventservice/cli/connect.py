"""How the client commands of ``es`` reach the Event Service, and what they say when they
cannot: every error names what to do next, with the real option names."""

from __future__ import annotations

import argparse
from typing import Optional

import Pyro5
from Pyro5 import errors

from .. import config
from ..auth import client_credentials
from ..link import ServiceLink, is_remote
from ..naming import find_ns, lookup

START_IT = "Start it with 'es' (it starts a name server too when none answers)"
PASSPHRASE_HINT = f"give it with -i/--ident or ${config.IDENT_ENV}"


class CommandError(Exception):
    """A failure whose text already says what to do next."""


def setup(args: argparse.Namespace) -> None:
    """Apply the name server and TLS options to Pyro5's settings (this process only)."""
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


def locate(args: argparse.Namespace) -> str:
    """Apply the options (:func:`setup`) and find the Event Service: its URI, from
    ``--esuri`` or the name server. :class:`CommandError` saying what to do when there is
    none. The clients are still given only ``--esuri``, so they follow the name."""
    setup(args)
    if args.esuri:
        args.found_at = args.esuri
        return str(args.esuri)
    ns = find_ns()
    if ns is None:
        where = f"{Pyro5.config.NS_HOST}:{Pyro5.config.NS_PORT}"
        raise CommandError(f"no name server answered at {where} (nor by broadcast): is es running? "
                           f"{START_IT}; or name the name server with --ns-host/--ns-port, "
                           "or the service with --esuri URI")
    try:
        uri = lookup(ns)
        ns_uri = ns._pyroUri
    finally:
        ns._pyroRelease()
    if uri is None:
        raise CommandError(f"the name server at {ns_uri.host}:{ns_uri.port} knows no {config.EVENTSERVICE_NAME}: "
                           f"is es running? {START_IT}, or give its URI with --esuri")
    args.found_at = str(uri)
    return str(uri)


def link(args: argparse.Namespace, timeout: float = config.DEFAULT_CLIENT_TIMEOUT) -> ServiceLink:
    """A link to the Event Service (found first, see :func:`locate`)."""
    locate(args)
    return ServiceLink(client_credentials(args.ident, args.user, args.password), args.esuri, timeout=timeout)


def explain(exc: BaseException, args: Optional[argparse.Namespace]) -> str:
    """The one line ``es`` prints for ``exc``: what went wrong, and what to do next."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) and "subject" in text:
        return f"{text}: is a responder running? ('es reply SUBJECT MESSAGE' answers from a shell)"
    if isinstance(exc, CommandError) or is_remote(exc):
        return text
    found_at: Optional[str] = getattr(args, "found_at", None)
    ident = config.ident_from_env(getattr(args, "ident", None))
    if "passphrase" in text or isinstance(exc, errors.SecurityError):
        if "-i/--ident" in text:
            return text
        if ident is None:
            return f"{text}: the Event Service needs a passphrase: {PASSPHRASE_HINT}"
        return f"{text}: the passphrase given was not the Event Service's: {PASSPHRASE_HINT}"
    if isinstance(exc, (errors.CommunicationError, ConnectionError)) and found_at:
        how = "given with --esuri" if getattr(args, "esuri", None) else f"registered as {config.EVENTSERVICE_NAME}"
        return (f"the Event Service at {found_at} ({how}) does not answer ({text}): is es still running? "
                f"{START_IT}" + (", or check --esuri" if "--esuri" in how else ""))
    if isinstance(exc, errors.NamingError):
        return f"{text}: is es running? {START_IT}, or give its URI with --esuri"
    return text

