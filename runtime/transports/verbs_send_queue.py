"""Verbs send queue: doorbell-batched WR chains, and the poller that reaps both completion queues.

A `post` becomes one linked list of `SendWR`s handed to `post_send` at once (doorbell batching) with
only the last WR signalled; a write with an immediate consumes a posted receive at the target, whose
completion carries the immediate.
"""

from __future__ import annotations

import socket
import time
from collections import deque

from dualpath.runtime.transports.transport_types import Completion, Ticket, TransportError
from dualpath.runtime.transports.verbs_qp import MAX_WR, _pv


class SendQueue:
    """Posting and completion reaping of `VerbsTransport` (`dualpath.runtime.transports.verbs_transport`), which
    it is mixed into; uses its `_lock`, `_room`, `_posts`, `_next_wr`, `_outstanding`, `_by_qp`,
    `send_cq`, `recv_cq`, `_recv_mr`, `_e`, `closed`, `_deliver` and `_drop`.
    """

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
                landed = wc.status == e.IBV_WC_SUCCESS and wc.opcode == e.IBV_WC_RECV_RDMA_WITH_IMM
                if landed and peer is not None:
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

