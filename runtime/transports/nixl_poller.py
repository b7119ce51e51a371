"""NIXL poller: the one thread that drives an agent's progress, completes posts and collects notices.

NIXL's own progress thread is off (it spins a core, see `nixl_agent`), so this thread progresses UCX
through status checks and notification fetches. A post (`NixlPost`, planned by `plan_writes`) is
normally one WRITE request; a post mixing host and GPU memory becomes one request per run of like
memory, posted one after the other, with the notice on the last (each request completes only once
its bytes landed, so the notice still follows every byte). The poller passes every 0.1 ms while
requests are in flight or work just happened, backing off to 1 ms when idle; a post wakes it. A
thread waiting on a `NixlTicket` polls for itself for up to 1 ms first (small writes complete in
tens of microseconds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dualpath.runtime.transports.nixl_agent import DRAM, VRAM, NixlAgent, segment
from dualpath.runtime.transports.nixl_wire import NixlPeer
from dualpath.runtime.transports.transport_types import LocalRegion, Ticket, TransportError, WriteOp, check_write

LOG = logging.getLogger("dualpath.runtime.nixl")
Descs = list[tuple[int, int, int]]  # (address, nbytes, device id)
Entry = tuple[int, int, int, int]  # a notice entry: imm, region id, offset, nbytes
HOT_S = 0.002  # stay busy this long after the last work: the next write of a burst is near
MAX_IDLE_S = 0.001  # a notice that lands while idle waits at most this long to be seen
# Between passes while busy: waiting threads poll for themselves, so this thread only catches up with
# posts nobody waits on yet. Spinning here instead doubled the cost of a post on the 2-core dev box
# (the GIL and NIXL's agent lock bounce between poster and poller): 57 vs 103-160 us per 4 KiB post.
BUSY_SLEEP_S = 1e-4
WAIT_SPIN_S = 0.001  # a waiting thread polls this long itself (small writes), then sleeps on its ticket


@dataclass
class Group:
    """One WRITE request's worth of a post: descriptors of one local and one remote memory type."""

    local: Descs
    local_kind: str
    dest: Descs
    dest_kind: str


def plan_writes(owner: str, peer: NixlPeer, ops: Sequence[WriteOp]) -> tuple[list[Group], list[Entry], int]:
    """A post's requests (runs of like memory), its immediates as notice entries, and its byte count.
    Every op's `local` is a `LocalRegion` (the transport checked)."""
    groups: list[Group] = []
    entries: list[Entry] = []
    total = 0
    for op in ops:
        assert isinstance(op.local, LocalRegion)  # checked by the transport's post
        nbytes = check_write(op)
        dest = peer.regions.get(op.remote.region_id)
        if dest is None:
            raise TransportError(f"{owner}: region {op.remote.name!r} of {peer.name} was not looked up "
                                 "on this connection (remote_region)")
        local_kind, local_device = segment(op.local.memory)
        dest_kind = VRAM if dest.vram else DRAM
        if not groups or (groups[-1].local_kind, groups[-1].dest_kind) != (local_kind, dest_kind):
            groups.append(Group([], local_kind, [], dest_kind))
        if nbytes:  # NIXL refuses empty descriptors; an empty write still carries its immediate
            groups[-1].local.append((op.local.memory.ptr + op.local_offset, nbytes, local_device))
            groups[-1].dest.append((dest.addr + op.remote_offset, nbytes, dest.device))
        if op.imm is not None:
            entries.append((op.imm, dest.region_id, op.remote_offset, nbytes))
        total += nbytes
    return [group for group in groups if group.local], entries, total


class NixlTicket(Ticket):
    """A post's ticket whose `wait` drives progress in the waiting thread (as a verbs sender polls its
    CQ): no hand-off from the poller thread between the request completing and the caller waking."""

    def __init__(self, peer: str, num_ops: int, nbytes: int, poller: NixlPoller) -> None:
        super().__init__(peer, num_ops, nbytes)
        self._poller = poller

    def wait(self, timeout_s: float | None = None) -> None:
        began = time.monotonic()
        spin_s = WAIT_SPIN_S if timeout_s is None else min(WAIT_SPIN_S, timeout_s)
        while not self.done and time.monotonic() - began < spin_s:
            if not self._poller.step():
                time.sleep(0)  # let the thread holding the step (or the GIL) finish it
        # A long write: the poller thread completes it; waiting threads need not burn a core each.
        if not self._event.wait(None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - began))):
            raise TransportError(f"write of {self.nbytes} bytes to {self.peer} not acknowledged in {timeout_s} s")
        super().wait(0)  # raises the post's error, if any


@dataclass
class NixlPost:
    """A post in flight: its peer, ticket, requests still to post and the notice for the last one."""

    peer: NixlPeer
    ticket: Ticket
    groups: list[Group]
    notice: bytes
    index: int = 0
    handle: Any = field(default=None, repr=False)


class NixlPoller:
    """Progress for one agent. `on_notice(agent, payload)` gets each notification; `on_failure(post,
    error)` a post whose request failed (the transport drops its peer)."""

    def __init__(self, owner: str, agent: NixlAgent, on_notice: Callable[[str, bytes], None],
                 on_failure: Callable[[NixlPost, TransportError], None]) -> None:
        self.owner = owner
        self.agent = agent
        self.on_notice = on_notice
        self.on_failure = on_failure
        self._lock = threading.Lock()
        self._inflight: list[NixlPost] = []
        self._orphans: list[Any] = []  # requests of dropped peers NIXL could not release yet
        self._wake = threading.Event()
        self._stepping = threading.Lock()  # one step at a time: notices are handled in arrival order
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"nixl-poll:{owner}")
        self._thread.start()

    def submit(self, post: NixlPost) -> None:
        """Post the first request of `post` (call under the peer's post lock: notices keep post order)."""
        self._start(post)
        with self._lock:
            self._inflight.append(post)
            post.peer.inflight.append(post)
        self._wake.set()

    def _start(self, post: NixlPost) -> None:
        group = post.groups[post.index]
        last = post.index == len(post.groups) - 1
        post.handle = self.agent.write(post.peer.agent, group.local, group.local_kind, group.dest, group.dest_kind,
                                       post.notice if last else None)

    def forget(self, peer: NixlPeer) -> list[NixlPost]:
        """Stop tracking `peer`'s posts (it is gone); returns them so their tickets can fail."""
        with self._lock:
            gone, peer.inflight = peer.inflight, []
            self._inflight = [post for post in self._inflight if post.peer is not peer]
            for post in gone:
                if post.handle is not None and not self.agent.release(post.handle):
                    self._orphans.append(post.handle)
                post.handle = None
        return gone

    def step(self) -> bool:
        """One pass over requests and notifications, unless another thread is making one; True when
        anything happened."""
        if not self._stepping.acquire(blocking=False):
            return False
        try:
            return self._step()
        finally:
            self._stepping.release()

    def _step(self) -> bool:
        finished: list[tuple[NixlPost, TransportError | None]] = []
        with self._lock:  # forget() releases requests under this lock: none is checked once freed
            self._orphans = [handle for handle in self._orphans if not self.agent.release(handle)]
            blocked: set[int] = set()  # peers whose oldest request is still in flight
            for post in list(self._inflight):
                if id(post.peer) in blocked:
                    continue  # one peer's requests finish in order, mostly: checking them all costs O(n) a pass
                state = self.agent.state(post.handle)
                if state == "PROC":
                    blocked.add(id(post.peer))
                    continue
                self.agent.release(post.handle)
                post.handle = None
                error = None if state == "DONE" else TransportError(
                    f"{self.owner}: NIXL write request to peer {post.peer.name} failed")
                if error is None and post.index + 1 < len(post.groups):
                    post.index += 1
                    try:
                        self._start(post)
                        continue
                    except TransportError as exc:
                        error = exc
                self._inflight.remove(post)
                post.peer.inflight.remove(post)
                finished.append((post, error))
        for post, error in finished:
            if error is None:
                post.ticket.finish()
            else:
                self.on_failure(post, error)
        worked = bool(finished)
        for agent, payloads in self.agent.notifications().items():
            for payload in payloads:
                worked = True
                self.on_notice(agent, payload)
        return worked

    def _loop(self) -> None:
        last_work = time.monotonic()
        idle_s = 0.0
        while not self._stopped:
            try:
                worked = self.step()
            except Exception:  # a bug must not silently stop every transfer of this transport
                LOG.exception("%s: NIXL poller step failed", self.owner)
                worked = False
            now = time.monotonic()
            if worked:
                last_work = now
            with self._lock:
                busy = bool(self._inflight)
            if busy or now - last_work < HOT_S:
                idle_s = 0.0
                time.sleep(BUSY_SLEEP_S)  # yield the GIL to posting threads, then poll again
                continue
            idle_s = min(MAX_IDLE_S, max(50e-6, idle_s * 2))
            self._wake.wait(idle_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
