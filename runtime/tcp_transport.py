"""TCP transport: one-sided writes over sockets (loopback or LAN), received with `recv_into`.

Each connection carries frames in both directions, a 36-byte header then an optional payload:
WRITE (region id, offset, length, imm, post sequence; payload = the bytes), ACK and ERR (per post),
LOOKUP / REGION (region lookup by name). The receiver reads a WRITE's payload with `recv_into`
straight into the registered region's slice; the sender hands the kernel the caller's memory with
`sendmsg` (one gathered call for many small writes): no per-block Python copies. GPU memory goes
through a pinned bounce buffer (a DMA, not a Python copy).

Each connection has a reader thread and a sender thread. The reader never sends: acks are queued to
the sender, so two peers writing to each other at full speed cannot deadlock on full socket buffers.
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import threading
from collections import deque
from collections.abc import Sequence

from dualpath.runtime.auth import AuthError, client_handshake, server_handshake
from dualpath.runtime.buffers import Memory
from dualpath.runtime.transport import (
    Completion,
    LocalRegion,
    RemoteRegion,
    Ticket,
    Transport,
    TransportError,
    WriteOp,
    check_write,
)

from dualpath.errors import SpecError

LOG = logging.getLogger("dualpath.runtime.tcp")

HEADER = struct.Struct("<BBHIQQIQ")  # kind, flags, reserved, region id, offset, length, imm, seq
WRITE, ACK, ERR, LOOKUP, REGION = 1, 2, 3, 4, 5
F_IMM, F_ACK, F_FOUND = 1, 2, 4
MAX_IOV = 512  # buffers per sendmsg (Linux IOV_MAX is 1024)
GATHER_BYTES = 4 << 20
BOUNCE_BYTES = 4 << 20
SOCKET_BUFFER_BYTES = 4 << 20
INLINE_BYTES = 256 << 10  # posts up to this size are sent by the caller when the connection is idle


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


class _Connection:
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
        self._reader = threading.Thread(target=self._read_loop, name=f"tcp-rx:{transport.name}<-{peer}", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"tcp-tx:{transport.name}->{peer}", daemon=True)

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
            header = HEADER.pack(WRITE, flags, 0, op.remote.region_id, op.remote_offset, nbytes, op.imm or 0, seq)
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

    # -- receiving -----------------------------------------------------------------------------------
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
                self.fail(TransportError(f"{self.transport.name}: connection to peer {self.peer} lost: {exc}"))
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
            reason = "no such region" if region is None else f"[{offset}, +{length}) exceeds {region.nbytes} bytes"
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
            raise TransportError(f"{self.transport.name}: peer {self.peer} disconnected mid-write: received {got} "
                                 f"of {length} bytes for region {region.name!r} at offset {offset}")
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
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._bounce.clear()
        self.transport._connection_lost(self, error)

    def close(self) -> None:
        self.closing = True
        self.fail(TransportError(f"{self.transport.name}: transport closed"))


class TcpTransport(Transport):
    """The default backend: framed writes over TCP with `recv_into` into registered memory."""

    kind = "tcp"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._conns: dict[str, _Connection] = {}
        self._listener: socket.socket | None = None
        self._remote_cache: dict[tuple[str, str], RemoteRegion] = {}

    # -- connections ---------------------------------------------------------------------------------
    def listen(self) -> tuple[str, int]:
        if self._listener is None:
            listener = socket.create_server((self.host, self.port), backlog=64)
            listener.settimeout(0.2)
            self._listener = listener
            self.host, self.port = listener.getsockname()[:2]
            threading.Thread(target=self._accept_loop, name=f"tcp-accept:{self.name}", daemon=True).start()
        return self.host, self.port

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._admit, args=(sock,), daemon=True).start()

    def _admit(self, sock: socket.socket) -> None:
        try:
            peer = server_handshake(sock, self.secret, self.name)
        except AuthError:
            self.num_refused += 1
            sock.close()
            return
        self._add_connection(peer, sock)

    def connect(self, address: tuple[str, int], timeout_s: float = 10.0) -> str:
        try:
            sock = socket.create_connection(tuple(address), timeout=timeout_s)
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        try:
            peer = client_handshake(sock, self.secret, self.name)
        except AuthError as exc:
            sock.close()
            raise TransportError(f"{self.name}: {exc}") from exc
        return self._add_connection(peer, sock)

    def _add_connection(self, peer: str, sock: socket.socket) -> str:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        with self._lock:
            unique = peer
            for n in itertools.count(2):
                if unique not in self._conns:
                    break
                unique = f"{peer}#{n}"
            conn = _Connection(self, unique, sock)
            self._conns[unique] = conn
        conn.start()
        LOG.info("%s: connected to %s", self.name, unique)
        return unique

    def peers(self) -> list[str]:
        with self._lock:
            return sorted(self._conns)

    def _conn(self, peer: str) -> _Connection:
        with self._lock:
            conn = self._conns.get(peer)
        if conn is None or not conn.alive:
            raise TransportError(f"{self.name}: not connected to peer {peer!r} (connected: {self.peers()})")
        return conn

    def _connection_lost(self, conn: _Connection, error: TransportError) -> None:
        with self._lock:
            if self._conns.get(conn.peer) is conn:
                del self._conns[conn.peer]
            for key in [key for key in self._remote_cache if key[0] == conn.peer]:
                del self._remote_cache[key]
        if not self.closed and not conn.closing_by_us:
            self._peer_lost(conn.peer, error)

    def remote_region(self, peer: str, name: str, timeout_s: float = 10.0) -> RemoteRegion:
        cached = self._remote_cache.get((peer, name))
        if cached is not None:
            return cached
        conn = self._conn(peer)
        seq = conn.next_seq()
        waiter = [threading.Event(), None]
        with conn._cond:
            conn.lookups[seq] = waiter
        raw = name.encode()
        conn.enqueue_control(HEADER.pack(LOOKUP, 0, 0, 0, 0, len(raw), 0, seq) + raw)
        if not waiter[0].wait(timeout_s):
            raise TransportError(f"{self.name}: peer {peer} did not answer a lookup of region {name!r}")
        if not conn.alive:
            raise TransportError(f"{self.name}: connection to peer {peer} lost during a region lookup")
        if waiter[1] is None:
            raise TransportError(f"{self.name}: peer {peer} has no region {name!r}")
        region_id, nbytes = waiter[1]
        remote = RemoteRegion(peer, name, region_id, nbytes)
        self._remote_cache[(peer, name)] = remote
        return remote

    # -- data path -----------------------------------------------------------------------------------
    def post(self, ops: Sequence[WriteOp]) -> Ticket:
        if not ops:
            raise TransportError(f"{self.name}: post of no writes")
        peer = ops[0].remote.peer
        total = 0
        for op in ops:
            if op.remote.peer != peer:
                raise TransportError(f"{self.name}: one post goes to one peer ({peer!r}, not {op.remote.peer!r})")
            if self.limiter is not None and op.lane not in self.limiter.weights:
                raise SpecError(f"transport {self.name}", "lane", op.lane, "one of " + ", ".join(self.limiter.weights))
            total += check_write(op)
        conn = self._conn(peer)
        ticket = Ticket(peer, len(ops), total)
        inline_ok = total <= INLINE_BYTES and (self.limiter is None or self.limiter.unlimited) and not any(
            isinstance(op.local, LocalRegion) and op.local.memory.on_device for op in ops)
        conn.enqueue_post(ticket, conn.next_seq(), list(ops), inline_ok)
        return ticket

    def _deliver_from(self, peer: str, region: str, offset: int, nbytes: int, imm: int) -> None:
        self._deliver(Completion(peer, region, offset, nbytes, imm))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            conn.closing_by_us = True
            conn.close()
