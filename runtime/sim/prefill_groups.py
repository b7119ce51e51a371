"""Prefill engine groups of the simulator: forward steps, their batches and their duration.

A group is the set of PEs that run forward passes in lockstep: for an MoE model served with expert
parallelism, attention is data parallel (each GPU attends over its own batch) and the experts are
shared, so a step lasts `max` over GPUs of attention plus the group's mean expert/dense work, and a
GPU with a small batch waits for the slowest one. A dense model's engines run on their own (groups
of one). One step is one event, whatever the number of layers:

- layerwise: three pipelined stages per layer (load layer k's KV into HBM, compute it, send its KV
  to the DE), so the step takes t + c + o + (L - 1) * max(t, c, o) for per-layer times t, c, o,
  and no later than the slowest DE CNIC it pulls KV from can deliver, plus one layer;
- not layerwise: the batch's whole KV is copied into HBM first (bounded by HBM), then computed;
  each request's KV is sent to its DE afterwards, off the GPU's critical path.
The policy forms each engine's batch; the executor only trims it to HBM (not layerwise) and to the
calibration's optional per-step token budget (`max_batch_new_tokens`, chunking the last request).
"""

from __future__ import annotations

from dualpath.errors import InputError
from dualpath.policy import BatchItem
from dualpath.runtime.sim import events as ev


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class PrefillGroup:
    __slots__ = ("busy", "engines", "index", "running", "sim", "start_posted")

    def __init__(self, sim, index: int, engines: list):
        self.sim = sim
        self.index = index
        self.engines = engines
        self.busy = False
        self.start_posted = False
        self.running: list = []  # [(engine, [(state, new_tokens, first_chunk)])]

    def kick(self) -> None:
        if not self.busy and not self.start_posted:
            self.start_posted = True
            self.sim.events.push(self.sim.events.now_s, ev.GROUP_START, self.on_start)

    def on_start(self, _=None) -> None:
        self.start_posted = False
        if self.busy:
            return
        now = self.sim.events.now_s
        batches = []
        for engine in self.engines:
            if engine.ready:
                batch = self._form(engine, now)
                if batch:
                    batches.append((engine, batch))
        if not batches:
            return
        for _, batch in batches:
            for state, _, first in batch:
                if first:
                    state.prefill_start = now
        duration = self._duration(batches, now)
        self.busy = True
        self.running = batches
        busy: dict[int, int] = {}
        for engine, _ in batches:
            busy[engine.node] = busy.get(engine.node, 0) + 1
        for node, count in busy.items():
            self.sim.gpu_meters[node].add(now, now + duration, duration * count)
        if self.sim.recorder.wants_spans:
            for engine, batch in batches:
                self.sim.span(engine.spec.name, "prefill", now, now + duration,
                              ",".join(s.req.id for s, _, _ in batch), 0.0)
        self.sim.events.push(now + duration, ev.STEP_END, self.on_end)

    # ---- batch formation ---------------------------------------------------------------------
    def _form(self, engine, now: float) -> list:
        sim = self.sim
        states = sorted(engine.ready.values(), key=lambda s: s.assign_seq)
        chosen = sim.policy.form_batch([s.item for s in states])
        by_id = {s.req.id: s for s in states}
        batch, seen = [], set()
        hbm_left = sim.pe_free_hbm
        tokens_left = sim.calibration.max_batch_new_tokens or 1 << 62
        for item in chosen:
            s = by_id.get(item.request)
            if s is None or item.request in seen or not 1 <= item.new_tokens <= s.remaining:
                raise InputError(f"policy {sim.policy.name}",
                                 f"form_batch returned {item!r}, not a queued item or a chunk of one")
            new = min(item.new_tokens, tokens_left)  # the engine's own chunked-prefill budget
            if new <= 0:
                break
            if not sim.options.layerwise:
                need = (s.cached + new) * sim.kv
                if batch and need > hbm_left:
                    break  # all KV resident: HBM bounds the batch
                hbm_left -= need
            seen.add(item.request)
            tokens_left -= new
            batch.append((s, new, s.prefill_start < 0))
        return batch

    # ---- timing --------------------------------------------------------------------------------
    def _duration(self, batches: list, now: float) -> float:
        sim = self.sim
        llm = sim.llm
        kv, bt = sim.kv, sim.block_tokens
        zero_io, layerwise = sim.options.zero_io, sim.options.layerwise
        overhead = llm.cost.prefill_overhead_s
        max_attn, other_sum, max_full = 0.0, 0.0, 0.0
        per_engine = []
        de_src: dict[int, float] = {}
        for engine, batch in batches:
            pairs = [(s.cached, n) for s, n, _ in batch]
            attn = llm.attention_time_s(pairs)
            full = llm.prefill_time_s(pairs)
            max_attn = max(max_attn, attn)
            max_full = max(max_full, full)
            other_sum += full - attn - overhead
            local_bytes = in_blocks = out_bytes = out_blocks = 0
            for s, n, first in batch:
                local_bytes += s.cached * kv - s.de_read
                in_blocks += _ceil_div(s.cached, bt)
                if s.de_read:
                    de_src[s.de] = de_src.get(s.de, 0.0) + s.de_read
                out_bytes += n * kv + (s.pe_read if first else 0)
                out_blocks += _ceil_div(n, bt) + (_ceil_div(s.pe_read // kv, bt) if first else 0)
            per_engine.append((engine, batch, local_bytes, in_blocks, out_bytes, out_blocks))
        if sim.lockstep:
            compute = overhead + max_attn + other_sum / len(self.engines)
        else:
            compute = max_full
        if zero_io:
            return compute
        # KV the DEs' CNICs push to this step's PEs (DE-read path), first come first served per DE.
        de_ready = now
        for d, num_bytes in de_src.items():
            de_ready = max(de_ready, sim.de_out[d].reserve(now, num_bytes, request=None))
        if layerwise:
            return self._layerwise(per_engine, compute, de_ready, now)
        return self._resident(per_engine, compute, de_ready, now)

    def _layerwise(self, per_engine: list, compute: float, de_ready: float, now: float) -> float:
        sim = self.sim
        num_layers, kv = sim.num_layers, sim.kv
        submit = sim.calibration.rdma_submit_s
        t = o = 0.0
        de_landed = now
        for engine, batch, _, in_blocks, out_bytes, out_blocks in per_engine:
            in_bytes = sum(s.cached for s, _, _ in batch) * kv
            in_end = sim.pe_in[engine.index].reserve(now, in_bytes, in_blocks * num_layers * submit)
            out_end = sim.pe_out[engine.index].reserve(now, out_bytes, out_blocks * num_layers * submit)
            t = max(t, (in_end - now) / num_layers)
            o = max(o, (out_end - now) / num_layers)
            for s, n, first in batch:
                sent = n * kv + (s.pe_read if first else 0)
                de_landed = max(de_landed, sim.de_in[s.de].reserve(now, sent))
        c = compute / num_layers
        duration = t + c + o + (num_layers - 1) * max(t, c, o)
        # The last layer cannot run before the slowest DE CNIC has delivered its share.
        return max(duration, de_ready - now + c + o, de_landed - now)

    def _resident(self, per_engine: list, compute: float, de_ready: float, now: float) -> float:
        sim = self.sim
        num_layers, cal = sim.num_layers, sim.calibration
        h2d = de_ready - now
        for engine, _, local_bytes, in_blocks, _, _ in per_engine:
            # Every Full Block is scattered into L per-layer KV pages by separate copies.
            end = sim.pe_pcie[engine.index].reserve(now, local_bytes, in_blocks * num_layers * cal.cuda_copy_submit_s)
            h2d = max(h2d, end - now)
        return h2d + compute

    def _send_to_des(self, engine, s, now: float) -> float:
        """Not layerwise: a finished request's KV goes PE HBM -> DE after the step; when it lands."""
        sim = self.sim
        sent = s.prompt_bytes - s.de_read
        blocks = _ceil_div(sent // sim.kv, sim.block_tokens) * sim.num_layers
        out_end = sim.pe_out[engine.index].reserve(now, sent, blocks * sim.calibration.rdma_submit_s, s.req.id)
        return max(out_end, sim.de_in[s.de].reserve(now, sent, 0.0, s.req.id))

    # ---- step end ------------------------------------------------------------------------------
    def on_end(self, _=None) -> None:
        sim = self.sim
        now = sim.events.now_s
        board = sim.board
        layerwise = sim.options.layerwise or sim.options.zero_io
        for engine, batch in self.running:
            for s, n, _ in batch:
                s.cached += n
                s.remaining -= n
                engine.num_tokens -= n
                if s.remaining == 0:
                    del engine.ready[s.req.id]
                    engine.num_seqs -= 1
                    s.item = None
                    kv_at = now if layerwise else self._send_to_des(engine, s, now)
                    sim.prefill_done(s, now, kv_at)
                else:
                    s.item = BatchItem(s.req.id, s.cached, s.remaining, s.ready_at)
            board.dirty_pe.add(engine.index)
        self.running = []
        self.busy = False
        sim.request_schedule()
        self.kick()
