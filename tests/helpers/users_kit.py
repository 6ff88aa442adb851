"""Helpers of the tests of users and permissions (es --users): the users file they share,
an ``es`` serving it, and what makes a subscriber or publisher log in as one of its users."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

from conftest import Cluster, EsProc, wait_for

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "monitor": "monitor-pw", "nobody": "nobody-pw"}

USERS = r"""
[users.alice]
password = "alice-pw"
publish = ['orders\..*', 'alice\..*', 'jobs']
subscribe = ['orders\..*', 'alice\..*', 'jobs', 'es\.presence\..*']
deny_publish = ['orders\.internal\..*']
deny_subscribe = ['orders\.secret\..*']
admin = true

[users.bob]
password = "bob-pw"
publish = ['bob\..*', 'orders\.public\..*']
subscribe = ['bob\..*', 'orders\.public\..*', 'jobs', 'es\.presence\..*']

[users.monitor]
password = "monitor-pw"
subscribe = ['.*']

[users.nobody]
password = "nobody-pw"
"""


def users_file(tmp_path: Path, text: str = USERS, name: str = "users.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def start_users_es(cluster: Cluster, path: Path, *more: str) -> EsProc:
    """An es without a name server serving the users file at ``path``."""
    return cluster.es("-N", "--users", str(path), *more)


def login(user: str) -> dict:
    """The keyword arguments that log a client in as ``user``."""
    return {"user": user, "password": PASSWORDS[user]}


def plain_proxy(es: EsProc, user: str) -> Any:
    """A plain Pyro5 proxy of the service, logged in by presenting user and password."""
    proxy = es.proxy()
    proxy._pyroHandshake = {"user": user, "password": PASSWORDS[user]}
    return proxy


def stats(es: EsProc) -> Any:
    with plain_proxy(es, "alice") as proxy:  # alice is the admin
        return proxy.stats(True)


def subjects_of(sub: Any) -> List[str]:
    return [event.subject for event in sub.recorder.events]


def wait_subject(sub: Any, subject: str, timeout: float = 10.0) -> None:
    """Wait until ``sub`` (a recording subscriber) received an event on ``subject``."""
    wait_for(lambda: subject in subjects_of(sub), timeout, f"an event on {subject!r} (have {subjects_of(sub)})")
