"""Named defaults of the Event Service and the settings one service runs with.

Every default can be overridden by keyword (``Settings(queue_size=...)``), and the
passphrase also by the environment variable ``EVENTSERVICE_IDENT``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

VERSION = "0.1.0"
EVENTSERVICE_NAME = "Pyro.EventService"  # name in the Pyro5 name server
IDENT_ENV = "EVENTSERVICE_IDENT"  # environment variable holding the passphrase

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
BACKBONE_KEY_ENV = "EVENTSERVICE_BACKBONE_KEY"  # the key that signs backbone envelopes

FAST_SERIALIZER = "msgpack"  # between eventservice's own parts and the service (bytes travel as they are)
FALLBACK_SERIALIZER = "serpent"  # for values msgpack cannot carry

OVERFLOW_POLICIES = ("block", "drop")
SLOW_POLICIES = ("drop", "remove")


def ident_from_env(ident: Optional[str] = None) -> Optional[str]:
    """The passphrase given, else the one in ``EVENTSERVICE_IDENT``, else None."""
    if ident:
        return ident
    return os.environ.get(IDENT_ENV) or None


@dataclasses.dataclass
class Settings:
    """What one Event Service runs with. Validated on creation."""

    queue_size: int = DEFAULT_QUEUE_SIZE
    overflow: str = DEFAULT_OVERFLOW
    block_timeout: float = DEFAULT_BLOCK_TIMEOUT
    delivery_threads: int = DEFAULT_DELIVERY_THREADS
    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT
    max_batch: int = DEFAULT_MAX_BATCH
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_subject_length: int = DEFAULT_MAX_SUBJECT_LENGTH
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    heartbeat: float = DEFAULT_HEARTBEAT  # 0: no liveness checks
    slow_threads: int = DEFAULT_SLOW_THREADS
    slow_policy: str = DEFAULT_SLOW_POLICY
    max_pattern_cost: int = DEFAULT_MAX_PATTERN_COST
    max_filter_nodes: int = DEFAULT_MAX_FILTER_NODES
    ident: Optional[str] = None
    allow_clear_ident: bool = True  # plain Pyro5 clients may present the passphrase itself
    tls_cert: Optional[str] = None  # the service's certificate (PEM); enables TLS
    tls_key: Optional[str] = None  # its private key
    tls_ca: Optional[str] = None  # CA trusted for subscribers' and clients' certificates
    tls_require_client_cert: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {self.overflow!r}")
        if self.slow_policy not in SLOW_POLICIES:
            raise ValueError(f"slow_policy must be one of {SLOW_POLICIES}, not {self.slow_policy!r}")
        for name in ("queue_size", "delivery_threads", "max_batch", "max_message_size", "slow_threads",
                     "max_subject_length", "max_subscriptions", "max_subscribers", "max_connections",
                     "max_pattern_cost", "max_filter_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("block_timeout", "delivery_timeout", "handshake_timeout", "heartbeat"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        self.ident = ident_from_env(self.ident)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
        if (self.tls_ca or self.tls_require_client_cert) and not self.tls_cert:
            raise ValueError("--tls-ca and --tls-require-client-cert need --tls-cert and --tls-key")
        if self.tls_require_client_cert and not self.tls_ca:
            raise ValueError("--tls-require-client-cert needs --tls-ca, the CA that signs client certificates")
        for path in (self.tls_cert, self.tls_key, self.tls_ca):
            if path and not os.path.isfile(path):
                raise ValueError(f"TLS file not found: {path}")
