"""Verbs send queue: doorbell-batched WR chains, and the poller that reaps both completion queues.

A `post` becomes one linked list of `SendWR`s handed to `post_send` at once (doorbell batching) with
only the last WR signalled; a write with an immediate consumes a posted receive at the target, whose
completion carries the immediate.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dualpath.runtime.transports.transport_types import Completion, LocalRegion, Ticket, TransportError
from dualpath.runtime.transports.verbs_qp import MAX_WR, VerbsDevice, pyverbs_module
from dualpath.runtime.transports.verbs_wire import VerbsPeer


@dataclass(frozen=True)
class RdmaWrite:
    """One RDMA WRITE: `nbytes` of registered `local` (from `local_offset`) to `remote_addr` under `rkey`."""

    local: LocalRegion
    local_offset: int
    remote_addr: int
    rkey: int
    nbytes: int
    imm: int | None


@dataclass(frozen=True)
class _PostedChain:
    """A post in flight under one wr_id: its ticket, its WRs (pyverbs WRs must outlive their completion),
    its peer (None for loopback copies) and the WR count of each chain not yet completed."""

    ticket: Ticket
    wrs: list[Any]
    peer: VerbsPeer | None
    chain_sizes: deque[int]


class SendQueue:
    """Posting and completion reaping on `nic`'s CQs for transport `owner` (`VerbsTransport` owns one).

    `peer_for_qp` names the peer a receive completion came from, `deliver` takes the completions of
    writes with an immediate, `drop` is called for a peer whose write failed (its QP is in the error
    state), and the poller stops once `is_closed()`.
    """

    def __init__(self, owner: str, nic: VerbsDevice, peer_for_qp: Callable[[int], VerbsPeer | None],
                 deliver: Callable[[Completion], None], drop: Callable[[VerbsPeer, TransportError], None],
                 is_closed: Callable[[], bool]) -> None:
        self._owner = owner
        self._nic = nic
        self._e = nic.e
        self._peer_for_qp = peer_for_qp
        self._deliver = deliver
        self._drop = drop
        self._is_closed = is_closed
        self._room = threading.Condition()  # guards the fields below; signalled when send-queue slots free up
        self._posts: dict[int, _PostedChain] = {}
        self._next_wr = 1
        self._outstanding: dict[int, int] = {}  # qp_num -> WRs posted and not yet completed
        self._poller = threading.Thread(target=self._poll_loop, name=f"verbs-cq:{owner}", daemon=True)

    def start(self) -> None:
        self._poller.start()

    def join(self, timeout_s: float) -> None:
        self._poller.join(timeout=timeout_s)

    def forget(self, peer: VerbsPeer) -> list[Ticket]:
        """Stop tracking a dropped peer's posts; returns their tickets, for the caller to fail."""
        with self._room:
            failed = [key for key, post in self._posts.items() if post.peer is peer]
            return [self._posts.pop(key).ticket for key in failed]

    def wake(self) -> None:
        """Wake posters waiting for room, so they notice a dropped peer or a closed transport."""
        with self._room:
            self._room.notify_all()

    def post_chain(self, peer: VerbsPeer | None, qp: Any, ticket: Ticket, writes: list[RdmaWrite]) -> None:
        """Post writes as linked lists (one `post_send`, one doorbell, each) of at most MAX_WR // 2 WRs,
        each list's last WR signalled; waits for send-queue room so the QP never overflows."""
        wr_mod, e = pyverbs_module("pyverbs.wr"), self._e
        pv_error = pyverbs_module("pyverbs.pyverbs_error").PyverbsError
        chunks = [writes[i : i + MAX_WR // 2] for i in range(0, len(writes), MAX_WR // 2)]
        keep: list[Any] = []
        with self._room:
            wr_id = self._next_wr
            self._next_wr += 1
            self._posts[wr_id] = _PostedChain(ticket, keep, peer, deque(len(chunk) for chunk in chunks))
        for chunk in chunks:
            head = None
            for write in reversed(chunk):
                local = write.local
                sge = wr_mod.SGE(local.memory.ptr + write.local_offset, write.nbytes, local.backend.lkey)
                opcode = e.IBV_WR_RDMA_WRITE if write.imm is None else e.IBV_WR_RDMA_WRITE_WITH_IMM
                flags = e.IBV_SEND_SIGNALED if head is None else 0
                wr = wr_mod.SendWR(wr_id=wr_id, opcode=opcode, num_sge=1, sg=[sge], send_flags=flags,
                                   imm_data=socket.htonl(write.imm or 0), next_wr=head)
                wr.set_wr_rdma(write.rkey, write.remote_addr)
                keep.append(wr)
                head = wr
            with self._room:
                while self._outstanding.get(qp.qp_num, 0) + len(chunk) > MAX_WR:
                    if self._is_closed() or (peer is not None and not peer.alive):
                        return  # the drop or close already failed the ticket
                    self._room.wait(0.1)
                self._outstanding[qp.qp_num] = self._outstanding.get(qp.qp_num, 0) + len(chunk)
            try:
                qp.post_send(head)
            except pv_error as exc:
                with self._room:
                    self._posts.pop(wr_id, None)
                ticket.finish(TransportError(f"{self._owner}: post_send to {ticket.peer} failed: {exc}"))
                return

    def _poll_loop(self) -> None:
        """Reap send completions (finish tickets, free send-queue room) and receive completions
        (writes with immediates: deliver, repost the receive)."""
        e, idle = self._e, 0
        while not self._is_closed():
            _, sent = self._nic.send_cq.poll(64)
            for wc in sent:
                self._send_completed(wc)
            _, received = self._nic.recv_cq.poll(64)
            for wc in received:
                peer = self._peer_for_qp(wc.qp_num)
                landed = wc.status == e.IBV_WC_SUCCESS and wc.opcode == e.IBV_WC_RECV_RDMA_WITH_IMM
                if landed and peer is not None:
                    self._deliver(Completion(peer.name, "", -1, wc.byte_len, socket.ntohl(wc.imm_data)))
                    self._repost_recv(peer.qp, wc.wr_id)
            idle = 0 if sent or received else min(idle + 1, 20)
            if idle > 10:
                time.sleep(0.0005)

    def _send_completed(self, wc: Any) -> None:
        with self._room:
            post = self._posts.get(wc.wr_id)
            if post is None:
                return  # a flushed WR of a post that already failed
            ok = wc.status == self._e.IBV_WC_SUCCESS
            if ok:
                self._outstanding[wc.qp_num] -= post.chain_sizes.popleft()
                self._room.notify_all()
            if not ok or not post.chain_sizes:
                del self._posts[wc.wr_id]
        if ok:
            if not post.chain_sizes:
                post.ticket.finish()
            return
        error = TransportError(f"{self._owner}: write to {post.ticket.peer} failed with work completion status "
                               f"{wc.status} (vendor error {wc.vendor_err})")
        post.ticket.finish(error)
        if post.peer is not None:
            self._drop(post.peer, error)  # an RC QP in the error state cannot carry more writes

    def _repost_recv(self, qp: Any, wr_id: int) -> None:
        wr_mod = pyverbs_module("pyverbs.wr")
        recv_mr = self._nic.recv_mr
        sge = wr_mod.SGE(recv_mr.buf, 64, recv_mr.lkey)
        qp.post_recv(wr_mod.RecvWR(wr_id=wr_id, num_sge=1, sg=[sge]))
