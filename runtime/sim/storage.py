"""One node's storage path in the simulator: the SNIC read queue, the KV DRAM buffer, the SNIC writes.

Reads are Full-Block reads served FIFO at the SNIC's effective rate. A read must reserve its buffer
room before it starts: a PE-side read its hit KV, held until the request's prefill ends; a DE-side
read the whole prompt's KV (the PE sends the new tokens' KV back into it), held until the DE has
copied the prompt into HBM. When the head of the queue cannot reserve, the SNIC waits (the head keeps
its place, so a large read is never starved by small ones). KV a PE sends to a DE for a PE-side read
streams through the DE buffer layer by layer into HBM reserved at assignment: a few layers' worth,
not modelled.
"""

from __future__ import annotations

from collections import deque

from dualpath.runtime.sim.nic import NicChannel, SpanSink, UsageMeter
from dualpath.runtime.sim.state import ReqState


class ReadOp:
    """One storage read: `num_bytes` of hit KV for `state`, holding `reserve_bytes` of buffer."""

    __slots__ = ("end_s", "num_bytes", "num_tokens", "reserve_bytes", "state")

    def __init__(self, state: ReqState, num_bytes: int, num_tokens: int, reserve_bytes: int) -> None:
        self.state = state
        self.num_bytes = num_bytes
        self.num_tokens = num_tokens
        self.reserve_bytes = reserve_bytes
        self.end_s = 0.0


class NodeStorage:
    """SNIC read queue + DRAM buffer + SNIC write channel of one node."""

    __slots__ = (
        "_buffer_changed_at",
        "buffer_bytes",
        "buffer_meter",
        "buffer_used_bytes",
        "line_bytes_per_s",
        "name",
        "queue",
        "queued_bytes",
        "queued_tokens",
        "read_bytes_per_s",
        "read_bytes_total",
        "read_meter",
        "reading",
        "reported",
        "sink",
        "write",
    )

    def __init__(self, name: str, read_bytes_per_s: float, write_bytes_per_s: float, line_bytes_per_s: float,
                 buffer_bytes: int, sink: SpanSink | None = None) -> None:
        self.name = name
        self.read_bytes_per_s = read_bytes_per_s
        self.line_bytes_per_s = line_bytes_per_s
        self.buffer_bytes = buffer_bytes
        self.buffer_used_bytes = 0
        self.queue: deque[ReadOp] = deque()
        self.reading: ReadOp | None = None
        self.queued_tokens = 0  # waiting or in progress: what the scheduler sees as read_q
        self.queued_bytes = 0
        self.reported = False  # queued_tokens/bytes unchanged since the engine board last read them
        self.read_meter = UsageMeter()
        self.read_bytes_total = 0
        self.write = NicChannel(f"{name}.snic_write", "persist", write_bytes_per_s, line_bytes_per_s, sink)
        self.buffer_meter = UsageMeter()  # byte-seconds of buffer held
        self._buffer_changed_at = 0.0
        self.sink = sink

    # ---- DRAM buffer ---------------------------------------------------------------------------
    def _account(self, now_s: float) -> None:
        if now_s > self._buffer_changed_at:
            if self.buffer_used_bytes:
                self.buffer_meter.add(self._buffer_changed_at, now_s,
                                      self.buffer_used_bytes * (now_s - self._buffer_changed_at))
            self._buffer_changed_at = now_s

    def try_reserve(self, num_bytes: int, now_s: float) -> bool:
        if self.buffer_used_bytes + num_bytes > self.buffer_bytes:
            return False
        self._account(now_s)
        self.buffer_used_bytes += num_bytes
        return True

    def release(self, num_bytes: int, now_s: float) -> None:
        self._account(now_s)
        self.buffer_used_bytes -= num_bytes

    # ---- reads ---------------------------------------------------------------------------------
    def enqueue(self, op: ReadOp) -> None:
        self.queue.append(op)
        self.queued_tokens += op.num_tokens
        self.queued_bytes += op.num_bytes
        self.reported = False

    def start_next(self, now_s: float) -> ReadOp | None:
        """Start the head read if the SNIC is idle and the buffer has room; returns it (end_s set)."""
        if self.reading is not None or not self.queue:
            return None
        op = self.queue[0]
        if not self.try_reserve(op.reserve_bytes, now_s):
            return None
        self.queue.popleft()
        op.end_s = now_s + op.num_bytes / self.read_bytes_per_s
        self.reading = op
        self.read_meter.add(now_s, op.end_s, op.num_bytes)
        if self.sink is not None:
            self.sink(f"{self.name}.snic", "read", now_s, op.end_s, op.state.req.id, op.num_bytes)
        return op

    def finish(self, op: ReadOp) -> None:
        self.reading = None
        self.queued_tokens -= op.num_tokens
        self.queued_bytes -= op.num_bytes
        self.reported = False
        self.read_bytes_total += op.num_bytes

    def read_utilisation(self, bucket_s: float | None = None) -> list[tuple[float, float]]:
        return self.read_meter.series(self.line_bytes_per_s, bucket_s)

    def buffer_utilisation(self, bucket_s: float | None = None) -> list[tuple[float, float]]:
        return self.buffer_meter.series(self.buffer_bytes, bucket_s)
