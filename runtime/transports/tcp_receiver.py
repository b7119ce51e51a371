"""TCP receive side of a peer connection: the reader thread's frame loop.

Reads each frame's header, then a WRITE's payload with `recv_into` straight into the registered
region's slice (GPU regions through the pinned bounce buffer). The reader never sends on its own:
replies go through `send_control_now`, which queues them when the socket could block.
"""

from __future__ import annotations

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
from dualpath.runtime.transports.transport_types import TransportError


class ConnectionReceiver:
    """The receiving half of `_Connection` (`dualpath.runtime.transports.tcp_connection`), which it is mixed into.

    Uses the connection's `transport`, `peer`, `sock`, `tickets`, `lookups`, `_cond`, `closing`,
    `bounce`, `send_control_now` and `fail`.
    """

    def _read_loop(self) -> None:
        header = bytearray(HEADER.size)
        view = memoryview(header)
        try:
            while True:
                got = recv_into_exact(self.sock, view)
                if got == 0:
                    raise ConnectionError("connection closed by peer")
                if got < HEADER.size:
                    raise ConnectionError(f"peer closed mid-header ({got} of {HEADER.size} bytes)")
                self._handle(*HEADER.unpack(header))
        except (OSError, ConnectionError) as exc:
            if not self.closing:
                self.fail(TransportError(f"{self.transport.name}: connection to peer {self.peer} "
                                         f"lost: {exc}"))
        except TransportError as exc:
            self.fail(exc)

    def _handle(self, kind, flags, _reserved, region_id, offset, length, imm, seq) -> None:
        if kind == WRITE:
            self._receive_write(flags, region_id, offset, length, imm, seq)
        elif kind == ACK:
            ticket = self._pop(self.tickets, seq)
            if ticket is not None:
                ticket._finish()
        elif kind == ERR:
            message = self._recv_bytes(length).decode(errors="replace")
            ticket = self._pop(self.tickets, seq)
            if ticket is not None:
                ticket._finish(TransportError(f"peer {self.peer} refused a write: {message}"))
        elif kind == LOOKUP:
            name = self._recv_bytes(length).decode(errors="replace")
            try:
                region = self.transport.region(name)
                reply = HEADER.pack(REGION, F_FOUND, 0, region.region_id, 0, region.nbytes, 0, seq)
            except SpecError:
                reply = HEADER.pack(REGION, 0, 0, 0, 0, 0, 0, seq)
            self.send_control_now(reply)
        elif kind == REGION:
            waiter = self._pop(self.lookups, seq)
            if waiter is not None:
                waiter[1] = (region_id, length) if flags & F_FOUND else None
                waiter[0].set()
        else:
            raise TransportError(f"{self.transport.name}: peer {self.peer} sent unknown frame kind {kind}")

    def _pop(self, table: dict, seq: int):
        with self._cond:
            return table.pop(seq, None)

    def _recv_bytes(self, length: int) -> bytes:
        buf = bytearray(length)
        if recv_into_exact(self.sock, memoryview(buf)) < length:
            raise ConnectionError("peer closed mid-frame")
        return bytes(buf)

    def _receive_write(self, flags, region_id, offset, length, imm, seq) -> None:
        region = self.transport._region_by_id(region_id)
        if region is None or offset + length > region.nbytes:
            reason = ("no such region" if region is None
                      else f"[{offset}, +{length}) exceeds {region.nbytes} bytes")
            self._drain(length)
            message = f"write to region id {region_id}: {reason}".encode()
            self.send_control_now(HEADER.pack(ERR, 0, 0, region_id, offset, len(message), 0, seq) + message)
            return
        memory = region.memory
        if memory.on_device:
            got = self._receive_to_device(memory, offset, length)
        else:
            got = recv_into_exact(self.sock, memory.view[offset : offset + length])
        if got < length:
            raise TransportError(f"{self.transport.name}: peer {self.peer} disconnected mid-write: "
                                 f"received {got} of {length} bytes for region {region.name!r} "
                                 f"at offset {offset}")
        if flags & F_IMM:
            self.transport._deliver_from(self.peer, region.name, offset, length, imm)
        if flags & F_ACK:
            self.send_control_now(HEADER.pack(ACK, 0, 0, 0, 0, 0, 0, seq))

    def _receive_to_device(self, memory: Memory, offset: int, length: int) -> int:
        bounce = self.bounce("rx")
        done = 0
        while done < length:
            size = min(BOUNCE_BYTES, length - done)
            got = recv_into_exact(self.sock, bounce.view[:size])
            memory.tensor[offset + done : offset + done + got].copy_(bounce.tensor[:got])
            done += got
            if got < size:
                break
        return done

    def _drain(self, length: int) -> None:
        scratch = memoryview(bytearray(min(length, 1 << 16) or 1))
        left = length
        while left:
            got = recv_into_exact(self.sock, scratch[: min(left, scratch.nbytes)])
            if got == 0:
                raise ConnectionError("peer closed mid-frame")
            left -= got
