"""Small specs for the simulator tests: round numbers so times can be worked out by hand."""

from __future__ import annotations

import random
from collections.abc import Sequence

from dualpath.calibration import Calibration
from dualpath.cluster import ClusterSpec, NodeSpec, Role
from dualpath.llm import AttentionKind, CostModel, LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import ClusterState, ExecutionOptions, Policy
from dualpath.request import Request, Trajectory, Turn, Workload, requests_of

GB = 1_000_000_000

# SNIC 8 Gbps = 1 GB/s, CNIC 16 Gbps = 2 GB/s, PCIe 32 Gbps = 4 GB/s.
TOY_NODE = NodeSpec(num_gpus=1, hbm_bytes_per_gpu=80 * GB, snic_gbps=8.0, cnic_gbps=16.0, dram_buffer_bytes=10 * GB,
                    host_mem_gb_per_s=100.0, pcie_gbps=32.0, name="toy")
# 1 TFLOPS at 100% MFU, no prefill overhead, 1 ms per decode step: prefill seconds = FLOPs / 1e12.
TOY_COST = CostModel(peak_tflops=1.0, prefill_mfu=1.0, decode_mfu=1.0, hbm_gb_per_s=1000.0, hbm_efficiency=1.0,
                     prefill_overhead_s=0.0, decode_overhead_s=0.001)
# Dense, 2 layers, one KV head of 125 dims in 2 bytes: K+V = 500 B per token per layer, 1,000 B per token.
TOY_LLM = LLMSpec(name="toy", num_layers=2, hidden_size=64, num_heads=1, attention=AttentionKind.GQA, head_dim=125,
                  num_kv_heads=1, kv_dtype_bytes=2, total_params=1e9, active_params=1e9, max_context_tokens=100_000,
                  cost=TOY_COST)
# An MoE variant: its PE and DE groups run in lockstep.
TOY_MOE = LLMSpec(name="toy-moe", num_layers=2, hidden_size=64, num_heads=1, attention=AttentionKind.GQA,
                  head_dim=125, num_kv_heads=1, kv_dtype_bytes=2, total_params=8e9, active_params=1e9,
                  max_context_tokens=100_000, cost=TOY_COST)
EXACT = Calibration(cost_model=None, snic_read_efficiency=1.0, snic_write_efficiency=1.0, cuda_copy_submit_s=0.0,
                    rdma_submit_s=0.0, hbm_reserve_fraction=0.0, schedule_interval_s=0.0)


def toy_cluster(prefill_nodes: int = 1, decode_nodes: int = 1, gpus: int = 1, pe_group: int = 1,
                de_group: int = 1) -> ClusterSpec:
    from dataclasses import replace

    return ClusterSpec(prefill_nodes, decode_nodes, node=replace(TOY_NODE, num_gpus=gpus),
                       pe_group_gpus=pe_group, de_group_gpus=de_group, name="toy")


def one_request(hit: int = 6400, new: int = 100, output: int = 5) -> Workload:
    return Workload("one", (Request("r0", 0, 0, hit, new, output),))


def agents_workload(num_agents: int, turns: int, seed: int = 0, block_tokens: int = 64,
                    start_s: Sequence[float] | None = None) -> Workload:
    """Small random agentic trajectories (contexts of a few thousand tokens)."""
    rng = random.Random(seed)
    trajectories = []
    for agent in range(num_agents):
        steps = tuple(Turn(rng.randint(800, 3000) if t == 0 else rng.randint(20, 400), rng.randint(2, 40))
                      for t in range(rng.randint(1, turns)))
        trajectories.append(Trajectory(agent, steps, start_s[agent] if start_s else 0.0))
    requests = [r for t in trajectories for r in requests_of(t, block_tokens)]
    requests.sort(key=lambda r: (r.arrival_s, r.agent, r.turn))
    return Workload("toy-agents", tuple(requests), tuple(trajectories))


class FixedPolicy(Policy):
    """Every request to the first PE and DE, read on `side` ("pe" or "de")."""

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, side: str = "pe", layerwise: bool = True,
                 zero_io: bool = False):
        super().__init__(cluster, llm)
        self.name = f"fixed-{side}"
        self.side = side
        self.execution = ExecutionOptions(layerwise=layerwise, zero_io=zero_io)

    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        pe = self.cluster.engines(Role.PREFILL)[0].name
        de = self.cluster.engines(Role.DECODE)[0].name
        kv = self.llm.kv_bytes_per_token
        return [Assignment(r.id, pe, de, r.hit_tokens * kv if self.side == "pe" else 0,
                           r.hit_tokens * kv if self.side == "de" else 0) for r in pending]
