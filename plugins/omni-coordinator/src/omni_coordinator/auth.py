"""Optional ZMQ CURVE authentication and encryption for the coordinator's sockets.

The coordinator is the CURVE server on both its ROUTER and PUB sockets; stage
and hub clients are CURVE clients that must know the server's public key.  With
``authorized_client_keys`` set, the server also refuses clients whose public key
is not listed (checked by a ZAP handler).  Keys are Z85 strings or bytes, as
written by ``zmq.auth.create_certificates`` (``omni coordinator keygen``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

Key = str | bytes


def _z85(key: Key, what: str) -> bytes:
    raw = key.encode("ascii") if isinstance(key, str) else bytes(key)
    if len(raw) != 40:
        raise ValueError(f"{what} must be a 40-character Z85 CURVE key, got {len(raw)} characters")
    return raw


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support; install a pyzmq wheel with libsodium")


@dataclass(frozen=True, init=False)
class CurveServerKeys:
    """The coordinator's keypair and, optionally, the client public keys it accepts."""

    public_key: bytes
    secret_key: bytes = field(repr=False)
    authorized_client_keys: frozenset[bytes] | None = None  #: None: any client that knows public_key

    def __init__(self, public_key: Key, secret_key: Key, authorized_client_keys: Iterable[Key] | None = None) -> None:
        object.__setattr__(self, "public_key", _z85(public_key, "server public key"))
        object.__setattr__(self, "secret_key", _z85(secret_key, "server secret key"))
        allowed = None
        if authorized_client_keys is not None:
            allowed = frozenset(_z85(k, "authorized client key") for k in authorized_client_keys)
        object.__setattr__(self, "authorized_client_keys", allowed)

    @classmethod
    def from_files(
        cls, secret_certificate: str | os.PathLike[str], authorized_keys_dir: str | None = None
    ) -> CurveServerKeys:
        """Load ``*.key_secret`` and, optionally, every public certificate in a directory."""
        public, secret = zmq.auth.load_certificate(secret_certificate)
        if secret is None:
            raise ValueError(f"{secret_certificate} holds no secret key (use the .key_secret file)")
        allowed = None
        if authorized_keys_dir is not None:
            if not os.path.isdir(authorized_keys_dir):
                raise ValueError(f"authorized keys directory {authorized_keys_dir} does not exist")
            allowed = list(zmq.auth.load_certificates(authorized_keys_dir))
        return cls(public, secret, allowed)


@dataclass(frozen=True, init=False)
class CurveClientKeys:
    """What a stage or hub client needs: the server's public key and its own keypair."""

    server_public_key: bytes
    public_key: bytes
    secret_key: bytes = field(repr=False)

    def __init__(self, server_public_key: Key, public_key: Key | None = None, secret_key: Key | None = None) -> None:
        if (public_key is None) != (secret_key is None):
            raise ValueError("give both the client public and secret key, or neither (a fresh keypair)")
        if public_key is None or secret_key is None:
            _require_curve()
            public_key, secret_key = zmq.curve_keypair()
        object.__setattr__(self, "server_public_key", _z85(server_public_key, "server public key"))
        object.__setattr__(self, "public_key", _z85(public_key, "client public key"))
        object.__setattr__(self, "secret_key", _z85(secret_key, "client secret key"))

    @classmethod
    def from_files(
        cls, server_certificate: str | os.PathLike[str], client_secret_certificate: str | os.PathLike[str] | None = None
    ) -> CurveClientKeys:
        """Load the server's public certificate and, optionally, this client's ``*.key_secret``."""
        server_public, _ = zmq.auth.load_certificate(server_certificate)
        if client_secret_certificate is None:
            return cls(server_public)
        public, secret = zmq.auth.load_certificate(client_secret_certificate)
        if secret is None:
            raise ValueError(f"{client_secret_certificate} holds no secret key (use the .key_secret file)")
        return cls(server_public, public, secret)


class _AllowList:
    """ZAP credentials provider accepting a fixed set of client public keys."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys


def start_authenticator(ctx: zmq.Context, keys: CurveServerKeys | None) -> ThreadAuthenticator | None:
    """Start a ZAP handler on ``ctx`` when ``keys`` restrict clients; return it (stop it on close)."""
    if keys is None or keys.authorized_client_keys is None:
        return None
    authenticator = ThreadAuthenticator(ctx)
    authenticator.start()
    authenticator.configure_curve_callback("*", _AllowList(keys.authorized_client_keys))
    return authenticator


def secure_server_socket(sock: zmq.Socket, keys: CurveServerKeys | None) -> None:
    """Make ``sock`` a CURVE server (before bind); no-op without keys."""
    if keys is None:
        return
    _require_curve()
    sock.curve_secretkey = keys.secret_key
    sock.curve_publickey = keys.public_key
    sock.curve_server = True


def secure_client_socket(sock: zmq.Socket, keys: CurveClientKeys | None) -> None:
    """Make ``sock`` a CURVE client of the coordinator (before connect); no-op without keys."""
    if keys is None:
        return
    _require_curve()
    sock.curve_secretkey = keys.secret_key
    sock.curve_publickey = keys.public_key
    sock.curve_serverkey = keys.server_public_key
