"""Verbs transport: RC queue pairs and one-sided RDMA WRITE (with immediate) through pyverbs.

One RC QP per peer. Queue-pair information (qp_num, lid, gid, psn, mtu) and region descriptors
(addr, rkey) travel over a TCP side channel that runs the same cluster-secret handshake as every
other connection. A `post` becomes one linked list of `SendWR`s handed to `post_send` at once
(doorbell batching) with only the last WR signalled; a write with an immediate consumes a posted
receive at the target, whose completion carries the immediate. With `cnic_centric=True` local
copies are RDMA writes on a loopback QP pair, so they go through the NIC as in the paper.

pyverbs is imported lazily (`make test-rdma` installs it). The opened device and QP setup live in
`dualpath.runtime.transports.verbs_qp` (`VerbsDevice`), the side-channel encodings and the peer (pure
Python) in `dualpath.runtime.transports.verbs_wire`, WR chains and completion polling in
`dualpath.runtime.transports.verbs_send_queue` (`SendQueue`); this transport owns one of each.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from typing import Any

from dualpath.errors import SpecError
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.accepts import serve_accepts
from dualpath.runtime.transports.auth import AuthError, client_handshake
from dualpath.runtime.transports.peers import PeerRegistry
from dualpath.runtime.transports.ratelimit import NicLimiter
from dualpath.runtime.transports.session import Session
from dualpath.runtime.transports.transport import Transport
from dualpath.runtime.transports.transport_types import (
    CopyOp,
    LocalRegion,
    RegionLookup,
    RemoteRegion,
    Ticket,
    TransportError,
    WriteOp,
    check_write,
)
from dualpath.runtime.transports.verbs_qp import QueuePair, VerbsDevice, pyverbs_module
from dualpath.runtime.transports.verbs_send_queue import RdmaWrite, SendQueue
from dualpath.runtime.transports.verbs_wire import (
    LOOKUP,
    NOTFOUND,
    QPINFO,
    REGION,
    QPInfo,
    RegionInfo,
    VerbsPeer,
    recv_msg,
    send_msg,
)

LOG = logging.getLogger("dualpath.runtime.verbs")


class VerbsTransport(Transport):
    """RDMA backend. `device` defaults to the first RDMA device; `gid` (an address in the port's GID
    table) or `gid_index` picks the GID, else the port's RoCE v2 GID with the most routable address."""

    kind = "verbs"

    def __init__(self, name: str, secret: bytes | str, host: str = "127.0.0.1", port: int = 0,
                 limiter: NicLimiter | None = None, cnic_centric: bool = False, device: str | None = None,
                 ib_port: int = 1, gid_index: int | None = None, gid: str | None = None, sl: int = 0) -> None:
        super().__init__(name, secret, host, port, limiter, cnic_centric)
        self.nic = VerbsDevice(name, device, ib_port, gid_index, gid, sl)
        self.device = self.nic.name
        self._peers: PeerRegistry[VerbsPeer] = PeerRegistry(name)
        self._listener: socket.socket | None = None
        # The QP pair that carries cnic-centric local copies.
        self._loopback: tuple[QueuePair, QueuePair] | None = None
        self._sends = SendQueue(name, self.nic, self._deliver, self._drop, lambda: self.closed)
        self._sends.start()

    # -- memory ------------------------------------------------------------------------------------
    def _register_backend(self, name: str, memory: Memory) -> Any:
        return self.nic.register(name, memory)

    def _deregister_backend(self, region: LocalRegion) -> None:
        region.backend.close()

    # -- connections -------------------------------------------------------------------------------
    def listen(self) -> tuple[str, int]:
        if self._listener is None:
            self._listener = socket.create_server((self.host, self.port), backlog=64)
            self._listener.settimeout(0.2)
            self.host, self.port = self._listener.getsockname()[:2]
            serve_accepts(self._listener, lambda: self.closed, self.secret, self.name, self._admit,
                          self._refused, f"verbs-accept:{self.name}")
        return self.host, self.port

    def _refused(self) -> None:
        self.num_refused += 1

    def _admit(self, sock: socket.socket, peer: str, session: Session) -> None:
        qp: QueuePair | None = None
        pv_error = pyverbs_module("pyverbs.pyverbs_error").PyverbsError
        try:
            kind, payload = recv_msg(sock, session.recv)
            if kind != QPINFO:
                raise TransportError(f"peer {peer} sent message {kind} before its QP info")
            qp, local = self.nic.create_qp()
            self.nic.to_rts(qp, local, QPInfo.decode(payload))
            send_msg(sock, session.send, QPINFO, local.encode())
        except (TransportError, OSError, ConnectionError, pv_error) as exc:
            LOG.warning("%s: refused a connection: %s", self.name, exc)
            self.num_refused += 1
            sock.close()
            if qp is not None:
                qp.close()
            return
        self._add_peer(peer, sock, qp, session)

    def connect(self, address: tuple[str, int], timeout_s: float = 10.0) -> str:
        host, port = address  # a list too: addresses decoded from JSON are lists
        qp: QueuePair | None = None
        pv_error = pyverbs_module("pyverbs.pyverbs_error").PyverbsError
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
            peer, session = client_handshake(sock, self.secret, self.name)
            qp, local = self.nic.create_qp()
            send_msg(sock, session.send, QPINFO, local.encode())
            kind, payload = recv_msg(sock, session.recv)
            if kind != QPINFO:
                raise TransportError(f"peer {peer} answered message {kind}, not its QP info")
            self.nic.to_rts(qp, local, QPInfo.decode(payload))
        except (AuthError, OSError, ConnectionError, TransportError, pv_error) as exc:
            if qp is not None:
                qp.close()
            raise TransportError(f"{self.name}: cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        return self._add_peer(peer, sock, qp, session)

    def _add_peer(self, name: str, sock: socket.socket, qp: QueuePair, session: Session) -> str:
        sock.settimeout(None)
        peer = self._peers.add(name, lambda unique: VerbsPeer(unique, sock, qp, session))
        self._sends.attach(qp, peer)
        threading.Thread(target=self._side_loop, args=(peer,), daemon=True,
                         name=f"verbs-side:{peer.name}").start()
        return peer.name

    def peers(self) -> list[str]:
        return self._peers.names()

    def _side_loop(self, peer: VerbsPeer) -> None:
        try:
            while True:
                kind, payload = recv_msg(peer.sock, peer.session.recv)
                if kind == LOOKUP:
                    try:
                        info = self.nic.region_info(self.region(payload.decode()))
                        with peer.lock:
                            send_msg(peer.sock, peer.session.send, REGION, info.encode())
                    except SpecError:
                        with peer.lock:
                            send_msg(peer.sock, peer.session.send, NOTFOUND, payload)
                elif kind in (REGION, NOTFOUND):
                    name = RegionInfo.decode(payload).name if kind == REGION else payload.decode()
                    lookup = peer.lookups.pop(name, None)
                    if lookup is not None:
                        lookup.answer(RegionInfo.decode(payload) if kind == REGION else None)
        except (OSError, ConnectionError, TransportError) as exc:
            self._drop(peer, TransportError(f"{self.name}: side channel to peer {peer.name} lost: {exc}"))
        except Exception as exc:  # a malformed message (bad UTF-8, a short descriptor): close, logged
            LOG.warning("%s: closing the side channel to %s: %s: %s", self.name, peer.name, type(exc).__name__, exc)
            self._drop(peer, TransportError(f"{self.name}: side channel to peer {peer.name} broken: {exc}"))

    def _drop(self, peer: VerbsPeer, error: TransportError) -> None:
        if not self._peers.remove(peer.name, peer):
            return  # already dropped: the registry removes a peer once, so one caller gets past here
        peer.alive = False
        for ticket in self._sends.forget(peer):
            ticket.finish(error)
        for lookup in peer.lookups.values():
            lookup.cancel()
        peer.sock.close()
        self._sends.detach(peer.qp)  # from here on no thread uses the QP: it can be destroyed
        try:
            peer.qp.close()
        except pyverbs_module("pyverbs.pyverbs_error").PyverbsError as exc:
            LOG.warning("%s: destroying the QP of %s failed: %s", self.name, peer.name, exc)
        if not self.closed:
            self._peer_lost(peer.name, error)

    def remote_region(self, peer: str, name: str, timeout_s: float = 10.0) -> RemoteRegion:
        conn = self._peers.get(peer)
        lookup: RegionLookup[RegionInfo] = RegionLookup()
        conn.lookups[name] = lookup
        with conn.lock:
            send_msg(conn.sock, conn.session.send, LOOKUP, name.encode())
        if not lookup.wait(timeout_s) or lookup.found is None:
            raise TransportError(f"{self.name}: peer {peer} has no region {name!r} (or did not answer)")
        info = lookup.found
        return RemoteRegion(peer, name, info.region_id, info.nbytes, info.addr, info.rkey)

    # -- data path ---------------------------------------------------------------------------------
    def post(self, ops: Sequence[WriteOp]) -> Ticket:
        if not ops:
            raise TransportError(f"{self.name}: post of no writes")
        peer = self._peers.get(ops[0].remote.peer)
        writes: list[RdmaWrite] = []
        for op in ops:
            if op.remote.peer != peer.name or not isinstance(op.local, LocalRegion):
                raise TransportError(f"{self.name}: a verbs post goes to one peer from registered regions")
            writes.append(RdmaWrite(op.local, op.local_offset, op.remote.addr + op.remote_offset, op.remote.rkey,
                                    check_write(op), op.imm))
        ticket = Ticket(peer.name, len(ops), sum(write.nbytes for write in writes))
        # The NIC emulation paces the caller here; a real NIC paces itself and needs no limiter.
        for op, write in zip(ops, writes):
            if self.limiter is not None:
                self.limiter.acquire(write.nbytes, op.lane)
        self._sends.post_chain(peer, peer.qp, ticket, writes)
        return ticket

    def _copy_backend(self, ops: Sequence[CopyOp]) -> None:
        if not self.cnic_centric:
            return super()._copy_backend(ops)
        if self._loopback is None:
            (qa, ia), (qb, ib) = self.nic.create_qp(), self.nic.create_qp()
            self.nic.to_rts(qa, ia, ib)
            self.nic.to_rts(qb, ib, ia)
            self._loopback = (qa, qb)
            self._sends.attach(qa, None)
            self._sends.attach(qb, None)
        ticket = Ticket(self.name, len(ops), sum(op.nbytes for op in ops))
        writes = [RdmaWrite(op.src, op.src_offset, op.dst.memory.ptr + op.dst_offset, op.dst.backend.rkey,
                            op.nbytes, None) for op in ops]
        self._sends.post_chain(None, self._loopback[0], ticket, writes)
        ticket.wait(30.0)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._listener is not None:
            self._listener.close()
        for peer in self._peers.connections():
            self._drop(peer, TransportError(f"{self.name}: transport closed"))
        for pair in self._loopback or ():
            self._sends.detach(pair)  # the poller must not be inside a CQ the context is about to destroy
        self._sends.join(timeout_s=1.0)
        self.nic.close()
