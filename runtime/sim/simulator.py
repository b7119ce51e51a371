"""The discrete-event simulator: `simulate(cluster, llm, workload, policy) -> Trace`.

A request's life: it waits at the global scheduler until the policy assigns a PE, a DE and the
bytes to read on each side; each side's read waits in its node's FIFO storage queue (buffer first,
then the SNIC); once read, it queues at its PE for a forward batch (`prefill_groups`); its KV lands in
its DE's buffer, is copied into DE HBM and decodes (`decode_groups`); completed blocks are persisted
(DE CNIC, then SNIC writes); the agent's next turn arrives when it finishes (offline: all agents
start at 0; online: at their arrival times). Constants come from `calibration`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

from dualpath.calibration import PAPER_CALIBRATION, Calibration
from dualpath.cluster import ClusterSpec
from dualpath.errors import InfeasibleError, InputError
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment, Plan
from dualpath.policy import BatchItem, ExecutionOptions, Policy
from dualpath.request import Request, Workload, by_agent
from dualpath.runtime.sim import events as ev
from dualpath.runtime.sim.board import EngineBoard
from dualpath.runtime.sim.context import make_context
from dualpath.runtime.sim.decode_groups import DecodeGroup
from dualpath.runtime.sim.hardware import build_hardware, check_fits
from dualpath.runtime.sim.parallelism import expert_groups
from dualpath.runtime.sim.prefill_groups import PrefillGroup
from dualpath.runtime.sim.progress import ProgressFn, make_progress
from dualpath.runtime.sim.state import PendingView, ReqState
from dualpath.runtime.sim.storage import ReadOp
from dualpath.trace import Trace


class Simulator:
    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, workload: Workload, policy: Policy, *,
                 online: bool = False, calibration: Calibration = PAPER_CALIBRATION,
                 chrome_window: tuple[float, float] | None = None, seed: int = 0) -> None:
        self.cluster, self.workload, self.online, self.seed = cluster, workload, online, seed
        self.ctx = ctx = make_context(llm, policy, calibration, chrome_window)
        recorder = ctx.recorder
        self.hw = hw = build_hardware(cluster, ctx.llm, calibration, ctx.lockstep,
                                      recorder.span if recorder.wants_spans else None)
        self.board = EngineBoard(hw.pes, hw.des, list(hw.node_index), hw.pe_free_hbm_bytes)
        self.pe_groups = [PrefillGroup(ctx, hw, self.board, i, engines, self.prefill_done, self.request_schedule)
                          for i, engines in enumerate(hw.pe_groups)]
        self.decode_groups = [DecodeGroup(ctx, hw, i, engines, self.finish) for i, engines in enumerate(hw.de_groups)]
        self.pending: dict[str, ReqState] = {}
        self.pending_view = PendingView(self.pending)
        self.schedule_posted, self.last_schedule_s = False, -1e30
        self.assign_seq, self.num_done, self.num_requests = 0, 0, len(workload.requests)
        self.pe_by_name = {e.spec.name: e for e in hw.pes}
        self.de_by_name = {e.spec.name: e for e in hw.des}
        # Looked up once: `assign` runs per request, and the lookups were a visible share.
        self.dram_buffer_bytes, self.zero_io = cluster.node.dram_buffer_bytes, ctx.options.zero_io
        self.dirty_pe_add, self.dirty_de_add = self.board.dirty_pe.add, self.board.dirty_de.add

    # ---- scheduling ----------------------------------------------------------------------------
    def on_arrival(self, payload: tuple[Sequence[Request], int]) -> None:
        chain, index = payload
        state = ReqState(chain[index], self.ctx.events.now_s, self.ctx.kv_bytes_per_token, chain, index)
        self.pending_view.add(state)
        self.request_schedule()

    def request_schedule(self) -> None:
        if self.schedule_posted or not self.pending:
            return
        self.schedule_posted = True
        events = self.ctx.events
        at = max(events.now_s, self.last_schedule_s + self.ctx.calibration.schedule_interval_s)
        events.push(at, ev.SCHEDULE, self.on_schedule)

    def on_schedule(self, _: object = None) -> None:
        self.schedule_posted = False
        if not self.pending:
            return
        now = self.ctx.events.now_s
        policy = self.ctx.policy
        # A policy waiting for a prefill report would assign nothing: skip the call, but time the next
        # one as after a call, so the run is the same.
        assignments = (policy.schedule(self.pending_view, self.board.snapshot(now, self.hw.storages))
                       if self.board.dirty_pe or not policy.waits_for_prefill() else [])
        self.last_schedule_s = now
        for a in assignments:
            self.assign(a, now)

    def assign(self, a: Assignment, now: float) -> None:
        kv = self.ctx.kv_bytes_per_token
        s = self.pending_view.pop(a.request)
        pe, de = self.pe_by_name.get(a.pe), self.de_by_name.get(a.de)
        pe_read, de_read = a.pe_read_bytes, a.de_read_bytes
        if s is None or pe is None or de is None:
            raise InputError(f"policy {self.ctx.policy.name}",
                             f"assignment {a!r} names a request not waiting or an unknown engine")
        r = s.req
        if pe_read < 0 or de_read < 0 or pe_read + de_read != r.hit_tokens * kv:
            raise InputError("policy " + self.ctx.policy.name, f"{r.id}: reads {pe_read} + {de_read} B, "
                             f"expected the {r.hit_tokens * kv} hit bytes in all")
        if pe_read > self.dram_buffer_bytes:
            raise InfeasibleError(r.id, "PE DRAM buffer", f"PE-side read of {pe_read:,} B")
        s.pe, s.de, s.pe_read_bytes, s.de_read_bytes = pe.index, de.index, pe_read, de_read
        self.assign_seq += 1
        s.assign_seq = self.assign_seq
        pe.num_seqs += 1
        pe.num_tokens += s.remaining_tokens
        de.num_seqs += 1
        de.num_tokens += s.context_tokens
        if de.free_hbm_bytes >= s.context_bytes:
            de.free_hbm_bytes -= s.context_bytes
            s.hbm_reserved = True
        self.dirty_pe_add(pe.index)
        self.dirty_de_add(de.index)
        reads = []
        if pe_read:
            reads.append((pe.node, ReadOp(s, pe_read, pe_read // kv, pe_read)))
        if de_read:
            reads.append((de.node, ReadOp(s, de_read, de_read // kv, s.prompt_bytes)))
        storages = self.hw.storages
        if self.zero_io:
            for node, op in reads:
                storages[node].read_bytes_total += op.num_bytes
            reads = []
        s.num_reads_left = len(reads)
        for node, op in reads:
            storages[node].enqueue(op)
            self.pump(node)
        if not reads:
            self.became_ready(s)

    # ---- storage -------------------------------------------------------------------------------
    def pump(self, node: int) -> None:
        storage = self.hw.storages[node]
        if storage.reading is not None or not storage.queue:
            return  # the SNIC is busy or nothing waits (most calls): `start_next` would say None
        op = storage.start_next(self.ctx.events.now_s)
        if op is not None:
            if node == self.hw.des[op.state.de].node:
                op.state.de_buf_bytes = op.reserve_bytes
            self.ctx.events.push(op.end_s, ev.READ_DONE, self.on_read_done, (node, op))

    def on_read_done(self, payload: tuple[int, ReadOp]) -> None:
        node, op = payload
        self.hw.storages[node].finish(op)
        s = op.state
        s.num_reads_left -= 1
        if s.num_reads_left == 0:
            self.became_ready(s)
        self.pump(node)

    def became_ready(self, s: ReqState) -> None:
        s.in_dram_s = self.ctx.events.now_s
        s.item = BatchItem(s.req.id, s.cached_tokens, s.remaining_tokens, s.ready_s)
        pe = self.hw.pes[s.pe]
        pe.ready[s.req.id] = s
        self.pe_groups[pe.group].kick()

    # ---- prefill -> decode -> finish -----------------------------------------------------------
    def prefill_done(self, s: ReqState, now: float, kv_at: float) -> None:
        s.first_token_s = now
        if s.pe_read_bytes and not self.ctx.options.zero_io:
            node = self.hw.pes[s.pe].node
            self.hw.storages[node].release(s.pe_read_bytes, now)
            self.pump(node)
        if s.req.output_tokens <= 1:
            s.second_token_s = now
            self.release_de_buffer(s, now)
            self.finish(s, now)
        elif kv_at > now:
            self.ctx.events.push(kv_at, ev.DE_READY, self.kv_landed, s)
        else:
            self.kv_landed(s)

    def kv_landed(self, s: ReqState) -> None:
        de = self.hw.des[s.de]
        if not s.hbm_reserved:
            if de.free_hbm_bytes < s.context_bytes:
                de.hbm_waiting.append(s)  # the policy over-committed this DE: wait for a decode to end
                return
            de.free_hbm_bytes -= s.context_bytes
            s.hbm_reserved = True
            self.board.dirty_de.add(s.de)
        self.start_h2d(s, self.ctx.events.now_s)

    def start_h2d(self, s: ReqState, now: float) -> None:
        ctx = self.ctx
        end = now
        if not ctx.options.zero_io:
            blocks = -(-s.req.prompt_tokens // ctx.block_tokens) * ctx.num_layers  # whole blocks, per layer
            end = self.hw.de_in[s.de].reserve(now, s.prompt_bytes, blocks * ctx.de_load_submit_s, s.req.id)
        if end > now:
            ctx.events.push(end, ev.DE_READY, self.decode_start, s)
        else:
            self.decode_start(s)

    def decode_start(self, s: ReqState) -> None:
        now = self.ctx.events.now_s
        self.release_de_buffer(s, now)
        self.decode_groups[self.hw.des[s.de].group].join(s, now)

    def release_de_buffer(self, s: ReqState, now: float) -> None:
        if s.de_buf_bytes:
            node = self.hw.des[s.de].node
            self.hw.storages[node].release(s.de_buf_bytes, now)
            s.de_buf_bytes = 0
            self.pump(node)

    def finish(self, s: ReqState, now: float) -> None:
        ctx, hw = self.ctx, self.hw
        r = s.req
        s.finish_s = now
        de = hw.des[s.de]
        de.num_seqs -= 1
        de.num_tokens -= s.context_tokens
        if s.hbm_reserved:
            de.free_hbm_bytes += s.context_bytes
            s.hbm_reserved = False
        self.board.dirty_de.add(s.de)
        for waiting in de.admit_waiting() if de.hbm_waiting else ():
            self.start_h2d(waiting, now)
        bt = ctx.block_tokens
        persist_tokens = (s.context_tokens // bt) * bt - r.hit_tokens
        if persist_tokens > 0 and not ctx.options.zero_io:
            num_bytes = persist_tokens * ctx.kv_bytes_per_token
            blocks = -(-persist_tokens // bt) * ctx.num_layers
            hw.de_out[s.de].reserve(now, num_bytes, blocks * ctx.calibration.rdma_submit_s, r.id)
            hw.storages[de.node].write.reserve(now, num_bytes, 0.0, r.id)
        ctx.recorder.record(s, hw.pes[s.pe].spec.name, de.spec.name)
        self.num_done += 1
        if s.index + 1 < len(s.chain):
            nxt = s.chain[s.index + 1]
            at = max(now, nxt.arrival_s) if self.online else now
            ctx.events.push(at, ev.ARRIVAL, self.on_arrival, (s.chain, s.index + 1))
        self.request_schedule()

    # ---- run -----------------------------------------------------------------------------------
    def run(self, progress: ProgressFn | None = None) -> Trace:
        ctx, events = self.ctx, self.ctx.events
        check_fits(self.workload.requests, ctx.kv_bytes_per_token, self.hw, self.cluster.node.dram_buffer_bytes,
                   ctx.options.layerwise)
        for chain in by_agent(self.workload.requests).values():
            events.push(chain[0].arrival_s if self.online else 0.0, ev.ARRIVAL, self.on_arrival, (chain, 0))
        started = time.perf_counter()
        tick = (lambda: progress(self.num_done, self.num_requests, events.now_s)) if progress else None
        events.run(tick)
        wall_s = time.perf_counter() - started
        if self.num_done != self.num_requests:
            left = self.num_requests - self.num_done
            raise InfeasibleError(next(iter(self.pending), None) or "?", "scheduling",
                                  f"policy {ctx.policy.name} left {left} of {self.num_requests} requests unfinished")
        if progress:
            progress(self.num_done, self.num_requests, events.now_s)
        return self._trace(wall_s)

    def _trace(self, wall_s: float) -> Trace:
        ctx = self.ctx
        meta = {
            "cluster": self.cluster.name or self.cluster.shorthand, "model": ctx.llm.name,
            "workload": self.workload.name, "agents": len({r.agent for r in self.workload.requests}),
            "online": self.online, "seed": self.seed, "layerwise": ctx.options.layerwise,
            "pe_group_gpus": self.cluster.pe_group_gpus, "de_group_gpus": self.cluster.de_group_gpus,
            "zero_io": ctx.options.zero_io, "wall_s": wall_s, "events": ctx.events.num_events,
            "sim_requests_per_wall_s": self.num_requests / wall_s if wall_s > 0 else 0.0,
            "hit_bytes": sum(r.hit_tokens for r in self.workload.requests) * ctx.kv_bytes_per_token,
        }
        return ctx.recorder.trace(ctx.policy.name, self.hw, self.cluster.node,
                                  [g.busy_meter for g in self.decode_groups], meta)


def simulate(cluster: ClusterSpec, llm: LLMSpec, workload: Workload, policy: Policy | Plan, *,
             online: bool = False, calibration: Calibration = PAPER_CALIBRATION,
             progress: bool | ProgressFn | None = None, chrome_window: tuple[float, float] | None = None,
             seed: int = 0, execution: ExecutionOptions | None = None) -> Trace:
    """Run `workload` on `cluster` under `policy` (or replay a `Plan`) and return what happened.

    `progress`: None shows a bar on a TTY for runs over a few seconds, True always, False never, or a
    callable(done, total, sim_s). `chrome_window`: (start_s, end_s) of spans to keep for Chrome.
    Expert-parallel groups too small to hold the model's weights (the shorthand's default of one node
    for DeepSeek-V3.2) are widened as `parallelism.expert_groups` says; the trace's meta records them.
    Pass the policy the same `calibrated_llm(llm, calibration)` so its predictions match the run's.
    """
    cluster = expert_groups(cluster, calibration.apply(llm), calibration)
    if isinstance(policy, Plan):
        from dualpath.runtime.sim.plan_replay import SimPlanReplay

        policy = SimPlanReplay(cluster, llm, policy, execution or ExecutionOptions())
    sim = Simulator(cluster, llm, workload, policy, online=online, calibration=calibration,
                    chrome_window=chrome_window, seed=seed)
    report, close = make_progress(progress, f"{policy.name}")
    # A run makes no reference cycles (the same peak memory with the cyclic collector off), but its
    # millions of allocations trigger the collector's passes over every live record: 3-10% of a run.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return sim.run(report)
    finally:
        if collecting:
            gc.enable()
        close()
