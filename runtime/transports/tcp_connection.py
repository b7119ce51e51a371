"""TCP peer connection: one authenticated socket with its sender and reader threads.

Acks are queued to the sender (or sent at once when that cannot block), so two peers writing to each
other at full speed cannot deadlock on full socket buffers. Receiving: `dualpath.runtime.transports.tcp_receiver`.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.tcp_frames import (
    BOUNCE_BYTES,
    F_ACK,
    F_IMM,
    GATHER_BYTES,
    HEADER,
    MAX_IOV,
    WRITE,
    send_buffers,
)
from dualpath.runtime.transports.tcp_receiver import ConnectionReceiver
from dualpath.runtime.transports.transport_types import LocalRegion, Ticket, TransportError, WriteOp

if TYPE_CHECKING:
    from dualpath.runtime.transports.tcp_transport import TcpTransport


class _Connection(ConnectionReceiver):
    """One authenticated socket to a peer, with its reader and sender threads."""

    def __init__(self, transport: TcpTransport, peer: str, sock: socket.socket) -> None:
        self.transport = transport
        self.peer = peer
        self.sock = sock
        self.alive = True
        self._seq = itertools.count(1)
        self._cond = threading.Condition()
        self._control: deque[bytes] = deque()
        self._posts: deque[tuple[Ticket, int, Sequence[WriteOp]]] = deque()
        self.tickets: dict[int, Ticket] = {}
        self.lookups: dict[int, list] = {}
        self._bounce: dict[str, Memory] = {}
        self._send_lock = threading.Lock()  # held while a frame is on its way into the socket
        self._partial: memoryview | None = None  # rest of a control frame cut short; sent first
        self._busy = False  # a post is being sent (by the sender thread or inline)
        self.closing = False
        self.closing_by_us = False
        self._reader = threading.Thread(target=self._read_loop, name=f"tcp-rx:{transport.name}<-{peer}",
                                        daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"tcp-tx:{transport.name}->{peer}",
                                        daemon=True)

    def start(self) -> None:
        self._reader.start()
        self._sender.start()

    def next_seq(self) -> int:
        return next(self._seq)

    def enqueue_control(self, frame: bytes) -> None:
        with self._cond:
            self._control.append(frame)
            self._cond.notify()

    def send_control_now(self, frame: bytes) -> None:
        """From the reader: send a small frame now if that cannot block, else queue it."""
        if self._send_lock.acquire(blocking=False):
            try:
                if self._partial is None:
                    try:
                        sent = self.sock.send(frame, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        sent = 0
                    if sent == len(frame):
                        return
                    if sent:
                        self._partial = memoryview(frame)[sent:]
                        with self._cond:
                            self._cond.notify()
                        return
            except OSError:
                pass  # the reader sees the broken socket next
            finally:
                self._send_lock.release()
        self.enqueue_control(frame)

    def enqueue_post(self, ticket: Ticket, seq: int, ops: Sequence[WriteOp], inline_ok: bool) -> None:
        """Queue a post for the sender thread, or send it from the caller when the connection is idle
        and the post is small (saves a thread hand-off)."""
        with self._cond:
            if not self.alive:
                raise TransportError(f"{self.transport.name}: connection to {self.peer} is closed")
            self.tickets[seq] = ticket
            inline = inline_ok and not (self._busy or self._posts or self._control)
            if not inline:
                self._posts.append((ticket, seq, ops))
                self._cond.notify()
                return
            self._busy = True
        try:
            with self._send_lock:
                self._send_post(ticket, seq, ops)
        except OSError as exc:
            self._send_failed(exc)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify()

    def bounce(self, direction: str) -> Memory:
        if direction not in self._bounce:
            self._bounce[direction] = Memory.allocate(BOUNCE_BYTES, "cuda", host=True)
        return self._bounce[direction]

    # -- sending -------------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not (self.closing or self._control or self._partial is not None
                           or (self._posts and not self._busy)):
                    self._cond.wait()
                if self.closing and not self.alive:
                    return
                control = list(self._control)
                self._control.clear()
                post = None
                if self._posts and not self._busy and not control:
                    post = self._posts.popleft()
                    self._busy = True
            try:
                with self._send_lock:
                    self._flush_partial()
                    if control:
                        send_buffers(self.sock, [memoryview(frame) for frame in control])
                    if post is not None:
                        self._send_post(*post)
            except OSError as exc:
                self._send_failed(exc)
                return
            finally:
                if post is not None:
                    with self._cond:
                        self._busy = False

    def _send_failed(self, exc: OSError) -> None:
        self.fail(TransportError(f"{self.transport.name}: peer {self.peer} disconnected during a write "
                                 f"({exc.__class__.__name__}: {exc})"))

    def _flush_partial(self) -> None:
        if self._partial is not None:
            partial, self._partial = self._partial, None
            send_buffers(self.sock, [partial])

    def _send_post(self, ticket: Ticket, seq: int, ops: Sequence[WriteOp]) -> None:
        """Send a post's frames; the caller holds `_send_lock`."""
        self._flush_partial()
        limiter = self.transport.limiter
        buffers: list[memoryview] = []
        pending = 0
        lane_bytes: dict[str, int] = {}  # bytes gathered in `buffers`, paced per lane just before sending

        def send(extra: list[memoryview]) -> None:
            if limiter is not None:
                for lane, paced in lane_bytes.items():  # one grant per gather: per-op grants cost more
                    limiter.acquire(paced, lane)
                lane_bytes.clear()
            send_buffers(self.sock, buffers + extra)

        for index, op in enumerate(ops):
            nbytes = op.size()
            flags = (F_IMM if op.imm is not None else 0) | (F_ACK if index == len(ops) - 1 else 0)
            header = HEADER.pack(WRITE, flags, 0, op.remote.region_id, op.remote_offset, nbytes, op.imm or 0,
                                 seq)
            lane_bytes[op.lane] = lane_bytes.get(op.lane, 0) + nbytes
            local = op.local.memory if isinstance(op.local, LocalRegion) else None
            if local is not None and local.on_device:
                send([memoryview(header)])
                buffers, pending = [], 0
                self._send_from_device(local, op.local_offset, nbytes)
                continue
            view = local.view if local is not None else memoryview(op.local).cast("B")
            buffers += [memoryview(header), view[op.local_offset : op.local_offset + nbytes]]
            pending += nbytes
            if len(buffers) >= MAX_IOV or pending >= GATHER_BYTES:
                send([])
                buffers, pending = [], 0
        if buffers:
            send([])

    def _send_from_device(self, memory: Memory, offset: int, nbytes: int) -> None:
        bounce = self.bounce("tx")
        for start in range(0, nbytes, BOUNCE_BYTES):
            size = min(BOUNCE_BYTES, nbytes - start)
            bounce.tensor[:size].copy_(memory.tensor[offset + start : offset + start + size])
            send_buffers(self.sock, [bounce.view[:size]])

    # -- teardown ------------------------------------------------------------------------------------
    def fail(self, error: TransportError) -> None:
        """Mark dead, fail every pending post and lookup, tell the transport (once)."""
        with self._cond:
            if not self.alive:
                return
            self.alive = False
            self.closing = True
            tickets, self.tickets = list(self.tickets.values()), {}
            lookups, self.lookups = list(self.lookups.values()), {}
            self._posts.clear()
            self._cond.notify_all()
        for ticket in tickets:
            ticket._finish(error)
        for waiter in lookups:
            waiter[0].set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._bounce.clear()
        self.transport._connection_lost(self, error)

    def close(self) -> None:
        self.closing = True
        self.fail(TransportError(f"{self.transport.name}: transport closed"))
