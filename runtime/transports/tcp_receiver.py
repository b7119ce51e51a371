"""TCP receive side of a peer connection: the reader's frame loop, and the replies it resolves.

Reads each frame's header, then a WRITE's payload with `recv_into` straight into the registered
region's slice (GPU regions through the pinned bounce buffer). The reader never sends on its own:
replies go through the connection's `send_control_now`, which queues them when the socket could block.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Protocol

from dualpath.errors import SpecError
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.tcp_frames import (
    ACK,
    BOUNCE_BYTES,
    ERR,
    F_ACK,
    F_FOUND,
    F_IMM,
    HEADER,
    LOOKUP,
    REGION,
    WRITE,
    recv_into_exact,
)
from dualpath.runtime.transports.transport_types import (
    Completion,
    LocalRegion,
    RegionLookup,
    Ticket,
    TransportError,
)

FoundRegion = tuple[int, int]  # a peer's answer to a LOOKUP: (region id, nbytes)


class LocalRegions(Protocol):
    """The receiving transport as its readers see it (every `Transport` is one)."""

    name: str

    def region(self, name: str) -> LocalRegion: ...

    def region_by_id(self, region_id: int) -> LocalRegion | None: ...


class PendingReplies:
    """Posts awaiting their ACK/ERR and lookups awaiting their REGION frame, by sequence number.

    The connection files them as it sends; its reader resolves them; a failing connection takes them
    all. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posts: dict[int, Ticket] = {}
        self._lookups: dict[int, RegionLookup[FoundRegion]] = {}

    def add_post(self, seq: int, ticket: Ticket) -> None:
        with self._lock:
            self._posts[seq] = ticket

    def add_lookup(self, seq: int) -> RegionLookup[FoundRegion]:
        lookup: RegionLookup[FoundRegion] = RegionLookup()
        with self._lock:
            self._lookups[seq] = lookup
        return lookup

    def pop_post(self, seq: int) -> Ticket | None:
        with self._lock:
            return self._posts.pop(seq, None)

    def pop_lookup(self, seq: int) -> RegionLookup[FoundRegion] | None:
        with self._lock:
            return self._lookups.pop(seq, None)

    def take_all(self) -> tuple[list[Ticket], list[RegionLookup[FoundRegion]]]:
        """Everything still pending (the caller fails it outside its own locks)."""
        with self._lock:
            posts, self._posts = list(self._posts.values()), {}
            lookups, self._lookups = list(self._lookups.values()), {}
        return posts, lookups


class FrameReader:
    """Handles the frames a peer sends on one connection; `TcpConnection` runs it on its reader thread.

    `reply` sends a small frame back (ACK, ERR, REGION), `deliver` hands over a write's immediate,
    `bounce("rx")` is the connection's pinned buffer for writes into GPU memory.
    """

    def __init__(self, sock: socket.socket, peer: str, regions: LocalRegions, replies: PendingReplies,
                 deliver: Callable[[Completion], None], reply: Callable[[bytes], None],
                 bounce: Callable[[str], Memory]) -> None:
        self._sock = sock
        self._peer = peer
        self._regions = regions
        self._replies = replies
        self._deliver = deliver
        self._reply = reply
        self._bounce = bounce

    def run(self) -> None:
        """Handle frames until the socket fails or the peer breaks the protocol: always ends by raising
        `OSError`/`ConnectionError` (socket) or `TransportError` (protocol)."""
        header = bytearray(HEADER.size)
        view = memoryview(header)
        while True:
            got = recv_into_exact(self._sock, view)
            if got == 0:
                raise ConnectionError("connection closed by peer")
            if got < HEADER.size:
                raise ConnectionError(f"peer closed mid-header ({got} of {HEADER.size} bytes)")
            self._handle(*HEADER.unpack(header))

    def _handle(self, kind: int, flags: int, _reserved: int, region_id: int, offset: int, length: int, imm: int,
                seq: int) -> None:
        if kind == WRITE:
            self._receive_write(flags, region_id, offset, length, imm, seq)
        elif kind == ACK:
            ticket = self._replies.pop_post(seq)
            if ticket is not None:
                ticket.finish()
        elif kind == ERR:
            message = self._recv_bytes(length).decode(errors="replace")
            ticket = self._replies.pop_post(seq)
            if ticket is not None:
                ticket.finish(TransportError(f"peer {self._peer} refused a write: {message}"))
        elif kind == LOOKUP:
            name = self._recv_bytes(length).decode(errors="replace")
            try:
                region = self._regions.region(name)
                reply = HEADER.pack(REGION, F_FOUND, 0, region.region_id, 0, region.nbytes, 0, seq)
            except SpecError:
                reply = HEADER.pack(REGION, 0, 0, 0, 0, 0, 0, seq)
            self._reply(reply)
        elif kind == REGION:
            lookup = self._replies.pop_lookup(seq)
            if lookup is not None:
                lookup.answer((region_id, length) if flags & F_FOUND else None)
        else:
            raise TransportError(f"{self._regions.name}: peer {self._peer} sent unknown frame kind {kind}")

    def _recv_bytes(self, length: int) -> bytes:
        buf = bytearray(length)
        if recv_into_exact(self._sock, memoryview(buf)) < length:
            raise ConnectionError("peer closed mid-frame")
        return bytes(buf)

    def _receive_write(self, flags: int, region_id: int, offset: int, length: int, imm: int, seq: int) -> None:
        region = self._regions.region_by_id(region_id)
        if region is None or offset + length > region.nbytes:
            reason = ("no such region" if region is None
                      else f"[{offset}, +{length}) exceeds {region.nbytes} bytes")
            self._drain(length)
            message = f"write to region id {region_id}: {reason}".encode()
            self._reply(HEADER.pack(ERR, 0, 0, region_id, offset, len(message), 0, seq) + message)
            return
        memory = region.memory
        if memory.view is None:  # GPU memory (`on_device`); testing the view lets the type checker narrow it
            got = self._receive_to_device(memory, offset, length)
        else:
            got = recv_into_exact(self._sock, memory.view[offset : offset + length])
        if got < length:
            raise TransportError(f"{self._regions.name}: peer {self._peer} disconnected mid-write: "
                                 f"received {got} of {length} bytes for region {region.name!r} "
                                 f"at offset {offset}")
        if flags & F_IMM:
            self._deliver(Completion(self._peer, region.name, offset, length, imm))
        if flags & F_ACK:
            self._reply(HEADER.pack(ACK, 0, 0, 0, 0, 0, 0, seq))

    def _receive_to_device(self, memory: Memory, offset: int, length: int) -> int:
        bounce = self._bounce("rx")
        staging = bounce.host_view
        done = 0
        while done < length:
            size = min(BOUNCE_BYTES, length - done)
            got = recv_into_exact(self._sock, staging[:size])
            memory.tensor[offset + done : offset + done + got].copy_(bounce.tensor[:got])
            done += got
            if got < size:
                break
        return done

    def _drain(self, length: int) -> None:
        scratch = memoryview(bytearray(min(length, 1 << 16) or 1))
        left = length
        while left:
            got = recv_into_exact(self._sock, scratch[: min(left, scratch.nbytes)])
            if got == 0:
                raise ConnectionError("peer closed mid-frame")
            left -= got
