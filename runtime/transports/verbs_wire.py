"""Verbs side channel: the QP-exchange and region-descriptor encodings, the framed messages, and the
connected peer (`VerbsPeer`: its QP, side-channel socket and pending lookups).

Queue-pair information (qp_num, lid, gid, psn, mtu) and region descriptors (addr, rkey) travel over
a TCP side channel after the cluster-secret handshake, each message tagged with the session's MAC
(`dualpath.runtime.transports.session`) and at most `MAX_MSG_BYTES` long. Pure Python: testable
without pyverbs.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from dualpath.runtime.transports.auth import recv_exact
from dualpath.runtime.transports.session import FrameMac, Session
from dualpath.runtime.transports.transport_types import RegionLookup, TransportError

_QP_INFO = struct.Struct("!4sBIH16sIB")  # magic, version, qp_num, lid, gid, psn, mtu enum
_REGION = struct.Struct("!4sIQQIH")  # magic, region id, nbytes, addr, rkey, name length
MSG = struct.Struct("!BI")  # side-channel message: kind, payload length
QPINFO, LOOKUP, REGION, NOTFOUND = 1, 2, 3, 4
MAX_MSG_BYTES = 64 << 10  # QP info, a region name or descriptor: far less


@dataclass(frozen=True)
class QPInfo:
    """What a peer needs to connect its RC QP to ours (24-bit qp_num and psn, 16-bit lid, GID)."""

    qp_num: int
    lid: int
    gid: str
    psn: int
    mtu: int

    def encode(self) -> bytes:
        for field, value, bits in (("qp_num", self.qp_num, 24), ("psn", self.psn, 24), ("lid", self.lid, 16),
                                   ("mtu", self.mtu, 8)):
            if not 0 <= value < 2**bits:
                raise TransportError(f"QPInfo.{field} = {value} does not fit in {bits} bits")
        try:
            raw_gid = bytes.fromhex(self.gid.replace(":", ""))
        except ValueError:
            raw_gid = b""
        if len(raw_gid) != 16:
            raise TransportError(f"QPInfo.gid = {self.gid!r} is not a 16-byte GID")
        return _QP_INFO.pack(b"DPQP", 1, self.qp_num, self.lid, raw_gid, self.psn, self.mtu)

    @classmethod
    def decode(cls, data: bytes) -> QPInfo:
        if len(data) != _QP_INFO.size:
            raise TransportError(f"QP info is {len(data)} bytes, expected {_QP_INFO.size}")
        magic, version, qp_num, lid, raw_gid, psn, mtu = _QP_INFO.unpack(data)
        if magic != b"DPQP" or version != 1:
            raise TransportError(f"QP info has magic {magic!r} version {version}, expected b'DPQP' 1")
        hexgid = raw_gid.hex()
        return cls(qp_num, lid, ":".join(hexgid[i : i + 4] for i in range(0, 32, 4)), psn, mtu)


@dataclass(frozen=True)
class RegionInfo:
    """A registered region as advertised to peers: id, size, virtual address and rkey."""

    name: str
    region_id: int
    nbytes: int
    addr: int
    rkey: int

    def encode(self) -> bytes:
        raw = self.name.encode()
        return _REGION.pack(b"DPRG", self.region_id, self.nbytes, self.addr, self.rkey, len(raw)) + raw

    @classmethod
    def decode(cls, data: bytes) -> RegionInfo:
        if len(data) < _REGION.size:
            raise TransportError(f"region info is {len(data)} bytes, shorter than {_REGION.size}")
        magic, region_id, nbytes, addr, rkey, length = _REGION.unpack_from(data)
        if magic != b"DPRG" or len(data) != _REGION.size + length:
            raise TransportError(f"malformed region info (magic {magic!r}, {len(data)} bytes)")
        return cls(data[_REGION.size :].decode(), region_id, nbytes, addr, rkey)


def send_msg(sock: socket.socket, mac: FrameMac, kind: int, payload: bytes = b"") -> None:
    """One side-channel message (callers serialise sends per socket: tags are taken in order)."""
    head = MSG.pack(kind, len(payload))
    sock.sendall(head + payload + mac.tag(head, payload))


def recv_msg(sock: socket.socket, mac: FrameMac) -> tuple[int, bytes]:
    """The next message; `TransportError` when it is too long or fails its tag."""
    head = recv_exact(sock, MSG.size)
    kind, length = MSG.unpack(head)
    if length > MAX_MSG_BYTES:
        raise TransportError(f"side-channel message of {length} bytes (at most {MAX_MSG_BYTES})")
    payload = recv_exact(sock, length)
    check = mac.begin()
    if check is not None:
        check.update(head + payload)
        if not mac.matches(check, recv_exact(sock, mac.tag_bytes)):
            raise TransportError(f"side-channel message {mac.seq - 1} fails its integrity tag")
    return kind, payload


class VerbsPeer:
    """A connected peer: its RC QP (a pyverbs `QP`, untyped), its side-channel socket, on which
    messages are sent under `lock`, and its region lookups awaiting an answer, by region name."""

    def __init__(self, name: str, sock: socket.socket, qp: Any, session: Session) -> None:
        self.name = name
        self.sock = sock
        self.session = session
        self.qp = qp
        self.alive = True
        self.lock = threading.Lock()
        self.lookups: dict[str, RegionLookup[RegionInfo]] = {}
