"""Transports: one interface for moving KV bytes between engines, and the registry of backends.

The model is one-sided RDMA: a process `register`s memory regions under names; a peer that
`connect`ed (after the cluster-secret handshake of `dualpath.runtime.transports.auth`) looks a region up with
`remote_region` and `post`s writes of local bytes into a slice of it. A write may carry a 32-bit
immediate (`imm`): when its bytes have landed, the receiver gets a `Completion` (`poll`, `wait`).
Many small writes go in one `post` (one doorbell, one acknowledgement). The sender's `Ticket`
completes when the receiver has every byte of the post; do not modify the source memory before.

Host<->GPU copies inside one process go through `copy_local` so that, with `cnic_centric=True`, they
are paced by the engine's CNIC limiter (and on verbs become loopback RDMA writes), as in the paper.

Backends: "tcp" (`dualpath.runtime.transports.tcp_transport`), "verbs"
(`dualpath.runtime.transports.verbs_transport`) and "nixl" (`dualpath.runtime.transports.nixl_transport`,
NVIDIA NIXL over UCX); build one with `create_transport(kind, ...)`. All keep their connected peers in
a `dualpath.runtime.transports.peers.PeerRegistry`.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

from dualpath.errors import SpecError, UnknownNameError
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.auth import DEFAULT_BIND_HOST, check_secret
from dualpath.runtime.transports.ratelimit import KV_LANE, NicLimiter
from dualpath.runtime.transports.transport_types import (
    MAX_IMM,
    Completion,
    CopyOp,
    LocalRegion,
    RemoteRegion,
    Ticket,
    TransportError,
    WriteOp,
    check_write,
)

__all__ = [
    "BACKENDS", "MAX_IMM", "Completion", "CopyOp", "LocalRegion", "RemoteRegion", "Ticket", "Transport",
    "TransportError", "WriteOp", "check_write", "copy_regions", "create_transport",
]

LOG = logging.getLogger("dualpath.runtime.transports.transport")

BACKENDS = {
    "tcp": "dualpath.runtime.transports.tcp_transport:TcpTransport",
    "verbs": "dualpath.runtime.transports.verbs_transport:VerbsTransport",
    "nixl": "dualpath.runtime.transports.nixl_transport:NixlTransport",
}


class Transport(ABC):
    """One engine's endpoint. Subclasses implement registration, connection and the data path.

    `name` identifies this endpoint in handshakes and logs; `secret` is the cluster secret;
    `host`/`port` is where `listen` binds (loopback unless told otherwise; port 0 picks a free one);
    `limiter` is the engine's CNIC (`cnic_limiter`), consulted per write with the op's lane.
    """

    kind: ClassVar[str] = ""

    def __init__(self, name: str, secret: bytes | str, host: str = DEFAULT_BIND_HOST, port: int = 0,
                 limiter: NicLimiter | None = None, cnic_centric: bool = False) -> None:
        self.name = name
        self.secret = check_secret(secret)
        self.host = host
        self.port = port
        self.limiter = limiter
        self.cnic_centric = cnic_centric
        self._regions: dict[str, LocalRegion] = {}
        self._next_region_id = 1
        self._completions: list[Completion] = []
        self._completion_cond = threading.Condition()
        self._disconnect_handlers: list[Callable[[str, TransportError], None]] = []
        self._lock = threading.RLock()
        self.closed = False
        self.num_refused = 0  # connections refused at the handshake (wrong or missing secret)

    # -- memory ------------------------------------------------------------------------------------
    def register(self, name: str, memory) -> LocalRegion:
        """Expose `memory` (a `Memory`, host buffer or torch tensor) to peers under `name`."""
        mem = Memory.wrap(memory)
        with self._lock:
            if name in self._regions:
                raise SpecError(f"transport {self.name}", "region name", name, "a name not yet registered")
            region = LocalRegion(name, self._next_region_id, mem, self._register_backend(name, mem))
            self._next_region_id += 1
            self._regions[name] = region
            return region

    def deregister(self, name: str) -> None:
        with self._lock:
            region = self._regions.pop(name, None)
        if region is not None:
            self._deregister_backend(region)

    def region(self, name: str) -> LocalRegion:
        with self._lock:
            try:
                return self._regions[name]
            except KeyError:
                raise UnknownNameError("region", name, list(self._regions)) from None

    def region_by_id(self, region_id: int) -> LocalRegion | None:
        """The region a peer's write names by id (None once deregistered: the write is refused)."""
        with self._lock:
            for region in self._regions.values():
                if region.region_id == region_id:
                    return region
        return None

    def _register_backend(self, name: str, memory: Memory) -> object:
        return None

    def _deregister_backend(self, region: LocalRegion) -> None:
        return None

    # -- connections -------------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """Where peers connect: (host, port) after `listen`."""
        return self.host, self.port

    @abstractmethod
    def listen(self) -> tuple[str, int]:
        """Start accepting authenticated peers; returns the bound (host, port)."""

    @abstractmethod
    def connect(self, address: tuple[str, int], timeout_s: float = 10.0) -> str:
        """Connect and authenticate to a listening peer; returns the peer's name."""

    @abstractmethod
    def peers(self) -> list[str]:
        """Names of connected peers."""

    @abstractmethod
    def remote_region(self, peer: str, name: str, timeout_s: float = 10.0) -> RemoteRegion:
        """Look up region `name` of `peer` (raises `TransportError` if the peer has none)."""

    def on_disconnect(self, handler: Callable[[str, TransportError], None]) -> None:
        """Call `handler(peer, error)` when a peer's connection is lost (e.g. to release its buffers)."""
        self._disconnect_handlers.append(handler)

    def _peer_lost(self, peer: str, error: TransportError) -> None:
        LOG.warning("%s: lost peer %s: %s", self.name, peer, error)
        for handler in list(self._disconnect_handlers):
            try:
                handler(peer, error)
            except Exception:  # a handler's bug must not kill the transport's thread
                LOG.exception("%s: disconnect handler failed for %s", self.name, peer)

    # -- data path ---------------------------------------------------------------------------------
    @abstractmethod
    def post(self, ops: Sequence[WriteOp]) -> Ticket:
        """Post writes to ONE peer in order, as one batch (one doorbell); returns at once."""

    def write(self, remote: RemoteRegion, remote_offset: int, local, local_offset: int = 0,
              nbytes: int | None = None, imm: int | None = None, lane: str = KV_LANE,
              timeout_s: float | None = 30.0) -> None:
        """One write, waited for."""
        self.post([WriteOp(remote, remote_offset, local, local_offset, nbytes, imm, lane)]).wait(timeout_s)

    def write_batch(self, ops: Sequence[WriteOp], timeout_s: float | None = 30.0) -> None:
        """Many writes, grouped by peer, each group one `post`; waits for all."""
        by_peer: dict[str, list[WriteOp]] = {}
        for op in ops:
            by_peer.setdefault(op.remote.peer, []).append(op)
        tickets = [self.post(group) for group in by_peer.values()]
        for ticket in tickets:
            ticket.wait(timeout_s)

    def _deliver(self, completion: Completion) -> None:
        with self._completion_cond:
            self._completions.append(completion)
            self._completion_cond.notify_all()

    def poll(self) -> list[Completion]:
        """Take every completion received so far (non-blocking)."""
        with self._completion_cond:
            out, self._completions = self._completions, []
            return out

    def wait(self, imm: int, peer: str | None = None, timeout_s: float | None = 30.0) -> Completion:
        """Block until a write with immediate `imm` (from `peer`, if given) lands; takes it."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._completion_cond:
            while True:
                for i, done in enumerate(self._completions):
                    if done.imm == imm and (peer is None or done.peer == peer):
                        return self._completions.pop(i)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TransportError(f"{self.name}: no write with immediate {imm} from "
                                         f"{peer or 'any peer'} within {timeout_s} s")
                self._completion_cond.wait(remaining)

    # -- local copies (CNIC-centric) ---------------------------------------------------------------
    def copy_local(self, ops: Sequence[CopyOp]) -> None:
        """Copy between local regions. With `cnic_centric`, every byte is paced by the CNIC limiter
        on the op's lane (and verbs posts it as a loopback RDMA write)."""
        lane_bytes: dict[str, int] = {}
        for op in ops:
            if (op.nbytes < 0 or op.src_offset + op.nbytes > op.src.nbytes
                    or op.dst_offset + op.nbytes > op.dst.nbytes):
                raise TransportError(f"copy of {op.nbytes} bytes {op.src.name}@{op.src_offset} -> "
                                     f"{op.dst.name}@{op.dst_offset} is out of bounds")
            lane_bytes[op.lane] = lane_bytes.get(op.lane, 0) + op.nbytes
        if self.cnic_centric and self.limiter is not None:
            # one grant per lane: per-op grants cost more than the bytes
            for lane, nbytes in lane_bytes.items():
                self.limiter.acquire(nbytes, lane)
        self._copy_backend(ops)

    def _copy_backend(self, ops: Sequence[CopyOp]) -> None:
        copy_regions(ops)

    @abstractmethod
    def close(self) -> None:
        """Close every connection and the listener; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def copy_regions(ops: Sequence[CopyOp]) -> None:
    """Plain copies: memoryview slice assignment for host<->host, torch `copy_` when a GPU is involved."""
    for op in ops:
        src, dst = op.src.memory, op.dst.memory
        if src.view is not None and dst.view is not None:
            src_view = src.view[op.src_offset : op.src_offset + op.nbytes]
            dst.view[op.dst_offset : op.dst_offset + op.nbytes] = src_view
        else:
            dst.tensor[op.dst_offset : op.dst_offset + op.nbytes].copy_(
                src.tensor[op.src_offset : op.src_offset + op.nbytes], non_blocking=src.pinned or dst.pinned)
    if any(op.src.memory.on_device or op.dst.memory.on_device for op in ops):
        import torch

        torch.cuda.synchronize()


def create_transport(kind: str, name: str, secret: bytes | str, **kwargs) -> Transport:
    """Build a backend by name ("tcp", "verbs" or "nixl"); kwargs go to its constructor."""
    if kind not in BACKENDS:
        raise UnknownNameError("transport", kind, list(BACKENDS))
    module_name, class_name = BACKENDS[kind].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(name, secret, **kwargs)
