"""`rollout_lower_bound` against exhaustive executions of small rollouts in the simulator.

Each instance is small enough to run every execution of a family through the simulator: every
read side per request, every DE per agent (1P2D), every priority order of the agents, whole-queue or
one-at-a-time forward batches, layerwise or whole-KV prefill; plus the online policies. No execution
may finish before the bound; on a read-bound and a compute-bound instance the bound must be at least
half the best execution (a bound of 0 would pass the first check), and a deliberately wrong bound
(1.5x the best) must be caught by the same checker.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import pytest

from dualpath.calibration import Calibration
from dualpath.cluster import ClusterSpec, NodeSpec, Role
from dualpath.llm import AttentionKind, CostModel, LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import BatchItem, ClusterState, ExecutionOptions, Policy
from dualpath.request import Request, Workload
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy
from dualpath.solver.rollout_bound import RolloutBound, rollout_lower_bound

# 2 layers x 500 B: 1,000 B of KV per token; 2 GFLOP per token at 1 TFLOPS: 2 ms of prefill per token.
COST = CostModel(peak_tflops=1.0, prefill_mfu=1.0, decode_mfu=1.0, hbm_gb_per_s=1000.0, hbm_efficiency=1.0,
                 prefill_overhead_s=0.005, decode_overhead_s=0.002)
LLM = LLMSpec(name="tiny", num_layers=2, hidden_size=64, num_heads=1, attention=AttentionKind.GQA, head_dim=125,
              num_kv_heads=1, kv_dtype_bytes=2, total_params=1e9, active_params=1e9, max_context_tokens=200_000,
              cost=COST)
# An MoE variant: lockstep groups, the dense work shared by the group's engines.
MOE = replace(LLM, name="tiny-moe", total_params=4e9)
CAL = Calibration(cost_model=None, rdma_submit_s=1e-6, cuda_copy_submit_s=5e-6, schedule_interval_s=0.01)
GB = 1_000_000_000
# SNIC 0.8 Gbps (75 MB/s at 75% efficiency): 64 MB of hits take ~0.85 s. CNIC 16 Gbps, PCIe 32 Gbps.
SLOW_SNIC = NodeSpec(num_gpus=1, hbm_bytes_per_gpu=80 * GB, snic_gbps=0.8, cnic_gbps=16.0, dram_buffer_bytes=10 * GB,
                     pcie_gbps=32.0, name="tiny-slow-snic")
FAST_SNIC = replace(SLOW_SNIC, snic_gbps=80.0, name="tiny-fast-snic")


def cluster(node: NodeSpec, decode_nodes: int, gpus: int = 1) -> ClusterSpec:
    return ClusterSpec(1, decode_nodes, node=replace(node, num_gpus=gpus), pe_group_gpus=gpus, de_group_gpus=gpus,
                       name=f"1P{decode_nodes}D")


def rollout(turns: Sequence[Sequence[tuple[int, int, int]]]) -> tuple[Request, ...]:
    """Agents' turns as (hit, new, output) tokens."""
    return tuple(Request(f"a{a}t{t}", a, t, hit, new, out) for a, chain in enumerate(turns)
                 for t, (hit, new, out) in enumerate(chain))


@dataclass(frozen=True)
class Instance:
    name: str
    cluster: ClusterSpec
    llm: LLMSpec
    requests: tuple[Request, ...]
    per_request_side: bool  # every read side per request (else per agent)
    both_prefill_modes: bool


READ_BOUND = Instance("read-bound 1P1D, 2 agents x 3 turns", cluster(SLOW_SNIC, 1), LLM,
                      rollout([[(0, 20, 3), (32_000, 5, 2), (64_000, 5, 3)],
                               [(0, 30, 2), (48_000, 8, 3), (96_000, 4, 2)]]), True, True)
COMPUTE_BOUND = Instance("compute-bound 1P1D, 3 agents x 2 turns", cluster(FAST_SNIC, 1), LLM,
                         rollout([[(0, 300, 3), (320, 200, 2)], [(0, 250, 2), (256, 300, 3)],
                                  [(0, 400, 2), (448, 150, 2)]]), False, False)
READ_1P2D = Instance("read-bound 1P2D, 3 agents x 2 turns", cluster(SLOW_SNIC, 2), LLM,
                     rollout([[(0, 10, 3), (40_000, 5, 3)], [(0, 12, 2), (60_000, 6, 2)],
                              [(0, 8, 4), (24_000, 4, 3)]]), False, False)
MOE_1P2D = Instance("MoE lockstep 1P2D (2 GPUs per node), 2 agents x 3 turns", cluster(FAST_SNIC, 2, gpus=2), MOE,
                    rollout([[(0, 200, 4), (256, 50, 3), (320, 40, 2)], [(0, 100, 3), (128, 80, 2), (256, 60, 4)]]),
                    False, False)


class Enumerated(Policy):
    """A fixed execution: each request's DE and read side, the agents' priority, the batching rule."""

    def __init__(self, inst: Instance, de_of_agent: dict[int, str], pe_side: dict[str, bool], rank: dict[int, int],
                 batch_all: bool, layerwise: bool) -> None:
        super().__init__(inst.cluster, inst.llm)
        self.name = "enumerated"
        self.execution = ExecutionOptions(layerwise=layerwise)
        self.pe = inst.cluster.engines(Role.PREFILL)
        self.agent_of = {r.id: r.agent for r in inst.requests}
        self.de_of_agent, self.pe_side, self.rank, self.batch_all = de_of_agent, pe_side, rank, batch_all

    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        kv = self.llm.kv_bytes_per_token
        out = []
        for r in sorted(pending, key=lambda r: self.rank[r.agent]):
            hit = r.hit_tokens * kv
            pe = self.pe[self.rank[r.agent] % len(self.pe)].name  # spread agents over a group's engines
            side = self.pe_side[r.id]
            out.append(Assignment(r.id, pe, self.de_of_agent[r.agent], hit if side else 0, 0 if side else hit))
        return out

    def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        ordered = sorted(queue, key=lambda item: self.rank[self.agent_of[item.request]])
        return ordered if self.batch_all else ordered[:1]


def executions(inst: Instance) -> Iterator[Enumerated]:
    agents = sorted({r.agent for r in inst.requests})
    des = [e.name for e in inst.cluster.engines(Role.DECODE)]
    de_choices = [dict(zip(agents, combo)) for combo in itertools.product(des, repeat=len(agents))
                  if combo[0] == des[0]]  # DEs are symmetric: the first agent's is fixed
    keys = [r.id for r in inst.requests] if inst.per_request_side else agents
    sides: list[dict[str, bool]] = []
    for combo in itertools.product((True, False), repeat=len(keys)):
        chosen = dict(zip(keys, combo))
        sides.append({r.id: chosen[r.id if inst.per_request_side else r.agent] for r in inst.requests})
    modes = (True, False) if inst.both_prefill_modes else (True,)
    for de_of, side, order, batch_all, layerwise in itertools.product(
            de_choices, sides, itertools.permutations(agents), (True, False), modes):
        yield Enumerated(inst, de_of, side, {a: i for i, a in enumerate(order)}, batch_all, layerwise)


@functools.cache
def enumerated_jcts(inst: Instance) -> dict[str, float]:
    """Every enumerated execution's JCT, then the online policies' (split reads among them)."""
    jcts = {f"enumerated #{i}": jct_s(inst, p) for i, p in enumerate(executions(inst))}
    for name in ("basic", "dualpath", "optimized"):
        jcts[name] = jct_s(inst, make_policy(name, inst.cluster, inst.llm))
    return jcts


def jct_s(inst: Instance, policy: Policy) -> float:
    workload = Workload(inst.name, inst.requests)
    return simulate(inst.cluster, inst.llm, workload, policy, calibration=CAL, progress=False).metrics().jct_s


def violations(bound_s: float, jcts_s: dict[str, float]) -> list[str]:
    """Executions that finished before `bound_s` (a relative 1e-9 for float noise)."""
    return [f"{name}: {jct:.6f} s < bound {bound_s:.6f} s" for name, jct in jcts_s.items()
            if jct < bound_s * (1 - 1e-9)]


def bounds(inst: Instance) -> tuple[RolloutBound, RolloutBound]:
    return (rollout_lower_bound(inst.cluster, inst.llm, inst.requests, CAL),
            rollout_lower_bound(inst.cluster, inst.llm, inst.requests, CAL, zero_io=True))


@pytest.mark.parametrize("inst", [READ_BOUND, COMPUTE_BOUND, READ_1P2D, MOE_1P2D], ids=lambda i: i.name)
def test_no_execution_beats_the_bound(inst: Instance) -> None:
    bound, oracle_bound = bounds(inst)
    jcts = enumerated_jcts(inst)
    assert not violations(bound.value_s, jcts), bound
    # The Oracle skips every I/O: it answers to the zero-I/O bound, which is no larger.
    oracle = jct_s(inst, make_policy("oracle", inst.cluster, inst.llm))
    assert not violations(oracle_bound.value_s, {"oracle": oracle})
    assert oracle_bound.value_s <= bound.value_s
    assert len(jcts) > 60  # the enumeration really ran


@pytest.mark.parametrize("inst, binding_family", [(READ_BOUND, "snic"), (COMPUTE_BOUND, "")],
                         ids=["read-bound", "compute-bound"])
def test_bound_is_tight_enough_to_mean_something(inst: Instance, binding_family: str) -> None:
    bound, _ = bounds(inst)
    best = min(enumerated_jcts(inst).values())
    assert bound.value_s >= 0.5 * best, (bound, best)
    if binding_family:
        assert bound.terms_s["snic_bytes+chains"] >= 0.5 * best


def test_a_wrong_bound_is_caught() -> None:
    inst = READ_BOUND
    jcts = enumerated_jcts(inst)
    best = min(jcts.values())
    assert violations(1.5 * best, jcts)  # 1.5x the best execution: the checker must object
    assert not violations(best, jcts)


def test_terms_and_binding() -> None:
    bound, _ = bounds(READ_BOUND)
    assert {"prefill_compute", "snic_bytes", "cnic_bytes", "decode_capacity", "longest_chain"} <= set(bound.terms_s)
    assert bound.value_s == max(bound.terms_s.values()) == bound.terms_s[bound.binding]
    assert rollout_lower_bound(READ_BOUND.cluster, LLM, (), CAL).value_s == 0.0
