"""The users file of the runs with users (``es bench --users``): the publishers and
subscribers log in as one user whose rules allow what the scenarios publish and subscribe
to (among a few other rules, deny rules too, as a real file has), the coordinator as an
admin that may call ``stats()``. Written to a directory of its own, removed by ``close``."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from typing import Dict

USER = "bench"  # the publishers and subscribers
ADMIN = "bench-admin"  # the coordinator, for stats()
USER_ENV, PASSWORD_ENV = "EVENTSERVICE_USER", "EVENTSERVICE_PASSWORD"

TEMPLATE = r"""[users.{user}]
password = "{password}"
publish = ['orders\..*', 'stockquotes\..*', 'bench\..*']
subscribe = ['orders\..*', 'stockquotes\..*', 'es\.presence\..*']
deny_publish = ['stockquotes\.internal\..*', 'orders\.audit\..*']
deny_subscribe = ['stockquotes\.internal\..*']

[users.{admin}]
password = "{admin_password}"
admin = true

[users.reader]
password = "{reader_password}"
subscribe = ['.*']
deny_subscribe = ['orders\..*']
"""


class BenchUsers:
    """A users file for one run: its ``path``, the environment of the children that log in
    as :data:`USER`, and the handshake of the admin (a plain Pyro5 proxy's)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="es-bench-users-")
        self.path = os.path.join(self.dir, "users.toml")
        password, admin_password = secrets.token_hex(12), secrets.token_hex(12)
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(TEMPLATE.format(user=USER, password=password, admin=ADMIN, admin_password=admin_password,
                                    reader_password=secrets.token_hex(12)))
        self.env: Dict[str, str] = {USER_ENV: USER, PASSWORD_ENV: password}
        self.admin_handshake = {"user": ADMIN, "password": admin_password}

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
