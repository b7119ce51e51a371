"""Decode engine groups of the simulator: continuous batching without per-token events.

Sequences in a group advance one token per step. A step's duration comes from the cost model for
each engine's batch (size and context) and, for an expert-parallel MoE group, is the slowest
engine's (every GPU joins each step's all-to-all). Membership changes only at step boundaries: a
sequence whose KV is in HBM joins at the next boundary, one that has produced its last token
leaves at the boundary that ends that step. Between changes every step has the same duration, so
the group jumps straight to the next boundary where something joins or leaves: one event per
change, not per token. A sequence's context is taken as prompt + half its output for the whole
decode (the mean it attends over), which keeps step times constant between changes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from operator import attrgetter

from dualpath.runtime.sim import events as ev
from dualpath.runtime.sim.context import SimContext
from dualpath.runtime.sim.hardware import Hardware
from dualpath.runtime.sim.nic import UsageMeter
from dualpath.runtime.sim.state import DEEngine, ReqState

_step_s_of = attrgetter("step_s")


class DecodeGroup:
    __slots__ = (
        "_seq",
        "anchor_s",
        "anchor_step",
        "busy_meter",
        "ctx",
        "engines",
        "hw",
        "index",
        "joins",
        "next_s",
        "on_done",
        "running",
        "step_s",
        "version",
    )

    def __init__(self, ctx: SimContext, hw: Hardware, index: int, engines: list[DEEngine],
                 on_done: Callable[[ReqState, float], None]) -> None:
        self.ctx = ctx
        self.hw = hw
        self.index = index
        self.engines = engines
        self.on_done = on_done  # (request, now): its last token is out
        self.running: list[tuple[int, int, ReqState]] = []  # heap of (finish_step, seq, state)
        self.joins: list[ReqState] = []
        self.anchor_s = 0.0  # a step boundary
        self.anchor_step = 0  # steps completed at anchor_s
        self.step_s = 0.0  # 0 while idle
        self.version = 0
        self.next_s = -1.0  # when the pending boundary event fires (-1: none)
        self.busy_meter = UsageMeter()
        self._seq = 0

    def join(self, state: ReqState, now: float) -> None:
        """`state`'s prompt KV is in its DE's HBM: it decodes from the next step boundary on."""
        self.joins.append(state)
        if self.step_s <= 0.0:
            boundary = now
        else:
            steps = math.ceil((now - self.anchor_s) / self.step_s - 1e-9)
            boundary = self.anchor_s + max(0, steps) * self.step_s
        if self.next_s < 0 or boundary < self.next_s - 1e-12:
            self._post(boundary)

    def _post(self, at: float) -> None:
        self.version += 1
        self.next_s = at
        self.ctx.events.push(at, ev.DECODE_BOUNDARY, self.on_boundary, self.version)

    def on_boundary(self, version: int) -> None:
        if version != self.version:
            return  # superseded by an earlier boundary
        self.next_s = -1.0
        now = self.ctx.events.now_s
        if self.step_s > 0.0:
            step = self.anchor_step + round((now - self.anchor_s) / self.step_s)
            self.busy_meter.add(self.anchor_s, now, now - self.anchor_s)
        else:
            step = self.anchor_step
        des = self.hw.des
        running = self.running
        done: list[ReqState] = []
        touched: set[DEEngine] = set()
        heappop, heappush = heapq.heappop, heapq.heappush
        while running and running[0][0] <= step:
            state = heappop(running)[2]
            engine = des[state.de]
            engine.num_decode_seqs -= 1
            engine.decode_ctx_tokens -= state.decode_ctx_tokens
            touched.add(engine)
            done.append(state)
        joined = self.joins
        self.joins = []
        seq = self._seq
        for state in joined:
            engine = des[state.de]
            engine.num_decode_seqs += 1
            engine.decode_ctx_tokens += state.decode_ctx_tokens
            touched.add(engine)
            seq += 1
            heappush(running, (step + state.req.output_tokens - 1, seq, state))
        self._seq = seq
        costs, weights, ep_gpus = self.ctx.llm.step_costs, self.hw.de_weight_bytes, self.hw.de_ep_gpus
        slowest, rescan = self.step_s, False
        for engine in touched:
            old = engine.step_s
            engine.step_s = new = costs.decode_step_s(engine.num_decode_seqs, engine.decode_ctx_tokens, weights,
                                                      ep_gpus)
            if new >= slowest:
                slowest = new
            elif old >= self.step_s:
                rescan = True  # the slowest engine got faster: look at them all
        if rescan:
            slowest = max(map(_step_s_of, self.engines))
        self.anchor_s = now
        self.anchor_step = step
        self.step_s = slowest if running else 0.0
        for state in joined:
            state.second_token_s = now + self.step_s
        if running:
            self._post(now + (running[0][0] - step) * self.step_s)
        for state in done:
            self.on_done(state, now)
