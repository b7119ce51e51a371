"""Verbs send queue: doorbell-batched WR chains, and the poller that reaps every QP's completion queues.

A `post` becomes one linked list of `SendWR`s handed to `post_send` at once (doorbell batching) with
only the last WR signalled; a write with an immediate consumes a posted receive at the target, whose
completion carries the immediate. Each QP has its own CQs (`QueuePair`); the poller, posters and the
transport's drop of a peer take turns under one lock, so no thread touches a QP after it is detached
(pyverbs does not guard against a call on a destroyed QP).
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
from dualpath.runtime.transports.verbs_qp import MAX_WR, QueuePair, VerbsDevice, pyverbs_module
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
    """Posting and completion reaping for transport `owner` (`VerbsTransport` owns one) on `nic`.

    QPs are `attach`ed with their peer (None for the loopback pair of local copies) and `detach`ed
    before they are destroyed. `deliver` takes the completions of writes with an immediate, `drop` is
    called for a peer whose write failed (its QP is in the error state), and the poller stops once
    `is_closed()`.
    """

    def __init__(self, owner: str, nic: VerbsDevice, deliver: Callable[[Completion], None],
                 drop: Callable[[VerbsPeer, TransportError], None], is_closed: Callable[[], bool]) -> None:
        self._owner = owner
        self._nic = nic
        self._e = nic.e
        self._deliver = deliver
        self._drop = drop
        self._is_closed = is_closed
        # Guards the fields below and every call on an attached QP; signalled when send-queue room frees.
        self._room = threading.Condition()
        self._attached: dict[int, tuple[QueuePair, VerbsPeer | None]] = {}  # qp_num -> QP, peer
        self._posts: dict[int, _PostedChain] = {}
        self._next_wr = 1
        self._outstanding: dict[int, int] = {}  # qp_num -> WRs posted and not yet completed
        self._poller = threading.Thread(target=self._poll_loop, name=f"verbs-cq:{owner}", daemon=True)

    def start(self) -> None:
        self._poller.start()

    def join(self, timeout_s: float) -> None:
        self._poller.join(timeout=timeout_s)

    def attach(self, pair: QueuePair, peer: VerbsPeer | None) -> None:
        """Reap `pair`'s CQs from now on, delivering its immediates as coming from `peer`."""
        with self._room:
            self._attached[pair.qp_num] = (pair, peer)

    def detach(self, pair: QueuePair) -> None:
        """Stop every use of `pair` (returns once no thread is inside a call on it): it may be destroyed."""
        with self._room:
            self._attached.pop(pair.qp_num, None)
            self._outstanding.pop(pair.qp_num, None)
            self._room.notify_all()  # posters waiting for room on it give up

    def forget(self, peer: VerbsPeer) -> list[Ticket]:
        """Stop tracking a dropped peer's posts; returns their tickets, for the caller to fail."""
        with self._room:
            failed = [key for key, post in self._posts.items() if post.peer is peer]
            return [self._posts.pop(key).ticket for key in failed]

    def wake(self) -> None:
        """Wake posters waiting for room, so they notice a dropped peer or a closed transport."""
        with self._room:
            self._room.notify_all()

    def post_chain(self, peer: VerbsPeer | None, pair: QueuePair, ticket: Ticket, writes: list[RdmaWrite]) -> None:
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
                while self._outstanding.get(pair.qp_num, 0) + len(chunk) > MAX_WR:
                    if self._is_closed() or pair.qp_num not in self._attached:
                        return  # the drop or close already failed the ticket
                    self._room.wait(0.1)
                if pair.qp_num not in self._attached:
                    return  # dropped (and its ticket failed) while this chain was being built
                self._outstanding[pair.qp_num] = self._outstanding.get(pair.qp_num, 0) + len(chunk)
                try:
                    pair.qp.post_send(head)
                    failure = None
                except pv_error as exc:
                    self._posts.pop(wr_id, None)
                    failure = TransportError(f"{self._owner}: post_send to {ticket.peer} failed: {exc}")
            if failure is not None:
                ticket.finish(failure)
                return

    def _poll_loop(self) -> None:
        """Reap send completions (finish tickets, free send-queue room) and receive completions
        (writes with immediates: deliver, repost the receive) of every attached QP."""
        idle = 0
        while not self._is_closed():
            num_reaped = 0
            landed: list[Completion] = []
            failed: list[tuple[VerbsPeer, TransportError]] = []
            with self._room:
                for pair, peer in list(self._attached.values()):
                    _, sent = pair.send_cq.poll(64)
                    for wc in sent:
                        failed.extend(self._send_completed(wc))
                    _, received = pair.recv_cq.poll(64)
                    for wc in received:
                        if wc.status == self._e.IBV_WC_SUCCESS and wc.opcode == self._e.IBV_WC_RECV_RDMA_WITH_IMM:
                            if peer is not None:
                                landed.append(Completion(peer.name, "", -1, wc.byte_len, socket.ntohl(wc.imm_data)))
                            self._repost_recv(pair, wc.wr_id)
                    num_reaped += len(sent) + len(received)
            for completion in landed:
                self._deliver(completion)
            for peer, error in failed:
                self._drop(peer, error)  # an RC QP in the error state cannot carry more writes
            idle = 0 if num_reaped else min(idle + 1, 20)
            if idle > 10:
                time.sleep(0.0005)

    def _send_completed(self, wc: Any) -> list[tuple[VerbsPeer, TransportError]]:
        """Account one send completion (under the lock); returns the peer to drop if the write failed."""
        post = self._posts.get(wc.wr_id)
        if post is None:
            return []  # a flushed WR of a post that already failed
        if wc.status == self._e.IBV_WC_SUCCESS:
            num_done = post.chain_sizes.popleft()
            if wc.qp_num in self._outstanding:  # not when the QP was detached meanwhile
                self._outstanding[wc.qp_num] -= num_done
            self._room.notify_all()
            if not post.chain_sizes:
                del self._posts[wc.wr_id]
                post.ticket.finish()
            return []
        del self._posts[wc.wr_id]
        error = TransportError(f"{self._owner}: write to {post.ticket.peer} failed with work completion status "
                               f"{wc.status} (vendor error {wc.vendor_err})")
        post.ticket.finish(error)
        return [] if post.peer is None else [(post.peer, error)]

    def _repost_recv(self, pair: QueuePair, wr_id: int) -> None:
        wr_mod = pyverbs_module("pyverbs.wr")
        recv_mr = self._nic.recv_mr
        sge = wr_mod.SGE(recv_mr.buf, 64, recv_mr.lkey)
        pair.qp.post_recv(wr_mod.RecvWR(wr_id=wr_id, num_sge=1, sg=[sge]))
