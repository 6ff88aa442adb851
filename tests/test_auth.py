"""The passphrase is proven, never sent: real Pyro5 daemons in this process, on loopback."""

from __future__ import annotations

import threading
from typing import Any, Iterator, List

import Pyro5.api
import pytest
from Pyro5 import errors
from Pyro5.api import Daemon, expose

from eventservice import auth
from eventservice.auth import AuthProxy, Authority
from eventservice.daemon import GuardedDaemon

SECRET = "open sesame"


@expose
class Echo:
    def echo(self, value: Any) -> Any:
        return value


class Serving:
    """A daemon serving an Echo in a thread; closed at the end."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.uri = daemon.register(Echo())
        self.thread = threading.Thread(target=daemon.requestLoop, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.daemon.shutdown()
        self.thread.join(5)


@pytest.fixture
def guarded() -> Iterator[Serving]:
    serving = Serving(GuardedDaemon("127.0.0.1", authority=Authority(SECRET)))
    yield serving
    serving.close()


class RecordingDaemon(Daemon):
    """An impostor: accepts anyone and keeps every handshake it is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.seen: List[Any] = []
        super().__init__(*args, **kwargs)

    def validateHandshake(self, conn: Any, data: Any) -> Any:
        self.seen.append(data)
        return "hello"


def test_the_right_passphrase_is_proven_and_calls_work(guarded: Serving) -> None:
    with AuthProxy(guarded.uri, SECRET) as proxy:
        assert proxy.echo([1, 2]) == [1, 2]


@pytest.mark.parametrize("secret", ["wrong", None])
def test_a_wrong_or_missing_passphrase_is_refused(guarded: Serving, secret: Any) -> None:
    with pytest.raises((errors.SecurityError, errors.CommunicationError)):
        with AuthProxy(guarded.uri, secret) as proxy:
            proxy.echo(1)


def test_a_plain_client_may_present_the_passphrase_itself(guarded: Serving) -> None:
    with Pyro5.api.Proxy(guarded.uri) as proxy:
        proxy._pyroHandshake = SECRET
        assert proxy.echo("x") == "x"


def test_clear_passphrases_can_be_refused() -> None:
    serving = Serving(GuardedDaemon("127.0.0.1", authority=Authority(SECRET, allow_clear=False)))
    try:
        with pytest.raises(errors.CommunicationError, match="in clear"):
            with Pyro5.api.Proxy(serving.uri) as proxy:
                proxy._pyroHandshake = SECRET
                proxy.echo(1)
        with AuthProxy(serving.uri, SECRET) as proxy:  # a proof is still welcome
            assert proxy.echo(2) == 2
    finally:
        serving.close()


def test_an_impostor_learns_nothing_and_is_refused() -> None:
    impostor = RecordingDaemon("127.0.0.1")
    serving = Serving(impostor)
    try:
        with pytest.raises(errors.SecurityError, match="did not prove"):
            with AuthProxy(serving.uri, SECRET) as proxy:
                proxy.echo(1)
        assert impostor.seen, "the impostor saw no handshake at all"
        assert SECRET not in repr(impostor.seen)
        assert auth.derive_key(SECRET).hex() not in repr(impostor.seen)
    finally:
        serving.close()


def test_a_daemon_that_asks_nothing_is_reached_when_proof_is_optional() -> None:
    impostor = RecordingDaemon("127.0.0.1")
    serving = Serving(impostor)
    try:
        with AuthProxy(serving.uri, SECRET, require=False) as proxy:
            assert proxy.echo(3) == 3
        assert SECRET not in repr(impostor.seen)
    finally:
        serving.close()


def test_a_challenged_connection_serves_nothing_before_its_proof(guarded: Serving) -> None:
    """A client that takes the challenge and then calls a method instead of proving is
    refused and disconnected."""

    class Skipping(AuthProxy):
        def _pyroValidateHandshake(self, response: Any) -> None:
            pass  # takes the challenge, proves nothing

    with pytest.raises((errors.SecurityError, errors.CommunicationError)):
        with Skipping(guarded.uri, SECRET) as proxy:
            proxy.echo(1)


def test_an_auth_proxy_is_never_sent_anywhere(guarded: Serving) -> None:
    with pytest.raises(TypeError):
        AuthProxy(guarded.uri, SECRET).__getstate__()


# -- users (es --users): the same exchange with a password per user ------------------------------

class Accounts:
    """Two users, as the service's users file would give them; carol only by certificate."""

    def password_of(self, user: str) -> Any:
        return {"alice": "alice-pw", "bob": SECRET}.get(user)

    def user_of_cert(self, common_name: str) -> Any:
        return "carol" if common_name == "carol-cn" else None


@pytest.fixture
def with_users() -> Iterator[Serving]:
    serving = Serving(GuardedDaemon("127.0.0.1", authority=Authority(accounts=Accounts())))
    yield serving
    serving.close()


def test_keys_are_salted_with_the_user_name() -> None:
    keys = {auth.derive_key(SECRET), auth.derive_key(SECRET, "alice"), auth.derive_key(SECRET, "bob")}
    assert len(keys) == 3


def test_a_user_proves_its_password_and_an_unknown_user_looks_like_a_wrong_password(with_users: Serving) -> None:
    with AuthProxy(with_users.uri, "alice-pw", user="alice") as proxy:
        assert proxy.echo(1) == 1
    texts = []
    for user, password in (("alice", "bob's?"), ("mallory", "alice-pw"), ("alice", SECRET)):
        with pytest.raises(errors.SecurityError) as info:
            with AuthProxy(with_users.uri, password, user=user) as proxy:
                proxy.echo(1)
        texts.append(str(info.value).replace(repr(user), "USER"))
    assert len(set(texts)) == 1 and "wrong password" in texts[0], texts
    with pytest.raises(errors.CommunicationError, match="knows users"):  # the passphrase alone is no user
        with AuthProxy(with_users.uri, SECRET) as proxy:
            proxy.echo(1)


def test_an_impostor_learns_no_password_of_a_user() -> None:
    impostor = RecordingDaemon("127.0.0.1")
    serving = Serving(impostor)
    try:
        with pytest.raises(errors.SecurityError, match="password of user 'alice'"):
            with AuthProxy(serving.uri, "alice-pw", user="alice") as proxy:
                proxy.echo(1)
        assert impostor.seen and impostor.seen[0]["user"] == "alice"
        assert "alice-pw" not in repr(impostor.seen)
        assert auth.derive_key("alice-pw", "alice").hex() not in repr(impostor.seen)
    finally:
        serving.close()


def test_a_user_may_be_known_by_a_certificate_only() -> None:
    authority = Authority(accounts=Accounts())
    assert authority.greet(None, "carol-cn").user == "carol"
    assert authority.greet({"user": "carol"}, "carol-cn").user == "carol"
    for data, common_name in ((None, None), (None, "stranger"), ({"user": "alice"}, "carol-cn")):
        with pytest.raises(errors.SecurityError):
            authority.greet(data, common_name)
