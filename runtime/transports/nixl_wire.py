"""NIXL side channel and notices: the hello and region encodings carried over the authenticated side
channel, the notice a write request carries to its target, and the connected peer (`NixlPeer`).

After the cluster-secret handshake each end sends a hello: its NIXL agent name and connection info,
and the connection id and random token the other end must put in every notice it sends. A region
lookup is answered with the region's address, size, memory type and the NIXL metadata that lets
the peer write into it. Side-channel messages use the verbs framing (`verbs_wire.send_msg`: kind,
length, payload, session MAC). Every post carries one notice (imm or not): its sequence number lets
the target deliver completions in post order, and the token proves it comes from the peer that
passed the handshake (NIXL's notifications themselves are not authenticated). Pure Python.
"""

from __future__ import annotations

import hmac
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from dualpath.runtime.transports.session import Session
from dualpath.runtime.transports.transport_types import Completion, RegionLookup, TransportError

HELLO, LOOKUP, REGION, NOTFOUND = 11, 12, 13, 14  # apart from the verbs kinds: a crossed wire fails fast
TOKEN_BYTES = 16
_HELLO = struct.Struct("!4sBI16sHI")  # magic, version, conn id, token, agent name length, metadata length
_REGION = struct.Struct("!4sIQQIBHI")  # magic, region id, nbytes, addr, device, VRAM?, name length, md length
_NOTICE = struct.Struct("!4sI16sQI")  # magic, conn id, token, post sequence, number of entries
_ENTRY = struct.Struct("!IIQQ")  # imm, region id, offset, nbytes


def _split(data: bytes, head: struct.Struct, lengths: tuple[int, ...], what: str) -> list[bytes]:
    if len(data) != head.size + sum(lengths):
        raise TransportError(f"malformed {what} ({len(data)} bytes)")
    parts, at = [], head.size
    for length in lengths:
        parts.append(data[at : at + length])
        at += length
    return parts


@dataclass(frozen=True)
class Hello:
    """One end introducing itself: NIXL agent, connection info, and how to address notices to it."""

    agent: str
    conn_id: int
    token: bytes
    metadata: bytes

    def encode(self) -> bytes:
        name = self.agent.encode()
        return _HELLO.pack(b"DPNH", 1, self.conn_id, self.token, len(name), len(self.metadata)) + name + self.metadata

    @classmethod
    def decode(cls, data: bytes) -> Hello:
        if len(data) < _HELLO.size:
            raise TransportError(f"NIXL hello is {len(data)} bytes, shorter than {_HELLO.size}")
        magic, version, conn_id, token, name_len, md_len = _HELLO.unpack_from(data)
        if magic != b"DPNH" or version != 1:
            raise TransportError(f"NIXL hello has magic {magic!r} version {version}, expected b'DPNH' 1")
        name, metadata = _split(data, _HELLO, (name_len, md_len), "NIXL hello")
        return cls(name.decode(), conn_id, token, metadata)


@dataclass(frozen=True)
class NixlRegion:
    """A registered region as advertised to a peer, with the NIXL metadata to write into it."""

    name: str
    region_id: int
    nbytes: int
    addr: int
    device: int
    vram: bool
    metadata: bytes

    def encode(self) -> bytes:
        raw = self.name.encode()
        return _REGION.pack(b"DPNR", self.region_id, self.nbytes, self.addr, self.device, int(self.vram), len(raw),
                            len(self.metadata)) + raw + self.metadata

    @classmethod
    def decode(cls, data: bytes) -> NixlRegion:
        if len(data) < _REGION.size:
            raise TransportError(f"NIXL region info is {len(data)} bytes, shorter than {_REGION.size}")
        magic, region_id, nbytes, addr, device, vram, name_len, md_len = _REGION.unpack_from(data)
        if magic != b"DPNR":
            raise TransportError(f"NIXL region info has magic {magic!r}, expected b'DPNR'")
        name, metadata = _split(data, _REGION, (name_len, md_len), "NIXL region info")
        return cls(name.decode(), region_id, nbytes, addr, device, bool(vram), metadata)


@dataclass(frozen=True)
class Notice:
    """What a post tells its target once its bytes landed: sequence number and its immediates as
    (imm, region id, offset, nbytes)."""

    conn_id: int
    token: bytes
    seq: int
    entries: tuple[tuple[int, int, int, int], ...]

    def encode(self) -> bytes:
        head = _NOTICE.pack(b"DPNN", self.conn_id, self.token, self.seq, len(self.entries))
        return head + b"".join(_ENTRY.pack(*entry) for entry in self.entries)

    @classmethod
    def decode(cls, data: bytes) -> Notice:
        if len(data) < _NOTICE.size:
            raise TransportError(f"NIXL notice is {len(data)} bytes, shorter than {_NOTICE.size}")
        magic, conn_id, token, seq, count = _NOTICE.unpack_from(data)
        if magic != b"DPNN" or len(data) != _NOTICE.size + count * _ENTRY.size:
            raise TransportError(f"malformed NIXL notice (magic {magic!r}, {len(data)} bytes, {count} entries)")
        entries = tuple(_ENTRY.unpack_from(data, _NOTICE.size + i * _ENTRY.size) for i in range(count))
        return cls(conn_id, token, seq, entries)


class NixlPeer:
    """A connected peer: its side-channel socket (sends under `lock`), NIXL agent name, its regions
    looked up so far (by region id), pending lookups, and both directions' notice state.

    Outgoing: `out_conn_id`/`out_token` address our notices to it, `next_seq` numbers our posts.
    Incoming: `in_conn_id`/`in_token` are what its notices must carry; `held` keeps notices that
    arrived before an earlier one (UCX completes requests out of order), `expect_seq` is the next to
    deliver.
    """

    def __init__(self, name: str, sock: socket.socket, session: Session, agent: str, hello_out: Hello,
                 hello_in: Hello) -> None:
        self.name = name
        self.sock = sock
        self.session = session
        self.agent = agent
        self.alive = True
        self.lock = threading.Lock()
        self.post_lock = threading.Lock()  # sequence numbers are taken in the order requests are posted
        self.lookups: dict[str, RegionLookup[NixlRegion]] = {}
        self.regions: dict[int, NixlRegion] = {}
        self.in_conn_id, self.in_token = hello_out.conn_id, hello_out.token
        self.out_conn_id, self.out_token = hello_in.conn_id, hello_in.token
        self.next_seq = 0
        self.expect_seq = 0
        self.held: dict[int, Notice] = {}
        self.inflight: list[Any] = []  # this peer's posts not yet done (`nixl_poller.NixlPost`)

    def accept(self, notice: Notice, region_name: dict[int, str]) -> list[Completion]:
        """The completions that `notice` releases, in post order (none while an earlier one is missing)."""
        if not hmac.compare_digest(notice.token, self.in_token):
            raise TransportError(f"notice from {self.name} carries the wrong token")
        if notice.seq < self.expect_seq or notice.seq in self.held:
            raise TransportError(f"notice {notice.seq} from {self.name} is a replay (expected {self.expect_seq})")
        self.held[notice.seq] = notice
        out: list[Completion] = []
        while self.expect_seq in self.held:
            ready = self.held.pop(self.expect_seq)
            self.expect_seq += 1
            out += [Completion(self.name, region_name.get(region_id, ""), offset, nbytes, imm)
                    for imm, region_id, offset, nbytes in ready.entries]
        return out
