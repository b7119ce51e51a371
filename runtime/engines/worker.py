"""What both engine roles share: model, block store with SNIC limiters and reader threads, buffer
pool, transport, control server, and the trace of protocol steps taken.

An engine performs its part of each protocol step through its `BufferPool` (`take_step`), which
records the step by its protocol name, so a test can check the runtime takes only protocol steps.
Control messages arrive decoded (`messages.decode_message`) and go to the handler of their class;
each role adds its own handlers to the common ones (`handlers`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dualpath.errors import DualpathError, SpecError
from dualpath.protocol import Resource, Step
from dualpath.runtime.engine import ENGINE_STEP_NAMES, EngineOptions, build_decoder
from dualpath.runtime.engines.blockstore import BlockCorruptError, BlockStore
from dualpath.runtime.engines.messages import ControlMessage, Hello, Lead, Shutdown, Stats, Trace, decode_message
from dualpath.runtime.transports.auth import check_secret
from dualpath.runtime.transports.control import Channel, ControlServer, Reply

if TYPE_CHECKING:
    from dualpath.runtime.scheduling.group_leader import GroupLeader

LOG = logging.getLogger("dualpath.runtime.engine")
# Per message class, what answers it; each handler takes (channel, message of that class, payload).
Handlers = dict[type[ControlMessage], Callable[[Channel, Any, bytes], Reply]]


def local_step(step: Step, resources: set[Resource]) -> Step:
    """The part of a protocol step this process performs: the same step restricted to its resources."""
    return replace(step, acquire=tuple(a for a in step.acquire if a[0] in resources),
                   release=tuple(r for r in step.release if r[0] in resources))


class EngineBase:
    """Model, store, buffers, transport, control server and step trace of one engine."""

    role = ""

    def __init__(self, options: EngineOptions, secret: bytes | str) -> None:
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
        self.store: BlockStore
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
        self.reader = ThreadPoolExecutor(options.read_threads, thread_name_prefix=f"{self.name}-read")
        self.read_queue_bytes = 0  # Full Blocks queued or being read from storage by this engine
        self._lock = threading.Lock()
        self._handlers = self.handlers()
        self.control = ControlServer(self.name, self.secret, self.handle, decode_message, options.host, options.port)
        self.steps: deque[dict] = deque(maxlen=options.trace_steps)
        self._steps_lock = threading.Lock()
        self.stopped = threading.Event()
        self.started_at = time.monotonic()
        self.leader: GroupLeader | None = None  # once the engine knows its scheduler

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

    def close(self) -> None:
        self.stopped.set()
        if self.leader is not None:
            self.leader.stop()
        self.control.close()
        self.transport.close()
        self.reader.shutdown(wait=False, cancel_futures=True)

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

    # -- storage reads -----------------------------------------------------------------------------
    def read_blocks(self, block_ids: Sequence[str], outs: Sequence[Any]) -> list[Future[None]]:
        """Read each block into its `outs` buffer on the reader threads; queued bytes count in
        `read_queue_bytes` (what the scheduler and `auto` compare) until each read ends."""
        with self._lock:
            self.read_queue_bytes += len(block_ids) * self.layout.full_block_bytes
        return [self.reader.submit(self._read_block, block_id, out) for block_id, out in zip(block_ids, outs)]

    def _read_block(self, block_id: str, out: Any) -> None:
        try:
            self.store.read_into(block_id, out)
        except BlockCorruptError:
            self.store.delete(block_id)  # never served again; the request recomputes it and its DE persists it
            raise
        finally:
            with self._lock:
                self.read_queue_bytes -= self.layout.full_block_bytes

    # -- control messages --------------------------------------------------------------------------
    def handlers(self) -> Handlers:
        """What this engine answers; a role extends it with its own messages."""
        return {Hello: self.on_hello, Trace: self.on_trace, Stats: self.on_stats, Shutdown: self.on_shutdown,
                Lead: self.on_lead}

    def handle(self, channel: Channel, message: ControlMessage, payload: bytes) -> Reply:
        handler = self._handlers.get(type(message))
        if handler is None:
            raise SpecError(self.name, "op", message.op, "one of " + ", ".join(m.op for m in self._handlers))
        return handler(channel, message, payload)

    def on_hello(self, channel: Channel, msg: Hello, payload: bytes) -> dict:
        return {"name": self.name, "role": self.role, "node": self.node, "data": list(self.data_address),
                "model_id": self.options.model_id(), "block_tokens": self.layout.block_tokens}

    def on_trace(self, channel: Channel, msg: Trace, payload: bytes) -> dict:
        with self._steps_lock:
            steps = [s for s in self.steps if msg.request in (None, s["request"])]
        return {"steps": steps}

    def on_stats(self, channel: Channel, msg: Stats, payload: bytes) -> dict:
        return self.stats()

    def on_shutdown(self, channel: Channel, msg: Shutdown, payload: bytes) -> dict:
        threading.Timer(0.05, self.stopped.set).start()  # after the reply has gone out
        return {"ok": True}

    def on_lead(self, channel: Channel, msg: Lead, payload: bytes) -> dict:
        self.lead(msg.scheduler)
        return {"ok": True}

    def stats(self) -> dict:
        used = {f"{r.value}/{o}": self.pool.used(r, o) for (r, o) in self.pool.ledger.capacity}
        return {"used": used, "refused": self.control.num_refused + getattr(self.transport, "num_refused", 0),
                "read_queue_bytes": self.read_queue_bytes,
                "snic_read_bytes": sum(s.granted_bytes for s in self.snic_read.stats.values()),
                "snic_write_bytes": sum(s.granted_bytes for s in self.snic_write.stats.values()),
                "corrupted_reads": len(getattr(self.store, "corrupted", ()))}  # injected faults (`CorruptingStore`)
