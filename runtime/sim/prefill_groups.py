"""Prefill engine groups of the simulator: forward steps, their batches and their duration.

A group is the set of PEs that run forward passes in lockstep: for an MoE model served with expert
parallelism, attention is data parallel (each GPU attends over its own batch) and the experts are
shared, so a step lasts `max` over GPUs of attention plus the group's mean expert/dense work, and a
GPU with a small batch waits for the slowest one. A dense model's engines run on their own (groups
of one). One step is one event, whatever the number of layers:

- layerwise: three pipelined stages per layer (load layer k's KV into HBM, compute it, send its KV
  to the DE), so the step takes t + c + o + (L - 1) * max(t, c, o) for per-layer times t, c, o,
  and no later than the slowest DE CNIC it pulls KV from can deliver, plus one layer;
- not layerwise: the batch's whole KV is copied into HBM (bounded by HBM), then computed; each
  request's KV is sent to its DE afterwards, off the GPU's critical path. The copies are
  cudaMemcpyAsync: while a step computes, the engine already copies the KV of its next batch, as far
  as the HBM the running batch leaves free allows (double buffering); the rest waits for the step end.
The policy forms each engine's batch; the executor only trims it to HBM (not layerwise) and to the
calibration's optional per-step token budget (`max_batch_new_tokens`, chunking the last request).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

from dualpath.errors import InputError
from dualpath.policy import BatchItem
from dualpath.runtime.sim import events as ev
from dualpath.runtime.sim.board import EngineBoard
from dualpath.runtime.sim.context import SimContext
from dualpath.runtime.sim.hardware import Hardware
from dualpath.runtime.sim.state import PEEngine, ReqState

Chunk = tuple[ReqState, int, bool]  # (request, new tokens computed this step, its first chunk)
# Per engine of a step: (engine, its chunks, bytes it loads locally, blocks it loads, bytes it sends, blocks it sends)
EngineIO = tuple[PEEngine, list[Chunk], int, int, int, int]


_by_assign_seq = attrgetter("assign_seq")  # a PE's queue order: the order its requests were assigned


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class PrefillGroup:
    __slots__ = ("board", "busy", "ctx", "engines", "hw", "index", "on_prefill_done", "on_step_end", "prev_start_s",
                 "resident_bytes", "running", "start_posted")

    def __init__(self, ctx: SimContext, hw: Hardware, board: EngineBoard, index: int, engines: list[PEEngine],
                 on_prefill_done: Callable[[ReqState, float, float], None], on_step_end: Callable[[], None]) -> None:
        self.ctx = ctx
        self.hw = hw
        self.board = board
        self.index = index
        self.engines = engines
        self.on_prefill_done = on_prefill_done  # (request, now, when its KV has reached its DE)
        self.on_step_end = on_step_end  # a step's end frees PE tokens: the scheduler may assign more
        self.busy = False
        self.start_posted = False
        self.running: list[tuple[PEEngine, list[Chunk]]] = []
        self.prev_start_s = 0.0  # the last step's start: the next batch's copies may begin there
        self.resident_bytes: dict[int, int] = {}  # per engine: the HBM the last step's batch holds

    def kick(self) -> None:
        if not self.busy and not self.start_posted:
            self.start_posted = True
            events = self.ctx.events
            events.push(events.now_s, ev.GROUP_START, self.on_start)

    def on_start(self, _: object = None) -> None:
        self.start_posted = False
        if self.busy:
            return
        ctx = self.ctx
        now = ctx.events.now_s
        batches: list[tuple[PEEngine, list[Chunk]]] = []
        for engine in self.engines:
            if engine.ready:
                batch = self._form(engine)
                if batch:
                    batches.append((engine, batch))
        if not batches:
            return
        for _, batch in batches:
            for state, _, first in batch:
                if first:
                    state.prefill_start_s = now
        duration = self._duration(batches, now)
        self.busy = True
        self.running = batches
        busy: dict[int, int] = {}
        for engine, _ in batches:
            busy[engine.node] = busy.get(engine.node, 0) + 1
        gpu_meters = self.hw.gpu_meters
        for node, count in busy.items():
            gpu_meters[node].add(now, now + duration, duration * count)
        recorder = ctx.recorder
        if recorder.wants_spans:
            for engine, batch in batches:
                recorder.span(engine.spec.name, "prefill", now, now + duration,
                              ",".join(s.req.id for s, _, _ in batch), 0.0)
        ctx.events.push(now + duration, ev.STEP_END, self.on_end)

    # ---- batch formation ---------------------------------------------------------------------
    def _form(self, engine: PEEngine) -> list[Chunk]:
        ctx = self.ctx
        policy = ctx.policy
        ready = engine.ready  # request id -> state: the lookup `form_batch`'s items are checked against
        states = sorted(ready.values(), key=_by_assign_seq) if len(ready) > 1 else list(ready.values())
        chosen = policy.form_batch([s.item for s in states if s.item is not None])
        batch: list[Chunk] = []
        seen: set[str] = set()
        hbm_left = self.hw.pe_free_hbm_bytes
        tokens_left = ctx.calibration.max_batch_new_tokens or 1 << 62
        layerwise = ctx.options.layerwise
        for item in chosen:
            s = ready.get(item.request)
            if s is None or item.request in seen or not 1 <= item.new_tokens <= s.remaining_tokens:
                raise InputError(f"policy {policy.name}",
                                 f"form_batch returned {item!r}, not a queued item or a chunk of one")
            new = item.new_tokens if item.new_tokens < tokens_left else tokens_left  # chunked-prefill budget
            if new <= 0:
                break
            if not layerwise:
                need = (s.cached_tokens + new) * ctx.kv_bytes_per_token
                if batch and need > hbm_left:
                    break  # all KV resident: HBM bounds the batch
                hbm_left -= need
            seen.add(item.request)
            tokens_left -= new
            batch.append((s, new, s.prefill_start_s < 0))
        return batch

    # ---- timing --------------------------------------------------------------------------------
    def _duration(self, batches: list[tuple[PEEngine, list[Chunk]]], now: float) -> float:
        ctx = self.ctx
        llm = ctx.llm
        kv, bt = ctx.kv_bytes_per_token, ctx.block_tokens
        zero_io, layerwise = ctx.options.zero_io, ctx.options.layerwise
        overhead = llm.cost.prefill_overhead_s
        max_attn, other_sum, max_full = 0.0, 0.0, 0.0
        per_engine: list[EngineIO] = []
        de_src: dict[int, float] = {}
        costs = llm.step_costs
        for engine, batch in batches:
            full, attn = costs.prefill_and_attention_s([(s.cached_tokens, n) for s, n, _ in batch])
            max_attn = max(max_attn, attn)
            max_full = max(max_full, full)
            other_sum += full - attn - overhead
            local_bytes = in_blocks = out_bytes = out_blocks = 0
            # Integer sums: the ceilings inlined (-(-a // b)), this runs for every chunk of every step.
            for s, n, first in batch:
                cached, de_read = s.cached_tokens, s.de_read_bytes
                local_bytes += cached * kv - de_read
                in_blocks += -(-cached // bt)
                if de_read:
                    de_src[s.de] = de_src.get(s.de, 0.0) + de_read
                out_bytes += n * kv
                out_blocks += -(-n // bt)
                if first:
                    pe_read = s.pe_read_bytes
                    out_bytes += pe_read
                    out_blocks += -(-(pe_read // kv) // bt)
            per_engine.append((engine, batch, local_bytes, in_blocks, out_bytes, out_blocks))
        if ctx.lockstep:
            compute = overhead + max_attn + other_sum / len(self.engines)
        else:
            compute = max_full
        if zero_io:
            return compute
        # KV the DEs' CNICs push to this step's PEs (DE-read path), first come first served per DE.
        de_ready = now
        de_out = self.hw.de_out
        for d, num_bytes in de_src.items():
            de_ready = max(de_ready, de_out[d].reserve(now, num_bytes, request=None))
        if layerwise:
            return self._layerwise(per_engine, compute, de_ready, now)
        return self._resident(per_engine, compute, de_ready, now)

    def _layerwise(self, per_engine: list[EngineIO], compute: float, de_ready: float, now: float) -> float:
        ctx, hw = self.ctx, self.hw
        num_layers, kv = ctx.num_layers, ctx.kv_bytes_per_token
        submit = ctx.calibration.rdma_submit_s
        t = o = 0.0
        de_landed = now
        for engine, batch, _, in_blocks, out_bytes, out_blocks in per_engine:
            in_bytes = sum(s.cached_tokens for s, _, _ in batch) * kv
            in_end = hw.pe_in[engine.index].reserve(now, in_bytes, in_blocks * num_layers * submit)
            out_end = hw.pe_out[engine.index].reserve(now, out_bytes, out_blocks * num_layers * submit)
            t = max(t, (in_end - now) / num_layers)
            o = max(o, (out_end - now) / num_layers)
            for s, n, first in batch:
                sent = n * kv + (s.pe_read_bytes if first else 0)
                de_landed = max(de_landed, hw.de_in[s.de].reserve(now, sent))
        c = compute / num_layers
        duration = t + c + o + (num_layers - 1) * max(t, c, o)
        # The last layer cannot run before the slowest DE CNIC has delivered its share.
        return max(duration, de_ready - now + c + o, de_landed - now)

    def _resident(self, per_engine: list[EngineIO], compute: float, de_ready: float, now: float) -> float:
        ctx = self.ctx
        num_layers, copy_submit_s, kv = ctx.num_layers, ctx.calibration.cuda_copy_submit_s, ctx.kv_bytes_per_token
        pe_pcie, free_hbm = self.hw.pe_pcie, self.hw.pe_free_hbm_bytes
        early_s, resident = self.prev_start_s, self.resident_bytes
        self.prev_start_s, self.resident_bytes = now, {}
        h2d = de_ready - now
        for engine, batch, local_bytes, in_blocks, _, _ in per_engine:
            need = sum((s.cached_tokens + n) * kv for s, n, _ in batch)
            # Every Full Block is scattered into L per-layer KV pages by separate copies; the share that
            # fit beside the previous batch was copied during its step, from when this batch's KV was ready.
            early = min(1.0, max(0, free_hbm - resident.get(engine.index, 0)) / need) if need else 1.0
            self.resident_bytes[engine.index] = need
            submit_s = in_blocks * num_layers * copy_submit_s
            channel = pe_pcie[engine.index]
            if early > 0:
                in_dram_s = max(s.in_dram_s for s, _, _ in batch)
                channel.reserve(min(now, max(early_s, in_dram_s)), local_bytes * early, submit_s * early)
            if early < 1:
                channel.reserve(now, local_bytes * (1 - early), submit_s * (1 - early))
            h2d = max(h2d, channel.free_at - now)
        return max(h2d, 0.0) + compute

    def _send_to_des(self, engine: PEEngine, s: ReqState, now: float) -> float:
        """Not layerwise: a finished request's KV goes PE HBM -> DE after the step; when it lands."""
        ctx, hw = self.ctx, self.hw
        sent = s.prompt_bytes - s.de_read_bytes
        blocks = _ceil_div(sent // ctx.kv_bytes_per_token, ctx.block_tokens) * ctx.num_layers
        out_end = hw.pe_out[engine.index].reserve(now, sent, blocks * ctx.calibration.rdma_submit_s, s.req.id)
        return max(out_end, hw.de_in[s.de].reserve(now, sent, 0.0, s.req.id))

    # ---- step end ------------------------------------------------------------------------------
    def on_end(self, _: object = None) -> None:
        ctx = self.ctx
        now = ctx.events.now_s
        dirty_pe = self.board.dirty_pe
        layerwise = ctx.options.layerwise or ctx.options.zero_io
        for engine, batch in self.running:
            for s, n, _ in batch:
                s.cached_tokens += n
                s.remaining_tokens -= n
                engine.num_tokens -= n
                if s.remaining_tokens == 0:
                    del engine.ready[s.req.id]
                    engine.num_seqs -= 1
                    s.item = None
                    kv_at = now if layerwise else self._send_to_des(engine, s, now)
                    self.on_prefill_done(s, now, kv_at)
                else:
                    s.item = BatchItem(s.req.id, s.cached_tokens, s.remaining_tokens, s.ready_s)
            dirty_pe.add(engine.index)
        self.running = []
        self.busy = False
        self.on_step_end()
        self.kick()
