"""Verbs transport: RC queue pairs and one-sided RDMA WRITE (with immediate) through pyverbs.

One RC QP per peer. Queue-pair information (qp_num, lid, gid, psn, mtu) and region descriptors
(addr, rkey) travel over a TCP side channel that runs the same cluster-secret handshake as every
other connection. A `post` becomes one linked list of `SendWR`s handed to `post_send` at once
(doorbell batching) with only the last WR signalled; a write with an immediate consumes a posted
receive at the target, whose completion carries the immediate. With `cnic_centric=True` local
copies are RDMA writes on a loopback QP pair, so they go through the NIC as in the paper.

pyverbs is imported lazily (`make test-rdma` installs it): queue-pair setup and device probing live in
`dualpath.runtime.transports.verbs_qp`, the side-channel encodings (`QPInfo`, `RegionInfo`, pure Python) in
`dualpath.runtime.transports.verbs_wire`, WR chains and completion polling in `dualpath.runtime.transports.verbs_send_queue`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from collections.abc import Sequence

from dualpath.errors import SpecError
from dualpath.runtime.transports.auth import AuthError, client_handshake, serve_accepts, server_handshake
from dualpath.runtime.transports.transport import Transport
from dualpath.runtime.transports.transport_types import (
    CopyOp,
    LocalRegion,
    RemoteRegion,
    Ticket,
    TransportError,
    WriteOp,
    check_write,
)
from dualpath.runtime.transports.verbs_qp import (
    MAX_WR,
    NUM_RECV,
    QueuePairSetup,
    _pv,
    rdma_devices,
)
from dualpath.runtime.transports.verbs_send_queue import SendQueue
from dualpath.runtime.transports.verbs_wire import (
    LOOKUP,
    NOTFOUND,
    QPINFO,
    REGION,
    QPInfo,
    RegionInfo,
    recv_msg,
    send_msg,
)

LOG = logging.getLogger("dualpath.runtime.verbs")


class _Peer:
    """A connected peer: its QP, side-channel socket, and in-flight posts."""

    def __init__(self, name: str, sock: socket.socket, qp) -> None:
        self.name = name
        self.sock = sock
        self.qp = qp
        self.alive = True
        self.lock = threading.Lock()
        self.lookups: dict[str, list] = {}


class VerbsTransport(QueuePairSetup, SendQueue, Transport):
    """RDMA backend. `device` defaults to the first RDMA device, `gid_index` to the first non-zero GID."""

    kind = "verbs"

    def __init__(self, name, secret, host="127.0.0.1", port=0, limiter=None, cnic_centric=False,
                 device: str | None = None, ib_port: int = 1, gid_index: int | None = None,
                 sl: int = 0) -> None:
        super().__init__(name, secret, host, port, limiter, cnic_centric)
        d, e = _pv("pyverbs.device"), _pv("pyverbs.libibverbs_enums")
        self._e = e
        names = rdma_devices()
        if not names:
            raise TransportError("no RDMA device found (get_device_list() is empty)")
        self.device = device or names[0]
        self.ctx = d.Context(name=self.device)
        self.ib_port, self.sl = ib_port, sl
        self.port_attr = self.ctx.query_port(ib_port)
        if self.port_attr.state != e.IBV_PORT_ACTIVE:
            raise TransportError(f"{self.device} port {ib_port} is not active")
        self.gid_index = gid_index if gid_index is not None else self._first_gid()
        self.gid = str(self.ctx.query_gid(ib_port, self.gid_index))
        self.pd = _pv("pyverbs.pd").PD(self.ctx)
        cq_cls = _pv("pyverbs.cq").CQ
        self.send_cq, self.recv_cq = cq_cls(self.ctx, 4 * MAX_WR), cq_cls(self.ctx, 4 * NUM_RECV)
        mr_cls = _pv("pyverbs.mr").MR
        self._recv_mr = mr_cls(self.pd, 64, e.IBV_ACCESS_LOCAL_WRITE)
        self._peers: dict[str, _Peer] = {}
        self._by_qp: dict[int, _Peer] = {}
        self._posts: dict[int, tuple[Ticket, list, _Peer | None, deque[int]]] = {}
        self._next_wr = 1
        self._room = threading.Condition(self._lock)  # signalled when send-queue slots free up
        self._outstanding: dict[int, int] = {}  # qp_num -> WRs posted and not yet completed
        self._listener: socket.socket | None = None
        self._loopback: tuple | None = None
        self._poller = threading.Thread(target=self._poll_loop, name=f"verbs-cq:{name}", daemon=True)
        self._poller.start()

    # -- connections -------------------------------------------------------------------------------
    def listen(self) -> tuple[str, int]:
        if self._listener is None:
            self._listener = socket.create_server((self.host, self.port), backlog=64)
            self._listener.settimeout(0.2)
            self.host, self.port = self._listener.getsockname()[:2]
            serve_accepts(self._listener, lambda: self.closed, self._admit, f"verbs-accept:{self.name}")
        return self.host, self.port


    def _admit(self, sock: socket.socket) -> None:
        try:
            peer = server_handshake(sock, self.secret, self.name)
            kind, payload = recv_msg(sock)
            if kind != QPINFO:
                raise TransportError(f"peer {peer} sent message {kind} before its QP info")
            qp, local = self._create_qp()
            self._to_rts(qp, local, QPInfo.decode(payload))
            send_msg(sock, QPINFO, local.encode())
        except (AuthError, TransportError, OSError, ConnectionError) as exc:
            LOG.warning("%s: refused a connection: %s", self.name, exc)
            self.num_refused += 1
            sock.close()
            return
        self._add_peer(peer, sock, qp)

    def connect(self, address: tuple[str, int], timeout_s: float = 10.0) -> str:
        try:
            sock = socket.create_connection(tuple(address), timeout=timeout_s)
            peer = client_handshake(sock, self.secret, self.name)
            qp, local = self._create_qp()
            send_msg(sock, QPINFO, local.encode())
            kind, payload = recv_msg(sock)
            if kind != QPINFO:
                raise TransportError(f"peer {peer} answered message {kind}, not its QP info")
            self._to_rts(qp, local, QPInfo.decode(payload))
        except (AuthError, OSError, ConnectionError) as exc:
            raise TransportError(f"{self.name}: cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        return self._add_peer(peer, sock, qp)

    def _add_peer(self, name: str, sock: socket.socket, qp) -> str:
        sock.settimeout(None)
        with self._lock:
            unique, n = name, 2
            while unique in self._peers:
                unique, n = f"{name}#{n}", n + 1
            peer = _Peer(unique, sock, qp)
            self._peers[unique] = peer
            self._by_qp[qp.qp_num] = peer
        threading.Thread(target=self._side_loop, args=(peer,), daemon=True,
                         name=f"verbs-side:{unique}").start()
        return unique

    def peers(self) -> list[str]:
        with self._lock:
            return sorted(self._peers)

    def _peer(self, name: str) -> _Peer:
        with self._lock:
            peer = self._peers.get(name)
        if peer is None or not peer.alive:
            raise TransportError(f"{self.name}: not connected to peer {name!r}")
        return peer

    def _side_loop(self, peer: _Peer) -> None:
        try:
            while True:
                kind, payload = recv_msg(peer.sock)
                if kind == LOOKUP:
                    try:
                        info = self._region_info(self.region(payload.decode()))
                        with peer.lock:
                            send_msg(peer.sock, REGION, info.encode())
                    except SpecError:
                        with peer.lock:
                            send_msg(peer.sock, NOTFOUND, payload)
                elif kind in (REGION, NOTFOUND):
                    name = RegionInfo.decode(payload).name if kind == REGION else payload.decode()
                    waiter = peer.lookups.pop(name, None)
                    if waiter is not None:
                        waiter[1] = RegionInfo.decode(payload) if kind == REGION else None
                        waiter[0].set()
        except (OSError, ConnectionError, TransportError) as exc:
            self._drop(peer, TransportError(f"{self.name}: side channel to peer {peer.name} lost: {exc}"))

    def _drop(self, peer: _Peer, error: TransportError) -> None:
        with self._lock:
            if not peer.alive:
                return
            peer.alive = False
            self._peers.pop(peer.name, None)
            failed = [key for key, post in self._posts.items() if post[2] is peer]
            posts = [self._posts.pop(key) for key in failed]
        for ticket, *_ in posts:
            ticket._finish(error)
        for waiter in peer.lookups.values():
            waiter[0].set()
        peer.sock.close()
        with self._lock:
            self._by_qp.pop(peer.qp.qp_num, None)
            self._room.notify_all()
        try:
            peer.qp.close()
        except _pv("pyverbs.pyverbs_error").PyverbsError as exc:
            LOG.warning("%s: destroying the QP of %s failed: %s", self.name, peer.name, exc)
        if not self.closed:
            self._peer_lost(peer.name, error)

    def remote_region(self, peer: str, name: str, timeout_s: float = 10.0) -> RemoteRegion:
        conn = self._peer(peer)
        waiter = [threading.Event(), None]
        conn.lookups[name] = waiter
        with conn.lock:
            send_msg(conn.sock, LOOKUP, name.encode())
        if not waiter[0].wait(timeout_s) or waiter[1] is None:
            raise TransportError(f"{self.name}: peer {peer} has no region {name!r} (or did not answer)")
        info = waiter[1]
        return RemoteRegion(peer, name, info.region_id, info.nbytes, info.addr, info.rkey)

    # -- data path ---------------------------------------------------------------------------------
    def post(self, ops: Sequence[WriteOp]) -> Ticket:
        if not ops:
            raise TransportError(f"{self.name}: post of no writes")
        peer = self._peer(ops[0].remote.peer)
        sizes = []
        for op in ops:
            if op.remote.peer != peer.name or not isinstance(op.local, LocalRegion):
                raise TransportError(f"{self.name}: a verbs post goes to one peer from registered regions")
            sizes.append(check_write(op))
        ticket = Ticket(peer.name, len(ops), sum(sizes))
        # The NIC emulation paces the caller here; a real NIC paces itself and needs no limiter.
        for op, nbytes in zip(ops, sizes):
            if self.limiter is not None:
                self.limiter.acquire(nbytes, op.lane)
        writes = [(op.local, op.local_offset, op.remote.addr + op.remote_offset, op.remote.rkey, n, op.imm)
                  for op, n in zip(ops, sizes)]
        self._post_chain(peer, peer.qp, ticket, writes)
        return ticket

    def _copy_backend(self, ops: Sequence[CopyOp]) -> None:
        if not self.cnic_centric:
            return super()._copy_backend(ops)
        if self._loopback is None:
            (qa, ia), (qb, ib) = self._create_qp(), self._create_qp()
            self._to_rts(qa, ia, ib)
            self._to_rts(qb, ib, ia)
            self._loopback = (qa, qb)
        ticket = Ticket(self.name, len(ops), sum(op.nbytes for op in ops))
        writes = [(op.src, op.src_offset, op.dst.memory.ptr + op.dst_offset, op.dst.backend.rkey, op.nbytes,
                   None) for op in ops]
        self._post_chain(None, self._loopback[0], ticket, writes)
        ticket.wait(30.0)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._listener is not None:
            self._listener.close()
        for peer in list(self._peers.values()):
            self._drop(peer, TransportError(f"{self.name}: transport closed"))
        self._poller.join(timeout=1.0)
        self.ctx.close()
