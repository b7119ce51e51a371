"""Fluid limits of an online run: the arrival rate (agents per second) no execution can sustain.

In a steady state every resource must serve, per second, the arrival rate times what one agent asks
of it over its life; a rate past `capacity / demand per agent` for any resource makes that resource's
queue grow without end, whatever the scheduler does. The resources (per-agent demand from the
workload the run actually executes, the mix of fresh and resampled agents included):

- storage reads: the agent's hit KV bytes through the SNICs of the nodes allowed to read (PE nodes
  for PE-only reads such as Basic, every node for DualPath; none for the zero-I/O Oracle);
- storage writes: its completed blocks persisted through the DE nodes' SNICs;
- prefill compute: its prefill seconds (the LLM's own `prefill_time_s`, the same cost model the
  executor runs, less the per-batch overhead, which batching amortises) on all PE engines;
- KV copies into HBM, where the executor copies a request's whole KV into HBM before computing it
  (no layerwise prefill): their seconds on each PE's copy stream, a resource of its own because the
  executor copies the next batch while the current one computes;
- decode: its output tokens over what the DE engines generate per second at the largest batch whose
  step meets the TPOT SLO and whose contexts fit in free HBM.

The bound is loose where the executor loses time the fluid model ignores (lockstep groups, copies,
queueing): a capacity search reports rates strictly below the smallest limit and names it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from dualpath.cluster import ClusterSpec
from dualpath.errors import SpecError
from dualpath.kvlayout import PAPER_BLOCK_TOKENS
from dualpath.llm import LLMSpec
from dualpath.request import Request, Workload

READERS = ("pe", "all", "none")  # which nodes' SNICs load hit KV: PE nodes, every node, none (zero I/O)


@dataclass(frozen=True)
class ResourceLimit:
    """One resource: what it serves per second, what one agent asks of it, and the rate that saturates it."""

    name: str  # "SNIC reads (2 PE nodes)"
    unit: str  # "B", "s", "tokens"
    capacity_per_s: float
    demand_per_agent: float

    @property
    def limit_aps(self) -> float:
        return self.capacity_per_s / self.demand_per_agent if self.demand_per_agent > 0 else math.inf


@dataclass(frozen=True)
class FluidLimits:
    resources: tuple[ResourceLimit, ...]

    @property
    def binding(self) -> ResourceLimit:
        return min(self.resources, key=lambda r: r.limit_aps)

    @property
    def limit_aps(self) -> float:
        return self.binding.limit_aps

    @property
    def bound_by(self) -> str:
        return self.binding.name

    def as_dict(self) -> dict[str, object]:
        """For JSON, which has no infinity: an unbounded limit (a resource the agents never use) is null."""
        return {"fluid_limit_aps": _finite(self.limit_aps), "bound_by": self.bound_by,
                "resources": {r.name: {"limit_aps": _finite(r.limit_aps), "capacity_per_s": r.capacity_per_s,
                                       "demand_per_agent": r.demand_per_agent, "unit": r.unit}
                              for r in self.resources}}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class DecodeHardware:
    """What a DE GPU has besides the LLM: free HBM for KV and the weight bytes each step reads."""

    free_hbm_bytes: float
    weight_bytes_per_gpu: float
    ep_gpus: int = 1  # of the decode group's all-to-all


def _decode_tokens_per_s(llm: LLMSpec, hw: DecodeHardware, mean_context_tokens: float, tpot_slo_s: float) -> float:
    """Tokens per second of one DE engine at the largest batch meeting the TPOT SLO and fitting in HBM."""
    kv = llm.kv_bytes_per_token
    fit = int(hw.free_hbm_bytes // max(1.0, mean_context_tokens * kv))

    def step(batch: int) -> float:
        return llm.decode_step_s(batch, round(batch * mean_context_tokens), hw.weight_bytes_per_gpu, hw.ep_gpus)

    if fit < 1 or step(1) > tpot_slo_s:
        return 0.0
    low, high = 1, fit  # the step time grows with the batch: bisect for the largest batch within the SLO
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if step(mid) <= tpot_slo_s else (low, mid - 1)
    return low / step(low)


def fluid_limits(cluster: ClusterSpec, llm: LLMSpec, workload: Workload, *, readers: str, decode: DecodeHardware,
                 tpot_slo_s: float, snic_read_efficiency: float = 1.0, snic_write_efficiency: float = 1.0,
                 block_tokens: int = PAPER_BLOCK_TOKENS,
                 resident_copy_s: Callable[[Request], float] | None = None) -> FluidLimits:
    """The per-resource limits of serving `workload`'s agent mix on `cluster` (see the module text).

    `resident_copy_s(request)`: seconds a PE's copy stream spends putting the request's KV into HBM
    before its compute (an executor without layerwise prefill); None when there are no such copies.
    """
    if readers not in READERS:
        raise SpecError("fluid limits", "readers", readers, "one of " + ", ".join(READERS))
    requests = workload.requests
    agents = len({r.agent for r in requests})
    if not agents:
        raise SpecError(f"workload {workload.name}", "requests", 0, "at least one request")
    kv = llm.kv_bytes_per_token
    snic = cluster.node.snic_bytes_per_s
    out: list[ResourceLimit] = []
    if readers != "none":
        nodes = cluster.num_prefill_nodes + (cluster.num_decode_nodes if readers == "all" else 0)
        label = f"{nodes} PE node{'s' if nodes != 1 else ''}" if readers == "pe" else f"{nodes} PE+DE nodes"
        hit = sum(r.hit_tokens for r in requests) * kv / agents
        out.append(ResourceLimit(f"SNIC reads ({label})", "B", nodes * snic * snic_read_efficiency, hit))
        persisted = sum((r.context_tokens // block_tokens) * block_tokens - r.hit_tokens for r in requests)
        out.append(ResourceLimit(f"SNIC writes ({cluster.num_decode_nodes} DE nodes)", "B",
                                 cluster.num_decode_nodes * snic * snic_write_efficiency,
                                 max(0, persisted) * kv / agents))
    # One batch of everything: the compute seconds of every request with the per-batch overhead paid once,
    # taken off by subtracting an empty batch's time (the cost model's own overhead, whatever it is).
    pairs = [(r.hit_tokens, r.new_tokens) for r in requests]
    prefill_s = llm.prefill_time_s(pairs) - llm.prefill_time_s([])
    pe_engines = cluster.num_pe // llm.gpus_per_engine
    out.append(ResourceLimit(f"prefill compute ({pe_engines} PE engines)", "s", float(pe_engines), prefill_s / agents))
    if resident_copy_s is not None:
        copy_s = sum(resident_copy_s(r) for r in requests)
        out.append(ResourceLimit(f"KV copies into HBM ({pe_engines} PE copy streams)", "s", float(pe_engines),
                                 copy_s / agents))
    # Decode: contexts weighted by the tokens generated at them (long outputs hold their context longer).
    tokens = sum(r.output_tokens for r in requests)
    mean_context = sum((r.prompt_tokens + r.output_tokens / 2) * r.output_tokens for r in requests) / tokens
    de_engines = cluster.num_de // llm.gpus_per_engine
    per_engine = _decode_tokens_per_s(llm, decode, mean_context, tpot_slo_s)
    out.append(ResourceLimit(f"decode within TPOT SLO ({de_engines} DE engines)", "tokens",
                             de_engines * per_engine, tokens / agents))
    return FluidLimits(tuple(out))
