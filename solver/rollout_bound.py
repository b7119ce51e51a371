"""A lower bound on a rollout's executed JCT: no policy or plan run by our simulator finishes sooner.

A rollout is every turn of every agent; turn i+1 of an agent exists only once turn i's last token is
out. Every term below is something the simulator (`dualpath.runtime.sim`) cannot do faster, whatever
the assignment, read split, batch order or chunking:

- per request, the fastest turn: its reads split evenly over two SNICs at their effective rate;
  prefill alone on an engine (a step overhead per chunk the calibration's per-step token budget
  forces, at least one; attention at its chunking-proof integral; the dense work spread over the
  widest possible lockstep group), plus the layer pipeline's first CNIC load and the PE <-> DE share
  of the hit; the prompt's copy into DE HBM; `output - 1` decode steps at the
  batch-of-one step time with the fewest weight bytes any group layout leaves per GPU. Layerwise and
  whole-KV prefill are both bounded and the smaller is used, so the bound holds for either executor;
- `longest_chain`: an agent's turns one after the other, consecutive assignments at least one
  scheduling interval apart (the simulator's group leaders fetch no more often);
- pooled loads (all SNICs' bytes, DE CNIC-in bytes, PE-side hit bytes, PE engine-seconds of prefill,
  decode seq-step compute and KV reads, DE HBM byte-seconds), first as fluid terms, then with chains
  (`+chains`): a request's use of a resource can start no earlier than its chain prefix allows and is
  followed by at least the rest of its chain, so for every set S of requests released at or after rho,
  JCT >= rho + W(S) / capacity + min tail over S (and symmetrically over tails).

Attention per query is concave in context (linear, or capped at the sparse top-k), so any chunking
of a prefill costs at least the integral; a decode step's cost is superadditive in its sequences.
With `zero_io` (the paper's Oracle: no reads, no H2D/D2H, no PD transfers) the I/O terms are 0.
JCT is measured from 0, where an offline rollout starts every agent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dualpath.calibration import Calibration
from dualpath.cluster import ClusterSpec
from dualpath.llm import LLMSpec
from dualpath.request import Request, by_agent


@dataclass(frozen=True)
class RolloutBound:
    """`value_s` = max of `terms_s`; `binding` names the term that sets it."""

    value_s: float
    binding: str
    terms_s: dict[str, float]


@dataclass(frozen=True, slots=True)
class _Turn:
    """One request's fastest phases (seconds) and its loads on the pooled resources."""

    read_s: float  # both reads done, from assignment
    after_prefill_s: float  # -> its last token (H2D and decode, or the PD send first when not layerwise)
    decode_s: float  # decode steps alone
    total_s: float  # assignment -> last token, the faster executor
    prefill_work_s: float  # engine-seconds of prefill compute
    hit_bytes: int
    de_in_bytes: int  # must cross a DE CNIC before its decode
    decode_compute_s: float  # per-sequence share of decode compute, all its steps
    decode_kv_read_s: float  # per-sequence share of decode HBM reads, all its steps
    hbm_byte_s: float  # DE HBM held x shortest residency


def _attention_integral_flops(llm: LLMSpec, cached: int, new: int) -> float:
    """Attention FLOPs of `new` tokens over `cached` at the exact integral (f is linear between kinks)."""
    topk = llm.index_topk_tokens
    if topk and cached < topk < cached + new:
        return llm.attention_flops(cached, topk - cached) + llm.attention_flops(topk, cached + new - topk)
    return llm.attention_flops(cached, new)


class _Costs:
    """The executor's rates for `cluster` and `llm` under `calibration`, and each request's fastest turn."""

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, calibration: Calibration, block_tokens: int,
                 zero_io: bool) -> None:
        self.llm = llm = calibration.apply(llm)
        self.cal, self.bt, self.zero_io = calibration, block_tokens, zero_io
        node, cost = cluster.node, llm.cost
        self.num_pe, self.num_de = cluster.num_pe, cluster.num_de  # one engine per GPU, as the simulator
        self.num_nodes = cluster.num_prefill_nodes + cluster.num_decode_nodes
        self.layers, self.kv = llm.num_layers, llm.kv_bytes_per_token
        self.snic = node.snic_bytes_per_s * calibration.snic_read_efficiency
        self.cnic = node.cnic_bytes_per_s * node.cnic_kv_share
        self.pcie = node.pcie_gbps * 1e9 / 8
        self.prefill_rate = cost.peak_tflops * 1e12 * cost.prefill_mfu * llm.gpus_per_engine
        self.decode_rate = cost.peak_tflops * 1e12 * cost.decode_mfu * llm.gpus_per_engine
        self.hbm_rate = cost.hbm_gb_per_s * 1e9 * cost.hbm_efficiency
        # Fewest weight bytes a DE GPU can hold: sharded over every DE GPU (widest MoE group) or over
        # an engine's GPUs (dense); the real layout holds at least this, so steps are no faster.
        shards = max(cluster.num_de, llm.gpus_per_engine)
        self.weight_bytes = llm.total_params * calibration.weight_bytes_per_param_of(llm) / shards
        usable = node.hbm_bytes_per_gpu * (1 - calibration.hbm_reserve_fraction)
        self.de_free_bytes = max(0.0, usable - self.weight_bytes)
        # An expert-parallel DE group of more than one GPU pays at least DeepEP's smallest latency (its
        # EP8 row) per MoE layer; the executor only ever widens the cluster's groups.
        self.ep_gpus = 8 if llm.expert_parallel and cluster.de_group_gpus > 1 else 1

    def turn(self, r: Request) -> _Turn:
        llm, cal, bt, layers, kv = self.llm, self.cal, self.bt, self.layers, self.kv
        hit, prompt, out = r.hit_tokens, r.prompt_tokens, r.output_tokens
        attn_s = _attention_integral_flops(llm, hit, r.new_tokens) / self.prefill_rate
        dense_s = 2.0 * llm.active_params * r.new_tokens / self.prefill_rate
        # Lockstep groups divide the dense work by their size; every PE engine is the widest group.
        # An engine's per-step token budget (if the calibration sets one) chunks the prefill: one step,
        # one overhead, per chunk.
        steps = -(-r.new_tokens // cal.max_batch_new_tokens) if cal.max_batch_new_tokens else 1
        compute_s = steps * llm.cost.prefill_overhead_s + attn_s + dense_s / self.num_pe
        ctx = prompt + out // 2  # the simulator's decode context
        decode_s = (out - 1) * llm.decode_step_s(1, ctx, self.weight_bytes, self.ep_gpus)
        compute_per_step = (2.0 * llm.active_params + llm.attention_flops(max(ctx - 1, 0), 1)) / self.decode_rate
        kv_per_step = layers * llm.attention_kv_bytes_per_token_per_layer * llm.attended_tokens(ctx) / self.hbm_rate
        h, p = hit * kv, prompt * kv
        if self.zero_io:
            read_s, prefill_s, to_decode_s, h2d_s = 0.0, compute_s, 0.0, 0.0
        else:
            read_s = h / (2 * self.snic)  # split evenly over the PE and DE nodes' SNICs
            hit_blocks, prompt_blocks = -(-hit // bt), -(-prompt // bt)
            # Layerwise: the first layer's CNIC load precedes compute; the larger read side crosses a CNIC;
            # then the prompt's copy into DE HBM.
            load_s = max(h / self.cnic, hit_blocks * layers * cal.rdma_submit_s) / layers
            lw_prefill = max(compute_s + load_s, h / (2 * self.cnic))
            lw_h2d = max(p / self.cnic, prompt_blocks * layers * cal.rdma_submit_s) if out > 1 else 0.0
            # Whole KV: PE-side bytes over PCIe, DE-side over the DE CNIC, one copy per block per layer;
            # then the PD send of at least the new KV and the H2D into DE HBM, on the same DE CNIC.
            wk_prefill = compute_s + max(h / (self.cnic + self.pcie), hit_blocks * layers * cal.cuda_copy_submit_s)
            wk_h2d = max(p / self.cnic, prompt_blocks * layers * cal.cuda_copy_submit_s) if out > 1 else 0.0
            wk_send = (p - h) / self.cnic if out > 1 else 0.0
            prefill_s = min(lw_prefill, wk_prefill)
            to_decode_s = min(lw_prefill + lw_h2d, wk_prefill + wk_send + wk_h2d) - prefill_s
            h2d_s = min(lw_h2d, wk_h2d)
        before_decode_s = read_s + prefill_s + to_decode_s
        return _Turn(
            read_s=read_s, after_prefill_s=to_decode_s + decode_s, decode_s=decode_s,
            total_s=before_decode_s + decode_s,
            prefill_work_s=attn_s + dense_s, hit_bytes=h, de_in_bytes=(p + r.new_tokens * kv) if out > 1 else 0,
            decode_compute_s=(out - 1) * compute_per_step, decode_kv_read_s=(out - 1) * kv_per_step,
            hbm_byte_s=(r.context_tokens * kv * (h2d_s + decode_s)) if out > 1 else 0.0,
        )


def _windowed(items: list[tuple[float, float, float]], capacity: float) -> float:
    """max over release thresholds rho (and tail thresholds) of rho + W(S) / capacity + min tail(S),
    for items (release_s, work, tail_s): the work of S fits no sooner on `capacity` pooled servers."""
    items = [it for it in items if it[1] > 0]
    if not items or capacity <= 0:
        return 0.0
    best, work, min_tail = 0.0, 0.0, math.inf
    for release, w, tail in sorted(items, key=lambda it: -it[0]):
        work += w
        min_tail = min(min_tail, tail)
        best = max(best, release + work / capacity + min_tail)
    work, min_release = 0.0, math.inf
    for release, w, tail in sorted(items, key=lambda it: -it[2]):
        work += w
        min_release = min(min_release, release)
        best = max(best, min_release + work / capacity + tail)
    return best


def rollout_lower_bound(cluster: ClusterSpec, llm: LLMSpec, requests: Sequence[Request], calibration: Calibration,
                        block_tokens: int = 64, *, zero_io: bool = False) -> RolloutBound:
    """A bound on the JCT of any offline execution of `requests` (every turn of every agent) by the
    simulator with `calibration`; `zero_io` for the Oracle's executor (no I/O at all)."""
    if not requests:
        return RolloutBound(0.0, "none", {})
    costs = _Costs(cluster, llm, calibration, block_tokens, zero_io)
    interval = calibration.schedule_interval_s
    # Per request: (turn, earliest assignment, least time from its last token to its agent's last).
    rows: list[tuple[_Turn, float, float]] = []
    longest = 0.0
    for chain in by_agent(requests).values():
        turns = [costs.turn(r) for r in chain]
        # Assignments of consecutive turns are a scheduling interval apart and a turn apart.
        gaps = [max(interval, t.total_s) for t in turns[:-1]]
        releases = [0.0]
        for gap in gaps:
            releases.append(releases[-1] + gap)
        chain_s = releases[-1] + turns[-1].total_s
        longest = max(longest, chain_s)
        for i, t in enumerate(turns):
            rest = chain_s - releases[i + 1] if i + 1 < len(turns) else 0.0
            rows.append((t, releases[i], rest))

    def fluid(work: float, capacity: float) -> float:
        return work / capacity if capacity > 0 else 0.0

    c = costs
    snic_cap = 0.0 if zero_io else c.num_nodes * c.snic
    de_in_cap = 0.0 if zero_io else c.num_de * c.cnic
    # PE-side hit bytes: through each PE's CNIC (layerwise), or PCIe plus DE CNICs (whole KV): the larger.
    pe_side_cap = 0.0 if zero_io else max(c.num_pe * c.cnic, c.num_pe * c.pcie + c.num_de * c.cnic)
    hbm_cap = c.num_de * c.de_free_bytes
    loads = {
        "prefill_compute": ([(rel + t.read_s, t.prefill_work_s, t.after_prefill_s + rest) for t, rel, rest in rows],
                            float(c.num_pe)),
        "snic_bytes": ([(rel, float(t.hit_bytes), t.total_s - t.read_s + rest) for t, rel, rest in rows], snic_cap),
        "cnic_de_in": ([(rel + t.read_s, float(t.de_in_bytes), t.decode_s + rest) for t, rel, rest in rows],
                       de_in_cap),
        "cnic_pe_side": ([(rel + t.read_s, float(t.hit_bytes), t.after_prefill_s + rest) for t, rel, rest in rows],
                         pe_side_cap),
        "decode_compute": ([(rel + t.total_s - t.decode_s, t.decode_compute_s, rest) for t, rel, rest in rows],
                           float(c.num_de)),
        "decode_kv_read": ([(rel + t.total_s - t.decode_s, t.decode_kv_read_s, rest) for t, rel, rest in rows],
                           float(c.num_de)),
        "decode_hbm": ([(rel, t.hbm_byte_s, rest) for t, rel, rest in rows], hbm_cap),
    }
    pure = {name: fluid(sum(w for _, w, _ in items), cap) for name, (items, cap) in loads.items()}
    mixed = {name: _windowed(items, cap) for name, (items, cap) in loads.items()}
    terms = {
        "prefill_compute": pure["prefill_compute"],
        "snic_bytes": pure["snic_bytes"],
        "cnic_bytes": max(pure["cnic_de_in"], pure["cnic_pe_side"]),
        "decode_capacity": max(pure["decode_compute"], pure["decode_kv_read"]),
        "decode_hbm": pure["decode_hbm"],
        "longest_chain": longest,
        "prefill_compute+chains": mixed["prefill_compute"],
        "snic_bytes+chains": mixed["snic_bytes"],
        "cnic_bytes+chains": max(mixed["cnic_de_in"], mixed["cnic_pe_side"]),
        "decode_capacity+chains": max(mixed["decode_compute"], mixed["decode_kv_read"]),
        "decode_hbm+chains": mixed["decode_hbm"],
    }
    binding = max(terms, key=lambda k: terms[k])  # first of equals: the plain term before its mixed form
    return RolloutBound(terms[binding], binding, terms)
