"""Per-frame integrity after the handshake: session keys and the sequence-numbered frame MAC.

The handshake (`dualpath.runtime.transports.auth`) proves both ends hold the cluster secret; from
then on every frame carries a tag, HMAC-SHA256 truncated to 16 bytes, keyed by a session key that
is derived from the secret and both handshake nonces, one key per direction (a frame cannot be
reflected back to its sender). The MAC also covers an implicit sequence number, counted by both
ends and never sent: a replayed, dropped, reordered or altered frame fails its tag, and the reader
closes the connection. Without the secret nobody can compute a session key; with a fresh nonce on
each side no two connections share one.
"""

from __future__ import annotations

import hashlib
import hmac

TAG_BYTES = 16  # 128 bits of a SHA-256 HMAC: forgery odds 2^-128 per attempt, and each failure ends the connection
_SEQ_BYTES = 8


def derive_key(secret: bytes, label: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """One direction's session key (`label` names the direction)."""
    return hmac.new(secret, b"dualpath-session/" + label + server_nonce + client_nonce, hashlib.sha256).digest()


class FrameMac:
    """One direction of a connection: its key and the next sequence number. A `FrameMac(None)`
    tags nothing (`tag_bytes == 0`): only for measuring what the MAC costs, both ends alike.

    Not thread-safe: each direction is used by one thread at a time (the sender under its send lock,
    the reader on its own thread), in the order the frames cross the socket.
    """

    def __init__(self, key: bytes | None) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256) if key is not None else None
        self.tag_bytes = TAG_BYTES if key is not None else 0
        self.seq = 0

    def begin(self) -> hmac.HMAC | None:
        """Start the next frame's tag (takes its sequence number); feed it with `.update`."""
        if self._base is None:
            return None
        mac = self._base.copy()
        mac.update(self.seq.to_bytes(_SEQ_BYTES, "little"))
        self.seq += 1
        return mac

    def tag(self, *parts: bytes | bytearray | memoryview) -> bytes:
        """The next frame's tag over `parts`."""
        mac = self.begin()
        if mac is None:
            return b""
        for part in parts:
            mac.update(part)
        return mac.digest()[:TAG_BYTES]

    @staticmethod
    def finish(mac: hmac.HMAC | None) -> bytes:
        return b"" if mac is None else mac.digest()[:TAG_BYTES]

    @staticmethod
    def matches(mac: hmac.HMAC | None, tag: bytes | bytearray) -> bool:
        """Whether a received `tag` is the one `mac` computed (constant-time)."""
        return mac is None or hmac.compare_digest(mac.digest()[:TAG_BYTES], bytes(tag))


class Session:
    """Both directions of one authenticated connection: `send` tags what this end sends, `recv`
    checks what it receives."""

    def __init__(self, send: FrameMac, recv: FrameMac) -> None:
        self.send = send
        self.recv = recv

    @classmethod
    def derive(cls, secret: bytes, server_nonce: bytes, client_nonce: bytes, server: bool) -> Session:
        to_client = derive_key(secret, b"server->client", server_nonce, client_nonce)
        to_server = derive_key(secret, b"client->server", server_nonce, client_nonce)
        mine, theirs = (to_client, to_server) if server else (to_server, to_client)
        return cls(FrameMac(mine), FrameMac(theirs))

    @classmethod
    def untagged(cls) -> Session:
        """No tags either way (benchmarks only: `benchmarks/transport.py --no-mac`)."""
        return cls(FrameMac(None), FrameMac(None))
