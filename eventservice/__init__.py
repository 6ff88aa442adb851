"""eventservice: a remote publish/subscribe event service for Python, built on Pyro5.

The heir of Pyro 3's Event Service. Importing the package registers :class:`Event`
with Pyro5's serializers, and hardens Pyro5 for network input in this process: marshal is
refused and decompression bounded (see :mod:`eventservice._compat.pyro5`).
"""

from ._compat.pyro5 import harden as _harden

_harden()

from .aio import AsyncPublisher, AsyncSubscriber, Subscription
from .clients import Publisher, Subscriber
from .config import EVENTSERVICE_NAME, VERSION as __version__, Settings
from .event import Event
from .errors import (EventServiceError, NameTakenError, NoResponderError, PermissionDenied, RemoteError,
                     ServiceNotFoundError)
from .server import EventServiceServer, start_es, start_es_loop
from .service import EventService
from .shortcuts import emit, register, unregister
from .typed import register_type

__all__ = [
    "EVENTSERVICE_NAME", "Event", "EventService", "EventServiceServer", "NameTakenError",
    "Publisher", "Settings", "Subscriber", "start_es", "start_es_loop", "__version__",
    "AsyncPublisher", "AsyncSubscriber", "Subscription", "emit", "register", "register_type", "unregister",
    "EventServiceError", "NoResponderError", "PermissionDenied", "RemoteError", "ServiceNotFoundError",
]
