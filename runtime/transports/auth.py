"""Cluster-secret handshake: every control and data connection proves it knows the secret (HMAC).

Mutual challenge-response over a connected socket, run before any other byte is trusted:

    server -> client: MAGIC, server nonce (32 B)
    client -> server: client nonce (32 B), HMAC(secret, "client" | server nonce | client nonce | name)
    server -> client: HMAC(secret, "server" | client nonce | server nonce | name) | server name

The secret never crosses the wire, nonces make replays useless and `hmac.compare_digest` keeps the
comparison constant-time. Both ends then hold a `Session` (keys from the secret and both nonces) that
tags every later frame (`dualpath.runtime.transports.session`). A peer that fails raises `AuthError`
naming its address; the accept loop (`dualpath.runtime.transports.accepts`) logs and closes it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import socket
import struct

from dualpath.errors import DualpathError, SpecError
from dualpath.runtime.transports.session import Session

LOG = logging.getLogger("dualpath.runtime.transports.auth")

MAGIC = b"DPAUTH01"
NONCE_BYTES = 32
MAC_BYTES = 32
MAX_NAME_BYTES = 255
DEFAULT_BIND_HOST = "127.0.0.1"  # engines bind to loopback unless told otherwise
SECRET_ENV = "DUALPATH_SECRET"
MIN_SECRET_BYTES = 16
HANDSHAKE_TIMEOUT_S = 10.0


class AuthError(DualpathError):
    """The peer could not prove knowledge of the cluster secret (or broke the handshake)."""


def generate_secret() -> bytes:
    """A fresh random 32-byte cluster secret."""
    return secrets.token_bytes(32)


def check_secret(secret: bytes | str) -> bytes:
    """Normalise a secret (str is UTF-8 encoded) and refuse short ones."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < MIN_SECRET_BYTES:
        shown = "<hidden>" if isinstance(secret, (bytes, bytearray)) else secret
        raise SpecError("cluster secret", "secret", shown, f"at least {MIN_SECRET_BYTES} bytes")
    return bytes(secret)


def secret_from_env(var: str = SECRET_ENV) -> bytes:
    """Read the cluster secret from an environment variable (hex or plain text)."""
    value = os.environ.get(var)
    if not value:
        raise SpecError("environment", var, None, "the cluster secret (e.g. 64 hex digits)")
    try:
        return check_secret(bytes.fromhex(value))
    except ValueError:
        return check_secret(value)


def _mac(secret: bytes, label: bytes, first: bytes, second: bytes, name: bytes) -> bytes:
    return hmac.new(secret, label + first + second + name, hashlib.sha256).digest()


_GROW_BYTES = 1 << 20


def recv_exact(sock: socket.socket, nbytes: int) -> bytes:
    """Read exactly `nbytes` (control messages; data goes through recv_into). Memory grows with the
    bytes that arrive (doubling from 1 MiB), never with what a length field announced."""
    buf = bytearray(min(nbytes, _GROW_BYTES))
    got = 0
    while got < nbytes:
        if got == len(buf):
            buf.extend(bytes(min(nbytes - got, len(buf))))
        with memoryview(buf) as view, view[got:] as rest:  # both released before `buf` may grow
            n = sock.recv_into(rest)
        if n == 0:
            raise ConnectionError(f"peer closed after {got} of {nbytes} bytes")
        got += n
    return bytes(buf)


def _pack_name(name: str) -> bytes:
    raw = name.encode()[:MAX_NAME_BYTES]
    return struct.pack("B", len(raw)) + raw


def _recv_name(sock: socket.socket) -> bytes:
    (length,) = struct.unpack("B", recv_exact(sock, 1))
    return recv_exact(sock, length)


def _peer_label(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "<unknown peer>"


def server_handshake(sock: socket.socket, secret: bytes, name: str = "") -> tuple[str, Session]:
    """Authenticate the client on an accepted socket; returns the client's declared name and the
    session. Raises `AuthError` naming the address (and the name the client gave) when it fails; the
    caller logs it and closes the socket."""
    label = _peer_label(sock)
    old_timeout = sock.gettimeout()
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    try:
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        sock.sendall(MAGIC + server_nonce)
        client_nonce = recv_exact(sock, NONCE_BYTES)
        client_name = _recv_name(sock)
        client_mac = recv_exact(sock, MAC_BYTES)
        expected = _mac(secret, b"client", server_nonce, client_nonce, client_name)
        if not hmac.compare_digest(client_mac, expected):
            raise AuthError(f"refused peer {label} ({client_name.decode(errors='replace')!r}): "
                            "bad cluster-secret proof")
        own = name.encode()[:MAX_NAME_BYTES]
        sock.sendall(_mac(secret, b"server", client_nonce, server_nonce, own) + _pack_name(name))
        return client_name.decode(errors="replace"), Session.derive(secret, server_nonce, client_nonce, server=True)
    except (OSError, ConnectionError, struct.error) as exc:
        raise AuthError(f"refused peer {label}: handshake broken ({exc})") from exc
    finally:
        sock.settimeout(old_timeout)


def client_handshake(sock: socket.socket, secret: bytes, name: str = "") -> tuple[str, Session]:
    """Prove the secret to the server and check the server's proof; returns the server's name and
    the session."""
    label = _peer_label(sock)
    old_timeout = sock.gettimeout()
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    try:
        hello = recv_exact(sock, len(MAGIC) + NONCE_BYTES)
        if hello[: len(MAGIC)] != MAGIC:
            raise AuthError(f"server {label} does not speak the dualpath handshake")
        server_nonce = hello[len(MAGIC) :]
        client_nonce = secrets.token_bytes(NONCE_BYTES)
        own = name.encode()[:MAX_NAME_BYTES]
        sock.sendall(client_nonce + _pack_name(name) + _mac(secret, b"client", server_nonce, client_nonce, own))
        server_mac = recv_exact(sock, MAC_BYTES)
        server_name = _recv_name(sock)
        expected = _mac(secret, b"server", client_nonce, server_nonce, server_name)
        if not hmac.compare_digest(server_mac, expected):
            LOG.warning("refused server %s: bad cluster-secret proof", label)
            raise AuthError(f"server {label} failed the cluster-secret handshake")
        return server_name.decode(errors="replace"), Session.derive(secret, server_nonce, client_nonce, server=False)
    except (OSError, ConnectionError, struct.error) as exc:
        raise AuthError(
            f"server {label} refused the connection or broke the handshake "
            f"(wrong cluster secret?): {exc}"
        ) from exc
    finally:
        sock.settimeout(old_timeout)
