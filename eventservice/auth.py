"""Proving a passphrase, or a user's password, without sending it: a challenge-response
over Pyro5's handshake.

Both ends know a secret (the service's passphrase, or the password of a user of
``es --users``). Neither sends it: each proves it knows the key derived from it
(PBKDF2-SHA256, salted with the user's name for a password) with an HMAC over two fresh
nonces.

1. The client's handshake (``_pyroHandshake``) is ``{"es-auth": 1, "nonce": CN, ...}``, with
   ``"user": NAME`` when it logs in as a user. The dict may carry more keys; a daemon
   ignores those it does not know.
2. The daemon answers ``{"es-auth": 1, "nonce": SN, "proof": HMAC(key, "server" CN SN)}``.
   The client checks that proof first: an impostor (a foreign object registered under the
   service's name, say) cannot make it, and gets nothing it could reuse. For a user it does
   not know, the daemon answers with a key nobody knows, so that a wrong password and an
   unknown user look the same to the client.
3. The client then calls :data:`PROOF_METHOD` with ``HMAC(key, "client" SN CN)``; until that
   call succeeds the daemon serves nothing else on the connection.

A listener sees nonces and proofs that are good for that one connection only. (Someone who
can sit between client and service can still relay a whole exchange: TLS with the service's
certificate checked is the answer to that.)

Plain Pyro5 clients may still present the passphrase itself as their handshake string, or
``{"user": NAME, "password": PASSWORD}``; :class:`Authority` accepts that unless told to
refuse it (``es --no-clear-ident``). With users, a TLS client certificate whose common name
is a user's ``cert`` logs in as that user without a password.

Besides the proof, the handshake dict of eventservice's clients says who they are (with a
passphrase or without): ``"name"``, and ``"announce"`` for a publisher that wants its
presence announced (:func:`hello_of` reads them on the daemon's side).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
from typing import Any, Dict, NamedTuple, Optional, Protocol

from Pyro5 import errors
from Pyro5.client import Proxy

from ._compat.pyro5 import invoke
from .config import PASSWORD_ENV, USER_ENV, ident_from_env

log = logging.getLogger(__name__)

AUTH_TAG = "es-auth"  # marks the handshake dicts of this exchange
PROOF_METHOD = "_es_prove"  # the first call on a challenged connection
NONCE_BYTES = 16
KDF_ITERATIONS = 20_000  # PBKDF2 rounds: slows down guessing a passphrase from a captured exchange
KDF_SALT = b"eventservice/auth/1"
NO_USERS = ("this Event Service knows users: log in as one (-u/--user and --password, or $EVENTSERVICE_USER and "
            "$EVENTSERVICE_PASSWORD; a plain Pyro5 client sets _pyroHandshake to {'user': ..., 'password': ...}), "
            "or present a user's TLS client certificate")


@functools.lru_cache(maxsize=1024)
def derive_key(secret: str, user: Optional[str] = None) -> bytes:
    """The key both ends prove knowledge of: from the passphrase, or from a user's password
    salted with the user's name (computed once per secret and process)."""
    salt = KDF_SALT if user is None else KDF_SALT + b"/user/" + user.encode("utf-8", "surrogatepass")
    return hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8", "surrogatepass"), salt, KDF_ITERATIONS)


class Credentials(NamedTuple):
    """What a client proves: the passphrase (``user`` None), or the password of ``user``
    (``secret`` None: a user known by its TLS client certificate)."""

    secret: Optional[str] = None
    user: Optional[str] = None


def client_credentials(ident: Optional[str] = None, user: Optional[str] = None,
                       password: Optional[str] = None) -> Credentials:
    """The credentials a client gives, else those in the environment: a user
    (``$EVENTSERVICE_USER`` with ``$EVENTSERVICE_PASSWORD``) or the passphrase
    (``$EVENTSERVICE_IDENT``). A user or passphrase given wins over the environment."""
    if user is None and ident is None:
        user = os.environ.get(USER_ENV) or None
    if user is not None:
        return Credentials(password or os.environ.get(PASSWORD_ENV) or None, user)
    return Credentials(ident_from_env(ident))


class Accounts(Protocol):
    """The users a daemon knows (see :class:`eventservice.users.Users`)."""

    def password_of(self, user: str) -> Optional[str]:
        """The password of ``user``; None for an unknown user or one without a password."""

    def user_of_cert(self, common_name: str) -> Optional[str]:
        """The user whose ``cert`` is ``common_name``, or None."""


class OneUser:
    """:class:`Accounts` of one user: what a subscriber's daemon demands of the service."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def password_of(self, user: str) -> Optional[str]:
        return self.password if user == self.user else None

    def user_of_cert(self, common_name: str) -> Optional[str]:
        return None


def _proof(key: bytes, role: bytes, first: str, second: str) -> str:
    return hmac.new(key, role + b"|" + first.encode() + b"|" + second.encode(), hashlib.sha256).hexdigest()


def _nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


MAX_NAME_LENGTH = 200  # characters of a client's name kept


def hello_of(data: Any) -> Dict[str, Any]:
    """What a client's handshake says about it: ``name`` (a str, cut to MAX_NAME_LENGTH)
    and ``announce`` (True) when it says so; nothing for other handshakes."""
    hello: Dict[str, Any] = {}
    if type(data) is dict:
        name = data.get("name")
        if type(name) is str and name:
            hello["name"] = name[:MAX_NAME_LENGTH]
        if data.get("announce") is True:
            hello["announce"] = True
    return hello


def is_auth_hello(data: Any) -> bool:
    """True if a handshake is the opening of this exchange."""
    return type(data) is dict and data.get(AUTH_TAG) == 1 and type(data.get("nonce")) is str \
        and 0 < len(data["nonce"]) <= 4 * NONCE_BYTES


class Pending:
    """What a daemon remembers of a challenged connection until its proof arrives: the
    key, the nonces, and the user logging in (None: the passphrase)."""

    __slots__ = ("key", "client_nonce", "server_nonce", "user")

    def __init__(self, key: bytes, client_nonce: str, server_nonce: str, user: Optional[str] = None) -> None:
        self.key, self.client_nonce, self.server_nonce, self.user = key, client_nonce, server_nonce, user

    def check(self, proof: Any) -> bool:
        """Whether ``proof`` is the client's answer to this challenge (constant time)."""
        if type(proof) is not str:
            return False
        expected = _proof(self.key, b"client", self.server_nonce, self.client_nonce)
        return hmac.compare_digest(proof.encode(), expected.encode())


class Greeting(NamedTuple):
    """A daemon's answer to a handshake: what to send back, the challenge whose proof must
    follow (None: none), and the user the connection is logged in as (None: no user)."""

    answer: Any
    pending: Optional[Pending] = None
    user: Optional[str] = None


class Authority:
    """Decides, for a daemon, who may connect: ``secret`` is the passphrase, ``accounts``
    the users (for ``es --users``; it may be replaced while serving); with neither, anybody.
    ``allow_clear`` lets plain Pyro5 clients present the passphrase or password itself."""

    def __init__(self, secret: Optional[str] = None, allow_clear: bool = True,
                 accounts: Optional[Accounts] = None) -> None:
        self.secret = secret
        self.allow_clear = allow_clear
        self.accounts = accounts
        self._key = derive_key(secret) if secret else None

    @property
    def open(self) -> bool:
        """True when nobody needs to prove anything."""
        return self._key is None and self.accounts is None

    def greet(self, data: Any, common_name: Optional[str] = None) -> Greeting:
        """The answer to a client's handshake ``data`` (``common_name``: of its verified TLS
        client certificate, if any). Raises ``SecurityError`` when the client is refused."""
        if self.accounts is not None:
            return self._greet_user(self.accounts, data, common_name)
        if self._key is None:
            return Greeting("hello")
        if is_auth_hello(data):
            return self._challenge(self._key, data["nonce"])
        if isinstance(data, str):
            self._check_clear()
            if hmac.compare_digest(data.encode("utf-8"), self.secret.encode("utf-8")):  # type: ignore[union-attr]
                return Greeting("hello")
        raise errors.SecurityError("passphrase refused (give the Event Service's passphrase: -i/--ident or "
                                   "$EVENTSERVICE_IDENT)")

    def _greet_user(self, accounts: Accounts, data: Any, common_name: Optional[str]) -> Greeting:
        named = data.get("user") if type(data) is dict else None
        if named is not None and type(named) is not str:
            raise errors.SecurityError("the user name must be a str")
        if is_auth_hello(data) and named is not None:
            password = accounts.password_of(named)
            if password is None:
                log.info("refused user %r: unknown, or without a password", named)
                return self._challenge(secrets.token_bytes(32), data["nonce"])  # nobody can prove this one
            return self._challenge(derive_key(password, named), data["nonce"], named)
        if named is not None and "password" in data:
            self._check_clear()
            password = accounts.password_of(named)
            given = data["password"]
            if password is not None and type(given) is str and \
                    hmac.compare_digest(given.encode("utf-8", "surrogatepass"), password.encode("utf-8")):
                return Greeting("hello", None, named)
            log.info("refused user %r: unknown, or a wrong password", named)
            raise errors.SecurityError(f"user {named!r} refused: unknown, or a wrong password")
        by_cert = accounts.user_of_cert(common_name) if common_name else None
        if by_cert is not None and named in (None, by_cert):
            return Greeting("hello", None, by_cert)
        if named is not None:
            raise errors.SecurityError(f"user {named!r} refused: give its password, or its TLS client certificate")
        raise errors.SecurityError(NO_USERS)

    @staticmethod
    def _challenge(key: bytes, client_nonce: str, user: Optional[str] = None) -> Greeting:
        server_nonce = _nonce()
        answer = {AUTH_TAG: 1, "nonce": server_nonce, "proof": _proof(key, b"server", client_nonce, server_nonce)}
        return Greeting(answer, Pending(key, client_nonce, server_nonce, user))

    def _check_clear(self) -> None:
        if not self.allow_clear:
            raise errors.SecurityError("refused: this Event Service does not accept a passphrase or password in "
                                       "clear (es --no-clear-ident); use eventservice's clients, or TLS")


class AuthProxy(Proxy):  # type: ignore[misc]
    """A Pyro5 proxy that proves ``secret`` (the passphrase, or with ``user`` that user's
    password) by the exchange above, never sending it.

    Without a secret it connects like a plain proxy (with ``user`` alone, it names the user
    its TLS client certificate stands for). With one and ``require=True`` (how clients reach
    the service), it refuses a daemon that cannot prove the same secret (an impostor, a
    service started without it, or one that does not know this user and password). With
    ``require=False`` (how the service calls subscribers back) it proves the secret to a
    daemon that asks, and connects to one that does not ask without proving or sending
    anything."""

    def __init__(self, uri: Any, secret: Optional[str] = None, require: bool = True,
                 user: Optional[str] = None, hello: Optional[Dict[str, Any]] = None) -> None:
        self._es_key = derive_key(secret, user) if secret else None
        self._es_user = user
        self._es_require = require
        self._es_nonce = ""
        self._es_hello = dict(hello or {})  # who this client is: "name", "announce" (see hello_of)
        super().__init__(uri)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_es_"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __getstate__(self) -> Any:
        raise TypeError("an AuthProxy carries a key and is not sent anywhere; pass a plain Proxy")

    def __copy__(self) -> "AuthProxy":
        copy = object.__new__(type(self))
        for name in ("_es_key", "_es_user", "_es_require"):
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "_es_nonce", "")
        object.__setattr__(copy, "_es_hello", self._es_hello)
        Proxy.__setstate__(copy, Proxy.__getstate__(self))
        copy._pyroTimeout = self._pyroTimeout
        copy._pyroMaxRetries = self._pyroMaxRetries
        return copy

    @property
    def _pyroHandshake(self) -> Any:
        named = {} if self._es_user is None else {"user": self._es_user}
        if self._es_key is None:
            return {**self._es_hello, **named} or None
        self._es_nonce = _nonce()
        return {AUTH_TAG: 1, "nonce": self._es_nonce, **self._es_hello, **named}

    @_pyroHandshake.setter
    def _pyroHandshake(self, value: Any) -> None:
        pass  # the handshake is made anew for every connection

    def _pyroValidateHandshake(self, response: Any) -> None:
        if self._es_key is None:
            return
        where = self._pyroUri.location
        if not (type(response) is dict and response.get(AUTH_TAG) == 1 and type(response.get("nonce")) is str
                and type(response.get("proof")) is str):
            if not self._es_require:
                return  # the daemon asks for nothing: nothing was sent, nothing to prove
            self._pyroRelease()
            raise errors.SecurityError(f"the service at {where} did not prove it knows the {self._secret_name} "
                                       "(started without it, or not the Event Service): refusing it")
        expected = _proof(self._es_key, b"server", self._es_nonce, response["nonce"])
        if not hmac.compare_digest(expected.encode(), response["proof"].encode()):
            self._pyroRelease()
            raise errors.SecurityError(f"the service at {where} gave a wrong proof of the {self._secret_name} ("
                                       + ("a wrong password, or a user it does not know" if self._es_user else
                                          "a different passphrase") + ", or an impostor): refusing it")
        answer = _proof(self._es_key, b"client", response["nonce"], self._es_nonce)
        try:
            invoke(self, PROOF_METHOD, (answer,))
        except BaseException:
            self._pyroRelease()
            raise

    @property
    def _secret_name(self) -> str:
        return "passphrase" if self._es_user is None else f"password of user {self._es_user!r}"


def proxy(uri: Any, secret: Optional[str] = None, serializer: Optional[str] = None,
          timeout: Optional[float] = None, require: bool = True, user: Optional[str] = None,
          hello: Optional[Dict[str, Any]] = None) -> AuthProxy:
    """An :class:`AuthProxy` of ``uri`` with the given serializer and call timeout, saying
    ``hello`` (see :func:`hello_of`) in its handshake."""
    made = AuthProxy(uri, secret, require, user, hello)
    if serializer is not None:
        made._pyroSerializer = serializer
    if timeout is not None:
        made._pyroTimeout = timeout
    return made
