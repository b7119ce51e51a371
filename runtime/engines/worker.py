"""What both engine roles share: model, block store with SNIC limiters, buffer pool, transport,
control server, and the trace of protocol steps taken.

An engine performs its part of each protocol step through its `BufferPool` (`take_step`), which
records the step by its protocol name, so a test can check the runtime takes only protocol steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Self

from dualpath.errors import DualpathError, SpecError
from dualpath.protocol import Resource, Step
from dualpath.runtime.engine import ENGINE_STEP_NAMES, EngineOptions, build_decoder
from dualpath.runtime.transports.auth import check_secret
from dualpath.runtime.transports.control import Channel, ControlServer

LOG = logging.getLogger("dualpath.runtime.engine")


class FifoLock:
    """A lock granted in arrival order: requests reach the engine's compute (one GPU) first come, first served."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> Self:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket:
                self._cond.wait()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


def local_step(step: Step, resources: set[Resource]) -> Step:
    """The part of a protocol step this process performs: the same step restricted to its resources."""
    return replace(step, acquire=tuple(a for a in step.acquire if a[0] in resources),
                   release=tuple(r for r in step.release if r[0] in resources))


class EngineBase:
    """Model, store, buffers, transport, control server and step trace of one engine."""

    role = ""

    def __init__(self, options: EngineOptions, secret: bytes | str) -> None:
        from dualpath.runtime.engines.blockstore import BlockStore
        from dualpath.runtime.engines.buffers import BufferPool
        from dualpath.runtime.engines.kvcodec import KVCodec
        from dualpath.runtime.transports.ratelimit import cnic_limiter, snic_limiter
        from dualpath.runtime.transports.transport import create_transport

        self.options = options
        self.name = options.name
        self.node = options.node_name
        self.secret = check_secret(secret)
        self.decoder = build_decoder(options)
        self.torch = self.decoder.torch
        self.codec = KVCodec.for_model(self.decoder.config, options.block_tokens, options.kv_dtype or None)
        self.layout = self.codec.layout
        self.snic_read = snic_limiter(self.node, options.snic_bytes_per_s)
        self.snic_write = snic_limiter(self.node + ".w", options.snic_bytes_per_s)
        if options.corrupt_block_rate > 0:
            from dualpath.runtime.engines.faults import CorruptingStore

            self.store = CorruptingStore(options.store_dir, self.layout, self.snic_read, self.snic_write,
                                         rate=options.corrupt_block_rate, seed=options.fault_seed)
        else:
            self.store = BlockStore(options.store_dir, self.layout, self.snic_read, self.snic_write, scan=False)
        self.cnic = cnic_limiter(self.name, options.cnic_bytes_per_s)
        self.pool = BufferPool()
        self.transport = create_transport(options.transport, self.name, self.secret, host=options.host,
                                          port=options.data_port, limiter=self.cnic,
                                          cnic_centric=options.cnic_centric)
        self.control = ControlServer(self.name, self.secret, self.handle, options.host, options.port)
        self.steps: deque[dict] = deque(maxlen=options.trace_steps)
        self._steps_lock = threading.Lock()
        self.stopped = threading.Event()
        self.started_at = time.monotonic()
        self.leader = None  # a GroupLeader once the engine knows its scheduler

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        self.data_address = self.transport.listen()
        self.address = self.control.listen()
        LOG.info("%s (%s) control %s:%d data %s:%d", self.name, self.role, *self.address, *self.data_address)
        if self.options.scheduler:
            self.lead(self.options.scheduler_address)
        return self.address

    def lead(self, scheduler: tuple[str, int] | None) -> None:
        """Fetch this engine's group's work from `scheduler` when it names this engine the leader."""
        from dualpath.runtime.scheduling.group_leader import GroupLeader

        if self.leader is None and scheduler is not None and not self.stopped.is_set():
            self.leader = GroupLeader(self)
        if self.leader is not None:
            self.leader.point(scheduler)

    def op_lead(self, channel: Channel, msg: dict, payload: bytes):
        address = msg.get("scheduler")
        if address is not None and (not isinstance(address, list) or len(address) != 2):
            raise SpecError(self.name, "scheduler", address, "[host, port] of the scheduler, or null")
        self.lead(address)
        return {"ok": True}

    def close(self) -> None:
        self.stopped.set()
        if self.leader is not None:
            self.leader.stop()
        self.control.close()
        self.transport.close()

    # -- step trace --------------------------------------------------------------------------------
    def record(self, request: str, step: str, **where) -> None:
        if step not in ENGINE_STEP_NAMES:
            raise DualpathError(f"{self.name}: step {step!r} is not a protocol step")
        with self._steps_lock:
            self.steps.append({"request": request, "step": step, "engine": self.name,
                               "at": time.time(), **where})

    def take_step(self, request: str, step: Step, sizes, owners, resources: set[Resource],
                  timeout_s: float | None = None, **where):
        """Perform this process's part of a protocol step through the buffer pool, and record it."""
        leases = self.pool.step(request, local_step(step, resources), sizes, owners, timeout_s)
        self.record(request, step.name, **where)
        return leases

    # -- control messages --------------------------------------------------------------------------
    def handle(self, channel: Channel, msg: dict, payload: bytes):
        op = msg.get("op")
        if op == "hello":
            return {"name": self.name, "role": self.role, "node": self.node, "data": list(self.data_address),
                    "model_id": self.options.model_id(), "block_tokens": self.layout.block_tokens}
        if op == "trace":
            with self._steps_lock:
                steps = [s for s in self.steps if msg.get("request") in (None, s["request"])]
            return {"steps": steps}
        if op == "stats":
            return self.stats()
        if op == "shutdown":
            threading.Timer(0.05, self.stopped.set).start()
            return {"ok": True}
        method = getattr(self, "op_" + str(op), None)
        if method is None:
            raise SpecError(self.name, "op", op, "a known control operation")
        return method(channel, msg, payload)

    def stats(self) -> dict:
        used = {f"{r.value}/{o}": self.pool.used(r, o) for (r, o) in self.pool.ledger.capacity}
        return {"used": used, "refused": self.control.num_refused + getattr(self.transport, "num_refused", 0),
                "snic_read_bytes": sum(s.granted_bytes for s in self.snic_read.stats.values()),
                "snic_write_bytes": sum(s.granted_bytes for s in self.snic_write.stats.values())}
