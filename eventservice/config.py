"""Named defaults of the Event Service and the settings one service runs with.

Every setting is declared once, as a field of :class:`Settings` that carries its help, its
option group and its environment variable; ``es`` builds its options from those fields.
A default can be overridden by keyword (``Settings(queue_size=...)``), by the environment
where a field names a variable, or on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from typing import Any, Dict, List, Optional, Sequence

VERSION = "0.1.0"
EVENTSERVICE_NAME = "Pyro.EventService"  # name in the Pyro5 name server
IDENT_ENV = "EVENTSERVICE_IDENT"  # environment variable holding the passphrase
USER_ENV = "EVENTSERVICE_USER"  # environment variable holding a client's user name (es --users)
PASSWORD_ENV = "EVENTSERVICE_PASSWORD"  # ... and that user's password
USERS_ENV = "EVENTSERVICE_USERS"  # environment variable naming the users file of es

DEFAULT_QUEUE_SIZE = 10_000  # events waiting per subscriber
DEFAULT_OVERFLOW = "block"  # "block" or "drop" when a subscriber's queue is full
DEFAULT_BLOCK_TIMEOUT = 2.0  # seconds a publisher waits for room with "block"
DEFAULT_DELIVERY_THREADS = 8  # senders shared by all subscribers
DEFAULT_DELIVERY_TIMEOUT = 10.0  # seconds one call to a subscriber may take
DEFAULT_MAX_BATCH = 1000  # events per call to one subscriber, at most
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024  # bytes of one Pyro5 message
DEFAULT_MAX_SUBJECT_LENGTH = 512  # characters of a subject or pattern
DEFAULT_MAX_SUBSCRIPTIONS = 10_000  # subjects + patterns of one subscriber
DEFAULT_MAX_SUBSCRIBERS = 10_000  # subscribers of one service
DEFAULT_MAX_CONNECTIONS = 2_000  # client connections served at once
DEFAULT_HANDSHAKE_TIMEOUT = 5.0  # seconds a new connection may take to say hello
DEFAULT_HEARTBEAT = 10.0  # seconds a subscriber may stay silent before it must answer a heartbeat
DEFAULT_REQUEST_TIMEOUT = 5.0  # seconds a request waits for its first answer
MAX_REQUEST_TIMEOUT = 300.0  # seconds, the longest a request may ask to wait
PRESENCE_PREFIX = "es.presence."  # reserved subjects the service publishes presence events on
DEFAULT_REGISTER_INTERVAL = 5.0  # seconds between checks of the name server registration
DEFAULT_CLIENT_TIMEOUT = 5.0  # seconds a client call to the service may take
DEFAULT_RECONNECT_CHECK = 2.0  # seconds between a Subscriber's checks of its service

DEFAULT_SLOW_THREADS = 8  # threads serving slow subscribers, all of them together
DEFAULT_SLOW_POLICY = "drop"  # a slow subscriber's full queue drops events ("drop") or removes it ("remove")
DEFAULT_MAX_PATTERN_COST = 100_000_000  # matching work of one subscriber's patterns (see patterns.Pattern.cost)
DEFAULT_MAX_FILTER_NODES = 4_096  # filter conditions of one subscriber, all its subscriptions together
BACKBONE_URL_ENV = "EVENTSERVICE_BACKBONE"  # the --backbone URL(s), when not given otherwise
BACKBONE_KEY_ENV = "EVENTSERVICE_BACKBONE_KEY"  # the key that signs backbone envelopes
DEFAULT_BACKBONE_NAME = "eventservice"  # the event space on the engine
DEFAULT_BACKBONE_TIMEOUT = 10.0  # seconds to wait for the engine at start

FAST_SERIALIZER = "msgpack"  # between eventservice's own parts and the service (bytes travel as they are)
FALLBACK_SERIALIZER = "serpent"  # for values msgpack cannot carry

OVERFLOW_POLICIES = ("block", "drop")
SLOW_POLICIES = ("drop", "remove")


def ident_from_env(ident: Optional[str] = None) -> Optional[str]:
    """The passphrase given, else the one in ``EVENTSERVICE_IDENT``, else None."""
    if ident:
        return ident
    return os.environ.get(IDENT_ENV) or None


def client_name(name: Optional[str] = None) -> str:
    """The name a client shows the service (presence, stats): ``name``, else
    ``PROGRAM@HOST:PID`` of this process."""
    if name:
        return name
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else "python"
    return f"{program}@{socket.gethostname()}:{os.getpid()}"


def setting(default: Any, help: str, *, group: str = "delivery and limits", flag: Optional[str] = None,
            short: Optional[str] = None, env: Optional[str] = None, choices: Optional[Sequence[str]] = None,
            metavar: Optional[str] = None) -> Any:
    """A field of :class:`Settings` that also says how the command line offers it: its
    ``help``, the option ``group``, the ``flag`` (default: the name with dashes; for a bool
    that defaults to True, the flag turns it off), a ``short`` flag, the ``env`` variable
    read when no value is given, ``choices`` and ``metavar``."""
    factory = dataclasses.MISSING if not isinstance(default, list) else (lambda: list(default))
    metadata = {"help": help, "group": group, "flag": flag, "short": short, "env": env, "choices": choices,
                "metavar": metavar}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


ACCESS = "who may connect"
TLS = "TLS"
HOSTS = "many hosts: join other es through a messaging engine"


@dataclasses.dataclass
class Settings:
    """What one Event Service runs with: every option of ``es`` besides where it listens
    and its name server, declared once here (the command line is built from these fields).
    A value given by keyword wins; else, for the fields that name one, the environment
    variable; else the default. Validated on creation (``ValueError`` naming the option)."""

    ident: Optional[str] = setting(None, "passphrase clients must prove they know", group=ACCESS, short="-i",
                                   env=IDENT_ENV)
    allow_clear_ident: bool = setting(True, "refuse clients that present the passphrase (or a user's password) "
                                            "itself (plain Pyro5 clients setting _pyroHandshake): only proofs of "
                                            "it are accepted", group=ACCESS, flag="--no-clear-ident")
    users: Optional[str] = setting(None, "users file (TOML): each client logs in as one of its users and may "
                                         "publish and subscribe only as its rules say; reloaded on SIGHUP or "
                                         "'es reload'", group=ACCESS, env=USERS_ENV, metavar="FILE")
    tls_cert: Optional[str] = setting(None, "serve TLS with this certificate (PEM)", group=TLS, metavar="FILE")
    tls_key: Optional[str] = setting(None, "the certificate's private key", group=TLS, metavar="FILE")
    tls_ca: Optional[str] = setting(None, "CA trusted for subscribers' certificates (callbacks) and client "
                                          "certificates", group=TLS, metavar="FILE")
    tls_require_client_cert: bool = setting(False, "refuse clients without a certificate signed by --tls-ca",
                                            group=TLS)
    queue_size: int = setting(DEFAULT_QUEUE_SIZE, "events queued per subscriber")
    overflow: str = setting(DEFAULT_OVERFLOW, "when a subscriber's queue is full: block the publisher for a "
                                              "while, or drop", choices=OVERFLOW_POLICIES)
    block_timeout: float = setting(DEFAULT_BLOCK_TIMEOUT, "seconds a publisher waits for room with --overflow block")
    delivery_threads: int = setting(DEFAULT_DELIVERY_THREADS, "threads calling subscribers back (the fast lane)")
    delivery_timeout: float = setting(DEFAULT_DELIVERY_TIMEOUT, "seconds one call to a subscriber may take")
    slow_threads: int = setting(DEFAULT_SLOW_THREADS, "threads serving slow subscribers, all of them together")
    slow_policy: str = setting(DEFAULT_SLOW_POLICY, "a slow subscriber whose queue is full: drop its events, or "
                                                    "remove it", choices=SLOW_POLICIES)
    max_batch: int = setting(DEFAULT_MAX_BATCH, "events per call to one subscriber, at most")
    max_message_size: int = setting(DEFAULT_MAX_MESSAGE_SIZE, "largest message in bytes (inflated, if compressed)")
    max_subject_length: int = setting(DEFAULT_MAX_SUBJECT_LENGTH, "longest subject or pattern")
    max_subscriptions: int = setting(DEFAULT_MAX_SUBSCRIPTIONS, "subscriptions per subscriber")
    max_subscribers: int = setting(DEFAULT_MAX_SUBSCRIBERS, "subscribers of this service")
    max_pattern_cost: int = setting(DEFAULT_MAX_PATTERN_COST, "matching work one subscriber's patterns may "
                                                              "cost, in steps of re")
    max_filter_nodes: int = setting(DEFAULT_MAX_FILTER_NODES, "filter conditions of one subscriber")
    max_connections: int = setting(DEFAULT_MAX_CONNECTIONS, "client connections served at once (the idle ones "
                                                            "are closed first when room runs short)")
    handshake_timeout: float = setting(DEFAULT_HANDSHAKE_TIMEOUT, "seconds a new connection may take to "
                                                                  "authenticate")
    heartbeat: float = setting(DEFAULT_HEARTBEAT, "seconds a subscriber may stay silent before it must answer a "
                                                  "heartbeat; one that does not is removed (0: no heartbeats)")
    backbone: List[str] = setting([], "nats://[user:password@]host:port or tls://... (repeat, or separate by "
                                      "commas, for the seed servers of one NATS cluster; needs eventservice[nats]), "
                                      "redis://[:password@]host:port[/db] or rediss://... (needs "
                                      "eventservice[redis])", group=HOSTS, env=BACKBONE_URL_ENV, metavar="URL")
    backbone_name: str = setting(DEFAULT_BACKBONE_NAME, "the event space on the engine; es with the same name "
                                                        "share events", group=HOSTS, metavar="NAME")
    backbone_timeout: float = setting(DEFAULT_BACKBONE_TIMEOUT, "seconds to wait for the engine at start",
                                      group=HOSTS, metavar="SECONDS")
    backbone_key: Optional[str] = setting(None, "sign envelopes with this key and drop any not signed with it; "
                                                "without one, anyone who can publish on the engine can publish "
                                                "into the event space", group=HOSTS, env=BACKBONE_KEY_ENV,
                                          metavar="KEY")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            env = field.metadata.get("env")
            if env and not getattr(self, field.name) and os.environ.get(env):
                value: Any = os.environ[env]
                setattr(self, field.name, [value] if field.type in ("List[str]", list) else value)
        self.backbone = [part.strip() for value in self.backbone for part in value.split(",") if part.strip()]
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"--overflow must be one of {', '.join(OVERFLOW_POLICIES)}, not {self.overflow!r}")
        if self.slow_policy not in SLOW_POLICIES:
            raise ValueError(f"--slow-policy must be one of {', '.join(SLOW_POLICIES)}, not {self.slow_policy!r}")
        for name in ("queue_size", "delivery_threads", "max_batch", "max_message_size", "slow_threads",
                     "max_subject_length", "max_subscriptions", "max_subscribers", "max_connections",
                     "max_pattern_cost", "max_filter_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag_of(name)} must be at least 1")
        for name in ("block_timeout", "delivery_timeout", "handshake_timeout", "heartbeat"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag_of(name)} must not be negative")
        if self.backbone_timeout <= 0:
            raise ValueError("--backbone-timeout must be more than 0 seconds")
        if self.users and self.ident:
            raise ValueError("--users and -i/--ident (or $EVENTSERVICE_IDENT) exclude each other: with users, each "
                             "client proves its own user's password")
        if self.users and not os.path.isfile(self.users):
            raise ValueError(f"users file not found: {self.users}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
        if (self.tls_ca or self.tls_require_client_cert) and not self.tls_cert:
            raise ValueError("--tls-ca and --tls-require-client-cert need --tls-cert and --tls-key")
        if self.tls_require_client_cert and not self.tls_ca:
            raise ValueError("--tls-require-client-cert needs --tls-ca, the CA that signs client certificates")
        for path in (self.tls_cert, self.tls_key, self.tls_ca):
            if path and not os.path.isfile(path):
                raise ValueError(f"TLS file not found: {path}")

    # -- the command line ------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add an option for every field to ``parser`` (in groups); none has a default of its
        own, so :meth:`from_args` gives only what was typed and the rest comes from here."""
        groups: Dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            meta = field.metadata
            group = groups.get(meta["group"])
            if group is None:
                group = groups[meta["group"]] = parser.add_argument_group(meta["group"])
            flags = ([meta["short"]] if meta["short"] else []) + [flag_of(field.name)]
            default = field.default if field.default is not dataclasses.MISSING else []
            help_text = meta["help"] + _default_text(default, meta["env"])
            if field.type in ("bool", bool):
                action = "store_false" if default else "store_true"
                group.add_argument(*flags, dest=field.name, action=action, default=None, help=help_text)
            elif field.type in ("List[str]", list):
                group.add_argument(*flags, dest=field.name, action="append", default=None,
                                   metavar=meta["metavar"], help=help_text)
            else:
                kind = {"int": int, "float": float}.get(str(field.type), str)
                metavar = meta["metavar"] or {int: "N", float: "SECONDS"}.get(kind)
                group.add_argument(*flags, dest=field.name, type=kind, default=None, choices=meta["choices"],
                                   metavar=None if meta["choices"] else metavar, help=help_text)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        """The settings typed on the command line (see :meth:`add_arguments`)."""
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                 if getattr(args, f.name, None) is not None}
        return cls(**given)


def flag_of(name: str) -> str:
    """The command-line flag of the field ``name``."""
    for field in dataclasses.fields(Settings):
        if field.name == name:
            return field.metadata.get("flag") or "--" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


def _default_text(default: Any, env: Optional[str]) -> str:
    shown = f"${env}" if env else None
    if default not in (None, [], False, True):
        shown = f"{default:,}" if isinstance(default, int) and not isinstance(default, bool) else f"{default}"
        if env:
            shown += f", or ${env}"
    return f" (default: {shown})" if shown else ""
