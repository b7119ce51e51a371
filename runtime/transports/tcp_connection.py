"""TCP peer connection: one authenticated socket with its sender and reader threads.

Acks are queued to the sender (or sent at once when that cannot block), so two peers writing to each
other at full speed cannot deadlock on full socket buffers. The reader thread runs a `FrameReader`
(`dualpath.runtime.transports.tcp_receiver`), which resolves the replies this side files.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence

from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.ratelimit import NicLimiter
from dualpath.runtime.transports.session import Session
from dualpath.runtime.transports.tcp_frames import (
    BOUNCE_BYTES,
    F_ACK,
    F_IMM,
    GATHER_BYTES,
    HEADER,
    LOOKUP,
    MAX_IOV,
    WRITE,
    seal,
    send_buffers,
)
from dualpath.runtime.transports.tcp_receiver import (
    FoundRegion,
    FrameError,
    FrameReader,
    LocalRegions,
    PendingReplies,
)
from dualpath.runtime.transports.transport_types import Completion, LocalRegion, Ticket, TransportError, WriteOp

LOG = logging.getLogger("dualpath.runtime.tcp")
Frame = tuple[bytes, bytes]  # a small frame's header and payload, sealed (tagged) only when it is sent


class TcpConnection:
    """One authenticated socket to `peer`, with its reader and sender threads.

    `local` is the owning transport (its name, and the regions peers write into); `session` tags what
    is sent and checks what arrives; `limiter` paces sends; `deliver` takes the completions of writes
    with an immediate; `on_lost(connection, error)` is called once when the connection fails or is closed.
    Every tag is computed under `_send_lock`, so tags are taken in the order frames enter the socket.
    """

    def __init__(self, local: LocalRegions, peer: str, sock: socket.socket, session: Session,
                 limiter: NicLimiter | None, deliver: Callable[[Completion], None],
                 on_lost: Callable[[TcpConnection, TransportError], None]) -> None:
        self.local = local
        self.peer = peer
        self.sock = sock
        self._mac = session.send
        self.limiter = limiter
        self._on_lost = on_lost
        self.alive = True
        self._seq = itertools.count(1)
        self._cond = threading.Condition()
        self._control: deque[Frame] = deque()
        self._posts: deque[tuple[Ticket, int, Sequence[WriteOp]]] = deque()
        self._replies = PendingReplies()
        self._bounce: dict[str, Memory] = {}
        self._send_lock = threading.Lock()  # held while a frame is on its way into the socket
        self._partial: memoryview | None = None  # rest of a control frame cut short; sent first
        self._busy = False  # a post is being sent (by the sender thread or inline)
        self.closing = False
        self.closing_by_us = False
        self._frames = FrameReader(sock, peer, local, self._replies, deliver, self.send_control_now, self.bounce,
                                   session.recv)
        self._reader = threading.Thread(target=self._read_loop, name=f"tcp-rx:{local.name}<-{peer}", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"tcp-tx:{local.name}->{peer}", daemon=True)

    def start(self) -> None:
        self._reader.start()
        self._sender.start()

    def next_seq(self) -> int:
        return next(self._seq)

    def enqueue_control(self, header: bytes, payload: bytes = b"") -> None:
        with self._cond:
            self._control.append((header, payload))
            self._cond.notify()

    def send_control_now(self, header: bytes, payload: bytes = b"") -> None:
        """From the reader: send a small frame now if that cannot block, else queue it."""
        if self._send_lock.acquire(blocking=False):
            try:
                if self._partial is None and not self._control:
                    frame = b"".join(seal(self._mac, header, payload))
                    try:
                        sent = self.sock.send(frame, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        sent = 0
                    if sent < len(frame):  # its tags are taken: the rest goes out first, from the sender
                        self._partial = memoryview(frame)[sent:]
                        with self._cond:
                            self._cond.notify()
                    return
            except OSError:
                return  # the reader sees the broken socket next
            finally:
                self._send_lock.release()
        self.enqueue_control(header, payload)

    def enqueue_post(self, ticket: Ticket, seq: int, ops: Sequence[WriteOp], inline_ok: bool) -> None:
        """Queue a post for the sender thread, or send it from the caller when the connection is idle
        and the post is small (saves a thread hand-off)."""
        with self._cond:
            if not self.alive:
                raise TransportError(f"{self.local.name}: connection to {self.peer} is closed")
            self._replies.add_post(seq, ticket)
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

    def lookup_region(self, name: str, timeout_s: float) -> FoundRegion:
        """Ask the peer for its region `name`; returns (region id, nbytes) or raises `TransportError`."""
        seq = self.next_seq()
        lookup = self._replies.add_lookup(seq)
        raw = name.encode()
        self.enqueue_control(HEADER.pack(LOOKUP, 0, 0, 0, 0, len(raw), 0, seq), raw)
        if not lookup.wait(timeout_s):
            raise TransportError(f"{self.local.name}: peer {self.peer} did not answer a lookup of region {name!r}")
        if not self.alive:
            raise TransportError(f"{self.local.name}: connection to peer {self.peer} lost during a region lookup")
        if lookup.found is None:
            raise TransportError(f"{self.local.name}: peer {self.peer} has no region {name!r}")
        return lookup.found

    def bounce(self, direction: str) -> Memory:
        if direction not in self._bounce:
            self._bounce[direction] = Memory.allocate(BOUNCE_BYTES, "cuda", host=True)
        return self._bounce[direction]

    def _read_loop(self) -> None:
        try:
            self._frames.run()
        except (OSError, ConnectionError) as exc:
            if not self.closing:
                self.fail(TransportError(f"{self.local.name}: connection to peer {self.peer} lost: {exc}"))
        except FrameError as exc:
            LOG.warning("%s: closing the connection to %s: %s", self.local.name, self.peer, exc)
            self.fail(exc)
        except TransportError as exc:
            self.fail(exc)
        except Exception as exc:  # whatever a malformed frame broke, the connection ends here, logged
            reason = f"{type(exc).__name__}: {exc}"[:500]
            LOG.warning("%s: closing the connection to %s: %s", self.local.name, self.peer, reason)
            self.fail(TransportError(f"{self.local.name}: connection to peer {self.peer} broken: {reason}"))

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
                        send_buffers(self.sock, [part for frame in control for part in seal(self._mac, *frame)])
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
        self.fail(TransportError(f"{self.local.name}: peer {self.peer} disconnected during a write "
                                 f"({exc.__class__.__name__}: {exc})"))

    def _flush_partial(self) -> None:
        if self._partial is not None:
            partial, self._partial = self._partial, None
            send_buffers(self.sock, [partial])

    def _send_post(self, ticket: Ticket, seq: int, ops: Sequence[WriteOp]) -> None:
        """Send a post's frames; the caller holds `_send_lock`."""
        self._flush_partial()
        limiter = self.limiter
        buffers: list[memoryview] = []
        pending = 0
        lane_bytes: dict[str, int] = {}  # bytes gathered in `buffers`, paced per lane just before sending

        def send(extra: list[memoryview]) -> None:
            if limiter is not None:
                for lane, paced in lane_bytes.items():  # one grant per gather: per-op grants cost more
                    limiter.acquire(paced, lane)
                lane_bytes.clear()
            send_buffers(self.sock, buffers + extra)

        mac = self._mac
        for index, op in enumerate(ops):
            nbytes = op.size()
            flags = (F_IMM if op.imm is not None else 0) | (F_ACK if index == len(ops) - 1 else 0)
            header = HEADER.pack(WRITE, flags, 0, op.remote.region_id, op.remote_offset, nbytes, op.imm or 0,
                                 seq)
            lane_bytes[op.lane] = lane_bytes.get(op.lane, 0) + nbytes
            if not isinstance(op.local, LocalRegion):
                view = memoryview(op.local).cast("B")
            elif op.local.memory.view is not None:
                view = op.local.memory.view
            else:  # GPU memory (`on_device`): through the pinned bounce buffer, never gathered
                send(seal(mac, header))
                buffers, pending = [], 0
                self._send_from_device(op.local.memory, op.local_offset, nbytes)
                continue
            buffers += seal(mac, header, view[op.local_offset : op.local_offset + nbytes])
            pending += nbytes
            if len(buffers) >= MAX_IOV or pending >= GATHER_BYTES:
                send([])
                buffers, pending = [], 0
        if buffers:
            send([])

    def _send_from_device(self, memory: Memory, offset: int, nbytes: int) -> None:
        bounce = self.bounce("tx")
        staging = bounce.host_view
        mac = self._mac.begin() if nbytes else None
        for start in range(0, nbytes, BOUNCE_BYTES):
            size = min(BOUNCE_BYTES, nbytes - start)
            bounce.tensor[:size].copy_(memory.tensor[offset + start : offset + start + size])
            if mac is not None:
                mac.update(staging[:size])
            send_buffers(self.sock, [staging[:size]])
        if mac is not None:
            send_buffers(self.sock, [memoryview(self._mac.finish(mac))])

    # -- teardown ------------------------------------------------------------------------------------
    def fail(self, error: TransportError) -> None:
        """Mark dead, fail every pending post and lookup, tell the transport (once)."""
        with self._cond:
            if not self.alive:
                return
            self.alive = False
            self.closing = True
            tickets, lookups = self._replies.take_all()
            self._posts.clear()
            self._cond.notify_all()
        for ticket in tickets:
            ticket.finish(error)
        for lookup in lookups:
            lookup.cancel()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._bounce.clear()
        self._on_lost(self, error)

    def close(self) -> None:
        self.closing = True
        self.fail(TransportError(f"{self.local.name}: transport closed"))
