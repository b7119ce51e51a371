"""Verbs transport: RC queue pairs and one-sided RDMA WRITE (with immediate) through pyverbs.

One RC QP per peer. Queue-pair information (qp_num, lid, gid, psn, mtu) and region descriptors
(addr, rkey) travel over a TCP side channel that runs the same cluster-secret handshake as every
other connection. A `post` becomes one linked list of `SendWR`s handed to `post_send` at once
(doorbell batching) with only the last WR signalled; a write with an immediate consumes a posted
receive at the target, whose completion carries the immediate. With `cnic_centric=True` local
copies are RDMA writes on a loopback QP pair, so they go through the NIC as in the paper.

pyverbs is imported lazily (`make test-rdma` installs it); `PYVERBS_NAMES` lists every pyverbs name
this module uses so a test can check them without a device. `QPInfo` / `RegionInfo` encoding is
pure Python.
"""

from __future__ import annotations

import importlib
import logging
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from dualpath.runtime.auth import AuthError, client_handshake, recv_exact, server_handshake
from dualpath.runtime.buffers import Memory
from dualpath.runtime.transport import (
    Completion,
    CopyOp,
    LocalRegion,
    RemoteRegion,
    Ticket,
    Transport,
    TransportError,
    WriteOp,
    check_write,
)

from dualpath.errors import SpecError, require

LOG = logging.getLogger("dualpath.runtime.verbs")

PYVERBS_NAMES = (
    ("pyverbs.device", "get_device_list"), ("pyverbs.device", "Context"), ("pyverbs.pd", "PD"),
    ("pyverbs.mr", "MR"), ("pyverbs.cq", "CQ"), ("pyverbs.qp", "QP"), ("pyverbs.qp", "QPInitAttr"),
    ("pyverbs.qp", "QPCap"), ("pyverbs.qp", "QPAttr"), ("pyverbs.wr", "SendWR"), ("pyverbs.wr", "RecvWR"),
    ("pyverbs.wr", "SGE"), ("pyverbs.addr", "AHAttr"), ("pyverbs.addr", "GlobalRoute"), ("pyverbs.addr", "GID"),
    ("pyverbs.pyverbs_error", "PyverbsError"),
    ("pyverbs.enums", "IBV_QPT_RC"), ("pyverbs.enums", "IBV_ACCESS_LOCAL_WRITE"),
    ("pyverbs.enums", "IBV_ACCESS_REMOTE_WRITE"), ("pyverbs.enums", "IBV_WR_RDMA_WRITE"),
    ("pyverbs.enums", "IBV_WR_RDMA_WRITE_WITH_IMM"), ("pyverbs.enums", "IBV_SEND_SIGNALED"),
    ("pyverbs.enums", "IBV_WC_SUCCESS"), ("pyverbs.enums", "IBV_WC_RECV_RDMA_WITH_IMM"),
    ("pyverbs.enums", "IBV_PORT_ACTIVE"), ("pyverbs.enums", "IBV_LINK_LAYER_ETHERNET"),
)
ZERO_GID = "0000:0000:0000:0000:0000:0000:0000:0000"
_QP_INFO = struct.Struct("!4sBIH16sIB")  # magic, version, qp_num, lid, gid, psn, mtu enum
_REGION = struct.Struct("!4sIQQIH")  # magic, region id, nbytes, addr, rkey, name length
MSG = struct.Struct("!BI")  # side-channel message: kind, payload length
QPINFO, LOOKUP, REGION, NOTFOUND = 1, 2, 3, 4
MAX_WR = 1024
NUM_RECV = 512


def _pv(module: str):
    require("pyverbs", "rdma")
    return importlib.import_module(module)


@dataclass(frozen=True)
class QPInfo:
    """What a peer needs to connect its RC QP to ours (24-bit qp_num and psn, 16-bit lid, GID)."""

    qp_num: int
    lid: int
    gid: str
    psn: int
    mtu: int

    def encode(self) -> bytes:
        for field, value, bits in (("qp_num", self.qp_num, 24), ("psn", self.psn, 24), ("lid", self.lid, 16),
                                   ("mtu", self.mtu, 8)):
            if not 0 <= value < 2**bits:
                raise TransportError(f"QPInfo.{field} = {value} does not fit in {bits} bits")
        try:
            raw_gid = bytes.fromhex(self.gid.replace(":", ""))
        except ValueError:
            raw_gid = b""
        if len(raw_gid) != 16:
            raise TransportError(f"QPInfo.gid = {self.gid!r} is not a 16-byte GID")
        return _QP_INFO.pack(b"DPQP", 1, self.qp_num, self.lid, raw_gid, self.psn, self.mtu)

    @classmethod
    def decode(cls, data: bytes) -> QPInfo:
        if len(data) != _QP_INFO.size:
            raise TransportError(f"QP info is {len(data)} bytes, expected {_QP_INFO.size}")
        magic, version, qp_num, lid, raw_gid, psn, mtu = _QP_INFO.unpack(data)
        if magic != b"DPQP" or version != 1:
            raise TransportError(f"QP info has magic {magic!r} version {version}, expected b'DPQP' 1")
        hexgid = raw_gid.hex()
        return cls(qp_num, lid, ":".join(hexgid[i : i + 4] for i in range(0, 32, 4)), psn, mtu)


@dataclass(frozen=True)
class RegionInfo:
    """A registered region as advertised to peers: id, size, virtual address and rkey."""

    name: str
    region_id: int
    nbytes: int
    addr: int
    rkey: int

    def encode(self) -> bytes:
        raw = self.name.encode()
        return _REGION.pack(b"DPRG", self.region_id, self.nbytes, self.addr, self.rkey, len(raw)) + raw

    @classmethod
    def decode(cls, data: bytes) -> RegionInfo:
        if len(data) < _REGION.size:
            raise TransportError(f"region info is {len(data)} bytes, shorter than {_REGION.size}")
        magic, region_id, nbytes, addr, rkey, length = _REGION.unpack_from(data)
        if magic != b"DPRG" or len(data) != _REGION.size + length:
            raise TransportError(f"malformed region info (magic {magic!r}, {len(data)} bytes)")
        return cls(data[_REGION.size :].decode(), region_id, nbytes, addr, rkey)


def send_msg(sock: socket.socket, kind: int, payload: bytes = b"") -> None:
    sock.sendall(MSG.pack(kind, len(payload)) + payload)


def recv_msg(sock: socket.socket) -> tuple[int, bytes]:
    kind, length = MSG.unpack(recv_exact(sock, MSG.size))
    return kind, recv_exact(sock, length)


def device_unavailable_reason() -> str | None:
    """Why verbs cannot run here (None when pyverbs and an RDMA device are both present)."""
    try:
        device = importlib.import_module("pyverbs.device")
    except ImportError:
        return "pyverbs is not installed (make test-rdma installs it)"
    errors = importlib.import_module("pyverbs.pyverbs_error")
    try:
        devices = device.get_device_list()
    except (errors.PyverbsError, OSError) as exc:  # no kernel driver, no uverbs device nodes
        return f"get_device_list() failed: {exc}"
    return None if devices else "no RDMA device (get_device_list() returned nothing)"


def rdma_devices() -> list[str]:
    """Names of RDMA devices ([] when pyverbs is installed but none exists)."""
    return [dev.name.decode() for dev in _pv("pyverbs.device").get_device_list()]


class _Peer:
    """A connected peer: its QP, side-channel socket, and in-flight posts."""

    def __init__(self, name: str, sock: socket.socket, qp) -> None:
        self.name = name
        self.sock = sock
        self.qp = qp
        self.alive = True
        self.lock = threading.Lock()
        self.lookups: dict[str, list] = {}


class VerbsTransport(Transport):
    """RDMA backend. `device` defaults to the first RDMA device, `gid_index` to the first non-zero GID."""

    kind = "verbs"

    def __init__(self, name, secret, host="127.0.0.1", port=0, limiter=None, cnic_centric=False,
                 device: str | None = None, ib_port: int = 1, gid_index: int | None = None, sl: int = 0) -> None:
        super().__init__(name, secret, host, port, limiter, cnic_centric)
        d, e = _pv("pyverbs.device"), _pv("pyverbs.enums")
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

    def _first_gid(self) -> int:
        for index in range(self.port_attr.gid_tbl_len):
            if str(self.ctx.query_gid(self.ib_port, index)) != ZERO_GID:
                return index
        return 0

    # -- memory ------------------------------------------------------------------------------------
    def _register_backend(self, name: str, memory: Memory):
        e = self._e
        access = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
        try:
            return _pv("pyverbs.mr").MR(self.pd, memory.nbytes, access, address=memory.ptr)
        except _pv("pyverbs.pyverbs_error").PyverbsError as exc:
            hint = " (GPU memory needs GPUDirect RDMA: nvidia-peermem)" if memory.on_device else ""
            raise TransportError(f"{self.name}: cannot register region {name!r}{hint}: {exc}") from exc

    def _deregister_backend(self, region: LocalRegion) -> None:
        region.backend.close()

    def _region_info(self, region: LocalRegion) -> RegionInfo:
        return RegionInfo(region.name, region.region_id, region.nbytes, region.memory.ptr, region.backend.rkey)

    # -- queue pairs -------------------------------------------------------------------------------
    def _create_qp(self):
        qp_mod, e = _pv("pyverbs.qp"), self._e
        cap = qp_mod.QPCap(max_send_wr=MAX_WR, max_recv_wr=NUM_RECV, max_send_sge=1, max_recv_sge=1)
        init = qp_mod.QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.send_cq, rcq=self.recv_cq, cap=cap, sq_sig_all=0)
        attr = qp_mod.QPAttr(port_num=self.ib_port)
        attr.qp_access_flags = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
        qp = qp_mod.QP(self.pd, init, attr)
        wr_mod = _pv("pyverbs.wr")
        for i in range(NUM_RECV):
            sge = wr_mod.SGE(self._recv_mr.buf, 64, self._recv_mr.lkey)
            qp.post_recv(wr_mod.RecvWR(wr_id=i, num_sge=1, sg=[sge]))
        return qp, QPInfo(qp.qp_num, self.port_attr.lid, self.gid, random.getrandbits(24), self.port_attr.active_mtu)

    def _to_rts(self, qp, local: QPInfo, remote: QPInfo) -> None:
        qp_mod, addr = _pv("pyverbs.qp"), _pv("pyverbs.addr")
        attr = qp_mod.QPAttr(port_num=self.ib_port)
        attr.qp_access_flags = self._e.IBV_ACCESS_LOCAL_WRITE | self._e.IBV_ACCESS_REMOTE_WRITE
        attr.path_mtu = min(local.mtu, remote.mtu)
        attr.dest_qp_num, attr.rq_psn, attr.sq_psn = remote.qp_num, remote.psn, local.psn
        attr.max_dest_rd_atomic = attr.max_rd_atomic = 1
        attr.min_rnr_timer, attr.timeout, attr.retry_cnt, attr.rnr_retry = 12, 14, 7, 7
        is_global = int(remote.gid != ZERO_GID)
        route = addr.GlobalRoute(dgid=addr.GID(remote.gid), sgid_index=self.gid_index) if is_global else None
        attr.ah_attr = addr.AHAttr(port_num=self.ib_port, is_global=is_global, gr=route, dlid=remote.lid, sl=self.sl)
        qp.to_rts(attr)

    # -- connections -------------------------------------------------------------------------------
    def listen(self) -> tuple[str, int]:
        if self._listener is None:
            self._listener = socket.create_server((self.host, self.port), backlog=64)
            self._listener.settimeout(0.2)
            self.host, self.port = self._listener.getsockname()[:2]
            threading.Thread(target=self._accept_loop, daemon=True, name=f"verbs-accept:{self.name}").start()
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
        threading.Thread(target=self._side_loop, args=(peer,), daemon=True, name=f"verbs-side:{unique}").start()
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
        self._post_chain(peer, peer.qp, ticket, [(op.local, op.local_offset, op.remote.addr + op.remote_offset,
                                                  op.remote.rkey, n, op.imm) for op, n in zip(ops, sizes)])
        return ticket

    def _post_chain(self, peer, qp, ticket: Ticket, writes: list) -> None:
        """Post writes as linked lists (one `post_send`, one doorbell, each) of at most MAX_WR // 2 WRs,
        each list's last WR signalled; waits for send-queue room so the QP never overflows."""
        wr_mod, e, pv_error = _pv("pyverbs.wr"), self._e, _pv("pyverbs.pyverbs_error").PyverbsError
        chunks = [writes[i : i + MAX_WR // 2] for i in range(0, len(writes), MAX_WR // 2)]
        with self._lock:
            wr_id = self._next_wr
            self._next_wr += 1
            keep: list = []  # pyverbs WRs must outlive their completion
            self._posts[wr_id] = (ticket, keep, peer, deque(len(chunk) for chunk in chunks))
        for chunk in chunks:
            head = None
            for local, local_offset, remote_addr, rkey, nbytes, imm in reversed(chunk):
                sge = wr_mod.SGE(local.memory.ptr + local_offset, nbytes, local.backend.lkey)
                opcode = e.IBV_WR_RDMA_WRITE if imm is None else e.IBV_WR_RDMA_WRITE_WITH_IMM
                flags = e.IBV_SEND_SIGNALED if head is None else 0
                wr = wr_mod.SendWR(wr_id=wr_id, opcode=opcode, num_sge=1, sg=[sge], send_flags=flags,
                                   imm_data=socket.htonl(imm or 0), next_wr=head)
                wr.set_wr_rdma(rkey, remote_addr)
                keep.append(wr)
                head = wr
            with self._room:
                while self._outstanding.get(qp.qp_num, 0) + len(chunk) > MAX_WR:
                    if self.closed or (peer is not None and not peer.alive):
                        return  # _drop or close already failed the ticket
                    self._room.wait(0.1)
                self._outstanding[qp.qp_num] = self._outstanding.get(qp.qp_num, 0) + len(chunk)
            try:
                qp.post_send(head)
            except pv_error as exc:
                with self._lock:
                    self._posts.pop(wr_id, None)
                ticket._finish(TransportError(f"{self.name}: post_send to {ticket.peer} failed: {exc}"))
                return

    def _poll_loop(self) -> None:
        """Reap send completions (finish tickets, free send-queue room) and receive completions
        (writes with immediates: deliver, repost the receive)."""
        e, idle = self._e, 0
        while not self.closed:
            _, sent = self.send_cq.poll(64)
            for wc in sent:
                self._send_completed(wc)
            _, received = self.recv_cq.poll(64)
            for wc in received:
                peer = self._by_qp.get(wc.qp_num)
                if wc.status == e.IBV_WC_SUCCESS and wc.opcode == e.IBV_WC_RECV_RDMA_WITH_IMM and peer is not None:
                    self._deliver(Completion(peer.name, "", -1, wc.byte_len, socket.ntohl(wc.imm_data)))
                    self._repost_recv(peer.qp, wc.wr_id)
            idle = 0 if sent or received else min(idle + 1, 20)
            if idle > 10:
                time.sleep(0.0005)

    def _send_completed(self, wc) -> None:
        with self._room:
            post = self._posts.get(wc.wr_id)
            if post is None:
                return  # a flushed WR of a post that already failed
            ok = wc.status == self._e.IBV_WC_SUCCESS
            if ok:
                self._outstanding[wc.qp_num] -= post[3].popleft()
                self._room.notify_all()
            if not ok or not post[3]:
                del self._posts[wc.wr_id]
        ticket, _, peer, _ = post
        if ok:
            if not post[3]:
                ticket._finish()
            return
        error = TransportError(f"{self.name}: write to {ticket.peer} failed with work completion status "
                               f"{wc.status} (vendor error {wc.vendor_err})")
        ticket._finish(error)
        if peer is not None:
            self._drop(peer, error)  # an RC QP in the error state cannot carry more writes

    def _repost_recv(self, qp, wr_id: int) -> None:
        wr_mod = _pv("pyverbs.wr")
        sge = wr_mod.SGE(self._recv_mr.buf, 64, self._recv_mr.lkey)
        qp.post_recv(wr_mod.RecvWR(wr_id=wr_id, num_sge=1, sg=[sge]))

    def _copy_backend(self, ops: Sequence[CopyOp]) -> None:
        if not self.cnic_centric:
            return super()._copy_backend(ops)
        if self._loopback is None:
            (qa, ia), (qb, ib) = self._create_qp(), self._create_qp()
            self._to_rts(qa, ia, ib)
            self._to_rts(qb, ib, ia)
            self._loopback = (qa, qb)
        ticket = Ticket(self.name, len(ops), sum(op.nbytes for op in ops))
        writes = [(op.src, op.src_offset, op.dst.memory.ptr + op.dst_offset, op.dst.backend.rkey, op.nbytes, None)
                  for op in ops]
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
