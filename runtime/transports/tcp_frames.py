"""TCP frames: the 36-byte header, frame kinds and flags, sizes, tags, and exact socket send/receive.

Every frame is a `HEADER` and its tag, then, for WRITE, ERR and LOOKUP with `length` > 0, `length`
payload bytes and their tag (tags: the session's MAC, `dualpath.runtime.transports.session`; the
header's is checked before a payload byte is read or written anywhere):
- WRITE: bytes for region `region id` at `offset`; F_IMM: deliver `imm`; F_ACK: last write of post `seq`;
- ACK / ERR: post `seq` landed / was refused (ERR's payload is the reason);
- LOOKUP / REGION: a region name to look up / the answer (F_FOUND, region id, `length` = its size).
Why the sender gathers with `sendmsg` and the reader never sends: see `dualpath.runtime.transports.tcp_transport`.
"""

from __future__ import annotations

import socket
import struct

from dualpath.runtime.transports.session import FrameMac

HEADER = struct.Struct("<BBHIQQIQ")  # kind, flags, reserved, region id, offset, length, imm, seq
WRITE, ACK, ERR, LOOKUP, REGION = 1, 2, 3, 4, 5
F_IMM, F_ACK, F_FOUND = 1, 2, 4
MAX_IOV = 512  # buffers per sendmsg (Linux IOV_MAX is 1024)
GATHER_BYTES = 4 << 20
BOUNCE_BYTES = 4 << 20
SOCKET_BUFFER_BYTES = 4 << 20
INLINE_BYTES = 256 << 10  # posts up to this size are sent by the caller when the connection is idle
PAYLOAD_KINDS = frozenset({WRITE, ERR, LOOKUP})
MAX_MESSAGE_BYTES = 64 << 10  # an ERR's reason or a LOOKUP's region name: a line of text (a WRITE's
# length is bounded by the region it targets, checked before any byte is read)


def seal(mac: FrameMac, header: bytes, payload: bytes | memoryview = b"") -> list[memoryview]:
    """A small frame with its tags, ready for `send_buffers` (call in the order frames are sent)."""
    parts = [header, mac.tag(header)]
    if payload:
        parts += [payload, mac.tag(payload)]
    return [memoryview(part) for part in parts if part]


def send_buffers(sock: socket.socket, buffers: list[memoryview]) -> int:
    """`sendmsg` until every buffer is out (handles partial sends); returns bytes sent."""
    total, first = 0, 0
    while first < len(buffers):
        sent = sock.sendmsg(buffers[first : first + MAX_IOV])
        total += sent
        while sent:
            head = buffers[first]
            if sent >= head.nbytes:
                sent -= head.nbytes
                first += 1
            else:
                buffers[first] = head[sent:]
                sent = 0
        while first < len(buffers) and buffers[first].nbytes == 0:
            first += 1
    return total


def recv_into_exact(sock: socket.socket, view: memoryview) -> int:
    """`recv_into` until `view` is full or the peer closes; returns bytes received."""
    got = 0
    while got < view.nbytes:
        n = sock.recv_into(view[got:])
        if n == 0:
            break
        got += n
    return got
