"""Cluster-secret handshake: every control and data connection proves it knows the secret (HMAC).

Mutual challenge-response over a connected socket, run before any other byte is trusted:

    server -> client: MAGIC, server nonce (32 B)
    client -> server: client nonce (32 B), HMAC(secret, "client" | server nonce | client nonce | name)
    server -> client: HMAC(secret, "server" | client nonce | server nonce | name) | server name

The secret never crosses the wire, nonces make replays useless and `hmac.compare_digest` keeps the
comparison constant-time. A peer that fails is refused (socket closed) and logged on the
`dualpath.runtime.transports.auth` logger with its address.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import socket
import struct
import threading
from collections.abc import Callable

from dualpath.errors import DualpathError, SpecError

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


def recv_exact(sock: socket.socket, nbytes: int) -> bytes:
    """Read exactly `nbytes` (small control messages only; data goes through recv_into)."""
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        n = sock.recv_into(view[got:])
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


def server_handshake(sock: socket.socket, secret: bytes, name: str = "") -> str:
    """Authenticate the client on an accepted socket; returns the client's declared name.

    Raises `AuthError` (and logs a warning naming the address) when the client fails; the caller
    closes the socket.
    """
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
            LOG.warning("refused peer %s (%r): bad cluster-secret proof", label, client_name.decode(errors="replace"))
            raise AuthError(f"peer {label} failed the cluster-secret handshake")
        own = name.encode()[:MAX_NAME_BYTES]
        sock.sendall(_mac(secret, b"server", client_nonce, server_nonce, own) + _pack_name(name))
        return client_name.decode(errors="replace")
    except (OSError, ConnectionError, struct.error) as exc:
        LOG.warning("refused peer %s: handshake broken (%s)", label, exc)
        raise AuthError(f"peer {label} broke the handshake: {exc}") from exc
    finally:
        sock.settimeout(old_timeout)


def client_handshake(sock: socket.socket, secret: bytes, name: str = "") -> str:
    """Prove the secret to the server and check the server's proof; returns the server's name."""
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
        return server_name.decode(errors="replace")
    except (OSError, ConnectionError, struct.error) as exc:
        raise AuthError(
            f"server {label} refused the connection or broke the handshake "
            f"(wrong cluster secret?): {exc}"
        ) from exc
    finally:
        sock.settimeout(old_timeout)


def serve_accepts(listener: socket.socket, is_closed: Callable[[], bool],
                  admit: Callable[[socket.socket], None], name: str) -> threading.Thread:
    """Accept connections until `is_closed()`, each admitted (handshake first) on its own thread, so
    a slow or hostile peer never blocks the others. The listener needs a timeout to notice closing."""

    def loop() -> None:
        while not is_closed():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=admit, args=(sock,), daemon=True).start()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread
