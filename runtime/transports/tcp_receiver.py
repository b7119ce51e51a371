"""TCP receive side of a peer connection: the reader's frame loop, and the replies it resolves.

Reads each frame's header and checks its tag, then a WRITE's payload with `recv_into` straight into
the registered region's slice (GPU regions through the pinned bounce buffer), and the payload's tag
before the write is acknowledged or delivered: a write whose bytes fail their tag never completes,
and the connection closes (`FrameError`, logged by the connection). The reader never sends on its
own: replies go through the connection's `send_control_now`, which queues them when the socket could block.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Protocol

from dualpath.errors import SpecError
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.session import FrameMac
from dualpath.runtime.transports.tcp_frames import (
    ACK,
    BOUNCE_BYTES,
    ERR,
    F_ACK,
    F_FOUND,
    F_IMM,
    HEADER,
    LOOKUP,
    MAX_MESSAGE_BYTES,
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
Reply = Callable[[bytes, bytes], None]  # (header, payload): sealed and sent by the connection


class FrameError(TransportError):
    """The peer broke the frame protocol (unknown kind, oversized message, failed tag): the
    connection is closed and the reason logged."""


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

    `mac` checks the frames' tags (the session's receive direction), `reply` sends a small frame back
    (ACK, ERR, REGION), `deliver` hands over a write's immediate, `bounce("rx")` is the connection's
    pinned buffer for writes into GPU memory.
    """

    def __init__(self, sock: socket.socket, peer: str, regions: LocalRegions, replies: PendingReplies,
                 deliver: Callable[[Completion], None], reply: Reply, bounce: Callable[[str], Memory],
                 mac: FrameMac) -> None:
        self._sock = sock
        self._peer = peer
        self._regions = regions
        self._replies = replies
        self._deliver = deliver
        self._reply = reply
        self._bounce = bounce
        self._mac = mac
        self._tag = bytearray(mac.tag_bytes)

    def run(self) -> None:
        """Handle frames until the socket fails or the peer breaks the protocol: always ends by raising
        `OSError`/`ConnectionError` (socket) or `TransportError` (`FrameError`: protocol)."""
        header = bytearray(HEADER.size)
        view = memoryview(header)
        while True:
            got = recv_into_exact(self._sock, view)
            if got == 0:
                raise ConnectionError("connection closed by peer")
            if got < HEADER.size:
                raise ConnectionError(f"peer closed mid-header ({got} of {HEADER.size} bytes)")
            mac = self._mac.begin()
            if mac is not None:
                mac.update(header)
            self._check(mac, "header")
            self._handle(*HEADER.unpack(header))

    def _check(self, mac, what: str) -> None:
        """Read the tag that follows and compare it with `mac`'s (`FrameError` if it differs)."""
        if not self._mac.tag_bytes:
            return
        if recv_into_exact(self._sock, memoryview(self._tag)) < len(self._tag):
            raise ConnectionError(f"peer closed mid-tag of a frame {what}")
        if not self._mac.matches(mac, self._tag):
            raise FrameError(f"{self._regions.name}: frame {what} {self._mac.seq - 1} from peer {self._peer} "
                             "fails its integrity tag (altered, replayed or forged)")

    def _handle(self, kind: int, flags: int, _reserved: int, region_id: int, offset: int, length: int, imm: int,
                seq: int) -> None:
        if kind == WRITE:
            self._receive_write(flags, region_id, offset, length, imm, seq)
        elif kind == ACK:
            ticket = self._replies.pop_post(seq)
            if ticket is not None:
                ticket.finish()
        elif kind == ERR:
            message = self._recv_message(length).decode(errors="replace")
            ticket = self._replies.pop_post(seq)
            if ticket is not None:
                ticket.finish(TransportError(f"peer {self._peer} refused a write: {message}"))
        elif kind == LOOKUP:
            name = self._recv_message(length).decode(errors="replace")
            try:
                region = self._regions.region(name)
                reply = HEADER.pack(REGION, F_FOUND, 0, region.region_id, 0, region.nbytes, 0, seq)
            except SpecError:
                reply = HEADER.pack(REGION, 0, 0, 0, 0, 0, 0, seq)
            self._reply(reply, b"")
        elif kind == REGION:
            lookup = self._replies.pop_lookup(seq)
            if lookup is not None:
                lookup.answer((region_id, length) if flags & F_FOUND else None)
        else:
            raise FrameError(f"{self._regions.name}: peer {self._peer} sent unknown frame kind {kind}")

    def _recv_message(self, length: int) -> bytes:
        if length > MAX_MESSAGE_BYTES:
            raise FrameError(f"{self._regions.name}: peer {self._peer} announced a {length}-byte message "
                             f"(at most {MAX_MESSAGE_BYTES})")
        buf = bytearray(length)
        if recv_into_exact(self._sock, memoryview(buf)) < length:
            raise ConnectionError("peer closed mid-frame")
        if length:
            self._check(self._payload_mac(buf), "payload")
        return bytes(buf)

    def _payload_mac(self, data: bytes | bytearray | memoryview | None = None):
        mac = self._mac.begin()
        if mac is not None and data is not None:
            mac.update(data)
        return mac

    def _receive_write(self, flags: int, region_id: int, offset: int, length: int, imm: int, seq: int) -> None:
        region = self._regions.region_by_id(region_id)
        if region is None or offset + length > region.nbytes:
            reason = ("no such region" if region is None
                      else f"[{offset}, +{length}) exceeds {region.nbytes} bytes")
            self._drain(length)
            message = f"write to region id {region_id}: {reason}".encode()
            self._reply(HEADER.pack(ERR, 0, 0, region_id, offset, len(message), 0, seq), message)
            return
        memory = region.memory
        mac = self._payload_mac() if length else None
        if memory.view is None:  # GPU memory (`on_device`); testing the view lets the type checker narrow it
            got = self._receive_to_device(memory, offset, length, mac)
        else:
            got = recv_into_exact(self._sock, memory.view[offset : offset + length])
            if mac is not None:
                mac.update(memory.view[offset : offset + got])
        if got < length:
            raise TransportError(f"{self._regions.name}: peer {self._peer} disconnected mid-write: "
                                 f"received {got} of {length} bytes for region {region.name!r} "
                                 f"at offset {offset}")
        if length:
            self._check(mac, "payload")
        if flags & F_IMM:
            self._deliver(Completion(self._peer, region.name, offset, length, imm))
        if flags & F_ACK:
            self._reply(HEADER.pack(ACK, 0, 0, 0, 0, 0, 0, seq), b"")

    def _receive_to_device(self, memory: Memory, offset: int, length: int, mac) -> int:
        bounce = self._bounce("rx")
        staging = bounce.host_view
        done = 0
        while done < length:
            size = min(BOUNCE_BYTES, length - done)
            got = recv_into_exact(self._sock, staging[:size])
            if mac is not None:
                mac.update(staging[:got])
            memory.tensor[offset + done : offset + done + got].copy_(bounce.tensor[:got])
            done += got
            if got < size:
                break
        return done

    def _drain(self, length: int) -> None:
        """Read and drop a refused write's payload (its tag still checked: the stream stays in step)."""
        scratch = memoryview(bytearray(min(length, 1 << 16) or 1))
        mac = self._payload_mac() if length else None
        left = length
        while left:
            got = recv_into_exact(self._sock, scratch[: min(left, scratch.nbytes)])
            if got == 0:
                raise ConnectionError("peer closed mid-frame")
            if mac is not None:
                mac.update(scratch[:got])
            left -= got
        if length:
            self._check(mac, "payload")
