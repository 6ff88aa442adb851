"""Users over TLS: a client certificate whose common name is a user's ``cert`` logs in as
that user without a password (es does not need --tls-require-client-cert for that), and the
user's rules apply; password users still log in beside them. Real TLS es and client
processes (Pyro5 has one SSL switch per process), certificates from trustme."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import HELPERS, Cluster, wait_for
from test_tls import Certs, assert_refused, certs, client_call, start_tls_es, tls_env  # noqa: F401 (certs: fixture)

sys.path.insert(0, str(HELPERS))
from users_kit import users_file  # noqa: E402

CERT_USERS = r"""
[users.carol]
cert = "client"                    # the CN of certs.client_cert
publish = ['tls\..*']

[users.sam]
cert = "subscriber"                # the CN of certs.sub_cert
subscribe = ['tls\..*']

[users.erin]
cert = "stranger"                  # the CN of a certificate by a CA es does not trust

[users.dave]
password = "dave-pw"
admin = true
"""


@pytest.fixture
def tls_users_es(cluster: Cluster, certs: Certs, tmp_path: Path) -> Any:  # noqa: F811
    return start_tls_es(cluster, certs, "--users", str(users_file(tmp_path, CERT_USERS)))


def test_a_client_certificate_logs_in_as_its_user(cluster: Cluster, certs: Certs, tls_users_es: Any) -> None:  # noqa: F811
    es = tls_users_es
    sub = cluster.python("tls_subscriber.py", es.uri, "tls.news", name="sam, by certificate",
                         env=tls_env(certs.ca, certs.sub_cert, certs.sub_key, certs.sub_cert, certs.sub_key))
    sub.wait_line("^READY$", 30)
    carol = tls_env(certs.ca, certs.client_cert, certs.client_key)
    published = client_call(cluster, "publish", es.uri, "tls.news", "3", env=carol)
    assert published["ok"], published
    wait_for(lambda: len([line for line in sub.stdout if line.startswith("{")]) >= 3, 20,
             f"3 events at sam's subscriber:\n{sub.output()}")
    assert [json.loads(line)["msg"]["seq"] for line in sub.stdout if line.startswith("{")] == [0, 1, 2]
    refused = client_call(cluster, "publish", es.uri, "other.news", "1", env=carol)
    assert refused["error_type"] == "PermissionDenied" and "user 'carol' may not publish" in refused["error"]


def test_without_certificate_or_password_a_tls_client_is_refused(cluster: Cluster, certs: Certs,  # noqa: F811
                                                                 tls_users_es: Any) -> None:
    es = tls_users_es
    assert_refused(client_call(cluster, "call", es.uri, env=tls_env(certs.ca)))
    # a certificate naming a user, by a CA es does not trust: refused at the TLS handshake
    assert_refused(client_call(cluster, "call", es.uri, env=tls_env(certs.ca, certs.other_cert, certs.other_key)))
    # a password user needs no certificate
    dave = client_call(cluster, "call", es.uri, "--user", "dave", "--password", "dave-pw", env=tls_env(certs.ca))
    assert dave["ok"] and dave["published"] == 0, dave
    # carol's certificate does not log in as another user named without a password
    assert_refused(client_call(cluster, "call", es.uri, "--user", "dave",
                               env=tls_env(certs.ca, certs.client_cert, certs.client_key)))
