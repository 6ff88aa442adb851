"""Proving a passphrase without sending it: a challenge-response over Pyro5's handshake.

Both ends know a secret (the service's passphrase). Neither sends it: each proves it knows
the key derived from it (PBKDF2-SHA256) with an HMAC over two fresh nonces.

1. The client's handshake (``_pyroHandshake``) is ``{"es-auth": 1, "nonce": CN, ...}``.
2. The daemon answers ``{"es-auth": 1, "nonce": SN, "proof": HMAC(key, "server" CN SN)}``.
   The client checks that proof first: an impostor (a foreign object registered under the
   service's name, say) cannot make it, and gets nothing it could reuse.
3. The client then calls :data:`PROOF_METHOD` with ``HMAC(key, "client" SN CN)``; until that
   call succeeds the daemon serves nothing else on the connection.

A listener sees nonces and proofs that are good for that one connection only. (Someone who
can sit between client and service can still relay a whole exchange: TLS with the service's
certificate checked is the answer to that.)

Plain Pyro5 clients may still present the passphrase itself as their handshake string;
:class:`Authority` accepts that unless told to refuse it (``es --no-clear-ident``).

Besides the proof, the handshake dict of eventservice's clients says who they are (with a
passphrase or without): ``"name"``, and ``"announce"`` for a publisher that wants its
presence announced (:func:`hello_of` reads them on the daemon's side).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from typing import Any, Dict, Optional

from Pyro5 import errors
from Pyro5.client import Proxy

from ._compat.pyro5 import invoke

log = logging.getLogger(__name__)

AUTH_TAG = "es-auth"  # marks the handshake dicts of this exchange
PROOF_METHOD = "_es_prove"  # the first call on a challenged connection
NONCE_BYTES = 16
KDF_ITERATIONS = 20_000  # PBKDF2 rounds: slows down guessing a passphrase from a captured exchange
KDF_SALT = b"eventservice/auth/1"


@functools.lru_cache(maxsize=64)
def derive_key(secret: str) -> bytes:
    """The key both ends prove knowledge of (computed once per secret and process)."""
    return hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), KDF_SALT, KDF_ITERATIONS)


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
    """What a daemon remembers of a challenged connection until its proof arrives."""

    __slots__ = ("key", "client_nonce", "server_nonce")

    def __init__(self, key: bytes, client_nonce: str, server_nonce: str) -> None:
        self.key, self.client_nonce, self.server_nonce = key, client_nonce, server_nonce

    def check(self, proof: Any) -> bool:
        """Whether ``proof`` is the client's answer to this challenge (constant time)."""
        if type(proof) is not str:
            return False
        expected = _proof(self.key, b"client", self.server_nonce, self.client_nonce)
        return hmac.compare_digest(proof.encode(), expected.encode())


class Authority:
    """Decides, for a daemon, who may connect: ``secret`` is the passphrase (None: anybody);
    ``allow_clear`` lets plain Pyro5 clients present it as their handshake string."""

    def __init__(self, secret: Optional[str], allow_clear: bool = True) -> None:
        self.secret = secret
        self.allow_clear = allow_clear
        self._key = derive_key(secret) if secret else None

    @property
    def open(self) -> bool:
        """True when nobody needs to prove anything."""
        return self._key is None

    def greet(self, data: Any) -> "tuple[Any, Optional[Pending]]":
        """The answer to a client's handshake ``data``, and the pending challenge if its proof
        must follow. Raises ``SecurityError`` when the client is refused."""
        if self._key is None:
            return "hello", None
        if is_auth_hello(data):
            server_nonce = _nonce()
            answer = {AUTH_TAG: 1, "nonce": server_nonce,
                      "proof": _proof(self._key, b"server", data["nonce"], server_nonce)}
            return answer, Pending(self._key, data["nonce"], server_nonce)
        if isinstance(data, str):
            if not self.allow_clear:
                raise errors.SecurityError("passphrase refused: this Event Service does not accept it in clear "
                                           "(es --no-clear-ident); use eventservice's clients, or TLS")
            if hmac.compare_digest(data.encode("utf-8"), self.secret.encode("utf-8")):  # type: ignore[union-attr]
                return "hello", None
        raise errors.SecurityError("passphrase refused (give the Event Service's passphrase: -i/--ident or "
                                   "$EVENTSERVICE_IDENT)")


class AuthProxy(Proxy):  # type: ignore[misc]
    """A Pyro5 proxy that proves ``secret`` by the exchange above, never sending it.

    Without a secret it connects like a plain proxy. With one and ``require=True`` (how
    clients reach the service), it refuses a daemon that cannot prove the same secret (an
    impostor, or a service started without it). With ``require=False`` (how the service
    calls subscribers back) it proves the secret to a daemon that asks, and connects to one
    that does not ask without proving or sending anything."""

    def __init__(self, uri: Any, secret: Optional[str] = None, require: bool = True,
                 hello: Optional[Dict[str, Any]] = None) -> None:
        self._es_key = derive_key(secret) if secret else None
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
        object.__setattr__(copy, "_es_key", self._es_key)
        object.__setattr__(copy, "_es_require", self._es_require)
        object.__setattr__(copy, "_es_nonce", "")
        object.__setattr__(copy, "_es_hello", self._es_hello)
        Proxy.__setstate__(copy, Proxy.__getstate__(self))
        copy._pyroTimeout = self._pyroTimeout
        copy._pyroMaxRetries = self._pyroMaxRetries
        return copy

    @property
    def _pyroHandshake(self) -> Any:
        if self._es_key is None:
            return dict(self._es_hello) or None
        self._es_nonce = _nonce()
        return {AUTH_TAG: 1, "nonce": self._es_nonce, **self._es_hello}

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
            raise errors.SecurityError(f"the service at {where} did not prove it knows the passphrase (started "
                                       "without one, or not the Event Service): refusing it")
        expected = _proof(self._es_key, b"server", self._es_nonce, response["nonce"])
        if not hmac.compare_digest(expected.encode(), response["proof"].encode()):
            self._pyroRelease()
            raise errors.SecurityError(f"the service at {where} gave a wrong proof of the passphrase (a different "
                                       "passphrase, or an impostor): refusing it")
        answer = _proof(self._es_key, b"client", response["nonce"], self._es_nonce)
        try:
            invoke(self, PROOF_METHOD, (answer,))
        except BaseException:
            self._pyroRelease()
            raise


def proxy(uri: Any, secret: Optional[str] = None, serializer: Optional[str] = None,
          timeout: Optional[float] = None, require: bool = True, hello: Optional[Dict[str, Any]] = None) -> AuthProxy:
    """An :class:`AuthProxy` of ``uri`` with the given serializer and call timeout, saying
    ``hello`` (see :func:`hello_of`) in its handshake."""
    made = AuthProxy(uri, secret, require, hello)
    if serializer is not None:
        made._pyroSerializer = serializer
    if timeout is not None:
        made._pyroTimeout = timeout
    return made

