"""TCP transport: one-sided writes over sockets (loopback or LAN), received with `recv_into`.

Each connection carries frames in both directions, a 36-byte header then an optional payload:
WRITE (region id, offset, length, imm, post sequence; payload = the bytes), ACK and ERR (per post),
LOOKUP / REGION (region lookup by name). The receiver reads a WRITE's payload with `recv_into`
straight into the registered region's slice; the sender hands the kernel the caller's memory with
`sendmsg` (one gathered call for many small writes): no per-block Python copies. GPU memory goes
through a pinned bounce buffer (a DMA, not a Python copy).

Each connection has a reader thread and a sender thread. The reader never sends: acks are queued to
the sender, so two peers writing to each other at full speed cannot deadlock on full socket buffers.
Every frame carries its session's MAC (`dualpath.runtime.transports.session`); `frame_mac=False`
drops the tags on both ends of a connection, only to measure their cost (`benchmarks/transport.py`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from dualpath.errors import SpecError
from dualpath.runtime.transports.accepts import MAX_PENDING_HANDSHAKES, serve_accepts
from dualpath.runtime.transports.auth import AuthError, client_handshake
from dualpath.runtime.transports.peers import PeerRegistry
from dualpath.runtime.transports.session import Session
from dualpath.runtime.transports.tcp_connection import TcpConnection
from dualpath.runtime.transports.tcp_frames import INLINE_BYTES, SOCKET_BUFFER_BYTES
from dualpath.runtime.transports.transport import Transport
from dualpath.runtime.transports.transport_types import (
    LocalRegion,
    RemoteRegion,
    Ticket,
    TransportError,
    WriteOp,
    check_write,
)

LOG = logging.getLogger("dualpath.runtime.tcp")


class TcpTransport(Transport):
    """The default backend: framed writes over TCP with `recv_into` into registered memory."""

    kind = "tcp"

    def __init__(self, *args, frame_mac: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.frame_mac = frame_mac
        self.max_pending = MAX_PENDING_HANDSHAKES  # connections in their handshake at once
        self._conns: PeerRegistry[TcpConnection] = PeerRegistry(self.name)
        self._listener: socket.socket | None = None
        self._remote_cache: dict[tuple[str, str], RemoteRegion] = {}

    # -- connections ---------------------------------------------------------------------------------
    def listen(self) -> tuple[str, int]:
        if self._listener is None:
            listener = socket.create_server((self.host, self.port), backlog=64)
            listener.settimeout(0.2)
            self._listener = listener
            self.host, self.port = listener.getsockname()[:2]
            serve_accepts(listener, lambda: self.closed, self.secret, self.name, self._add_connection,
                          self._refused, f"tcp-accept:{self.name}", self.max_pending)
        return self.host, self.port

    def _refused(self) -> None:
        self.num_refused += 1

    def connect(self, address: tuple[str, int], timeout_s: float = 10.0) -> str:
        host, port = address  # a list too: addresses decoded from JSON are lists
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        try:
            peer, session = client_handshake(sock, self.secret, self.name)
        except AuthError as exc:
            sock.close()
            raise TransportError(f"{self.name}: {exc}") from exc
        added = self._add_connection(sock, peer, session)
        if added is None:
            raise TransportError(f"{self.name}: transport closed while connecting to {address[0]}:{address[1]}")
        return added

    def _add_connection(self, sock: socket.socket, peer: str, session: Session) -> str | None:
        """The new connection's peer name; None when the transport closed meanwhile (the socket is closed)."""
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        session = session if self.frame_mac else Session.untagged()
        conn = self._conns.add(peer, lambda unique: TcpConnection(self, unique, sock, session, self.limiter,
                                                                  self._deliver, self._connection_lost))
        conn.start()
        if self.closed:
            # close() ran while this handshake finished: it set `closed` before walking the registry, so
            # either it closed this connection or this check sees the flag; without it both ends'
            # threads outlived their transports.
            conn.closing_by_us = True
            conn.close()
            return None
        LOG.info("%s: connected to %s", self.name, conn.peer)
        return conn.peer

    def peers(self) -> list[str]:
        return self._conns.names()

    def _connection_lost(self, conn: TcpConnection, error: TransportError) -> None:
        self._conns.remove(conn.peer, conn)
        with self._lock:
            for key in [key for key in self._remote_cache if key[0] == conn.peer]:
                del self._remote_cache[key]
        if not self.closed and not conn.closing_by_us:
            self._peer_lost(conn.peer, error)

    def remote_region(self, peer: str, name: str, timeout_s: float = 10.0) -> RemoteRegion:
        cached = self._remote_cache.get((peer, name))
        if cached is not None:
            return cached
        region_id, nbytes = self._conns.get(peer).lookup_region(name, timeout_s)
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
                raise TransportError(f"{self.name}: one post goes to one peer "
                                     f"({peer!r}, not {op.remote.peer!r})")
            if self.limiter is not None and op.lane not in self.limiter.weights:
                raise SpecError(f"transport {self.name}", "lane", op.lane,
                                "one of " + ", ".join(self.limiter.weights))
            total += check_write(op)
        conn = self._conns.get(peer)
        ticket = Ticket(peer, len(ops), total)
        inline_ok = total <= INLINE_BYTES and (self.limiter is None or self.limiter.unlimited) and not any(
            isinstance(op.local, LocalRegion) and op.local.memory.on_device for op in ops)
        conn.enqueue_post(ticket, conn.next_seq(), list(ops), inline_ok)
        return ticket

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._listener is not None:
            self._listener.close()
        for conn in self._conns.connections():
            conn.closing_by_us = True
            conn.close()
