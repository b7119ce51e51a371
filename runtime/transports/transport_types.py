"""Transport value types: regions, write and copy ops, completions, tickets, lookups, and the write check.

Shared by `dualpath.runtime.transports.transport` (the interface) and every backend; see that module for the model.
`Ticket` is a post's sender-side completion; the scheduler's per-turn `TurnTicket`
(`dualpath.runtime.scheduling.scheduler_state`) is unrelated.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dualpath.errors import DualpathError
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.ratelimit import KV_LANE

MAX_IMM = 2**32 - 1
T = TypeVar("T")


class TransportError(DualpathError):
    """A transfer failed (peer gone, refused, out-of-bounds write, timeout); the message names the peer."""


@dataclass(frozen=True)
class LocalRegion:
    """A registered region of this process. `backend` holds backend state (e.g. a verbs MR)."""

    name: str
    region_id: int
    memory: Memory
    backend: Any = None  # each backend keeps its own kind of handle here (verbs: an untyped pyverbs MR)

    @property
    def nbytes(self) -> int:
        return self.memory.nbytes


@dataclass(frozen=True)
class RemoteRegion:
    """A peer's registered region as seen by a writer (`addr`/`rkey` are used by verbs only)."""

    peer: str
    name: str
    region_id: int
    nbytes: int
    addr: int = 0
    rkey: int = 0


@dataclass(frozen=True)
class WriteOp:
    """Write `nbytes` of `local` (from `local_offset`) to `remote` at `remote_offset`.

    `local` is a registered `LocalRegion` (required on verbs; GPU memory must be registered) or, on
    tcp, any host buffer. `nbytes=None` means the rest of `local`.
    """

    remote: RemoteRegion
    remote_offset: int
    local: LocalRegion | memoryview | bytes | bytearray
    local_offset: int = 0
    nbytes: int | None = None
    imm: int | None = None
    lane: str = KV_LANE

    def size(self) -> int:
        if self.nbytes is not None:
            return self.nbytes
        total = self.local.nbytes if isinstance(self.local, LocalRegion) else memoryview(self.local).nbytes
        return total - self.local_offset


@dataclass(frozen=True)
class CopyOp:
    """A local copy between two registered regions (host<->GPU or host<->host)."""

    dst: LocalRegion
    dst_offset: int
    src: LocalRegion
    src_offset: int
    nbytes: int
    lane: str = KV_LANE


@dataclass(frozen=True)
class Completion:
    """A write with an immediate landed in one of our regions.

    tcp fills `region` and `offset`; RDMA does not tell the target where a write landed, so verbs
    gives `region=""` and `offset=-1`: identify the transfer by `imm` (and `peer`).
    """

    peer: str
    region: str
    offset: int
    nbytes: int
    imm: int


class Ticket:
    """Completion of one `post` on the sender side. `wait` raises `TransportError` on failure."""

    def __init__(self, peer: str, num_ops: int, nbytes: int) -> None:
        self.peer = peer
        self.num_ops = num_ops
        self.nbytes = nbytes
        self._event = threading.Event()
        self.error: TransportError | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def finish(self, error: TransportError | None = None) -> None:
        """Called by the backend once: acknowledged (no error) or failed; later calls are ignored."""
        if not self._event.is_set():
            self.error = error
            self._event.set()

    def wait(self, timeout_s: float | None = None) -> None:
        if not self._event.wait(timeout_s):
            raise TransportError(f"write of {self.nbytes} bytes to {self.peer} not acknowledged "
                                 f"in {timeout_s} s")
        if self.error is not None:
            raise self.error


class RegionLookup(Generic[T]):
    """A region lookup sent to a peer and not yet answered. `found` is what the peer answered (None: it
    has no such region); `cancel` wakes the waiter without an answer when the connection fails."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.found: T | None = None

    def answer(self, found: T | None) -> None:
        self.found = found
        self._event.set()

    def cancel(self) -> None:
        self._event.set()

    def wait(self, timeout_s: float | None) -> bool:
        """True once answered or cancelled, False if `timeout_s` passed first."""
        return self._event.wait(timeout_s)


def check_write(op: WriteOp) -> int:
    """Bounds and immediate checks every backend applies before posting; returns the byte count."""
    nbytes = op.size()
    local_total = op.local.nbytes if isinstance(op.local, LocalRegion) else memoryview(op.local).nbytes
    if nbytes < 0 or op.local_offset < 0 or op.local_offset + nbytes > local_total:
        raise TransportError(f"write source [{op.local_offset}, +{nbytes}) is outside the local buffer "
                             f"of {local_total} bytes")
    if op.remote_offset < 0 or op.remote_offset + nbytes > op.remote.nbytes:
        raise TransportError(f"write [{op.remote_offset}, +{nbytes}) is outside region {op.remote.name!r} "
                             f"of {op.remote.peer} ({op.remote.nbytes} bytes)")
    if op.imm is not None and not 0 <= op.imm <= MAX_IMM:
        raise TransportError(f"immediate {op.imm} does not fit in 32 bits")
    return nbytes

