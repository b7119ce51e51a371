"""Real-run cases shared by the runtime's tests: a one-GPU test node, a tiny dense decoder, small workloads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dualpath.cluster import ClusterSpec, NodeSpec
from dualpath.llm import AttentionKind, CostModel, LLMSpec
from dualpath.request import Trajectory, Turn, Workload, requests_of

NODE = NodeSpec(num_gpus=1, hbm_bytes_per_gpu=2_000_000_000, snic_gbps=0.8, cnic_gbps=8.0,
                dram_buffer_bytes=64_000_000, host_mem_gb_per_s=4.0, pcie_gbps=16.0, name="test-node")
# A small dense decoder: 2 layers, hidden 64, GQA 4/2 x 16, FFN 128, vocab 256 (parameter counts as `models`).
H, L, V, FF = 64, 2, 256, 128
ACTIVE = L * (2 * H * 64 + 2 * H * 32 + 3 * H * FF + 2 * H) + H + V * H
LLM = LLMSpec("test-tiny", num_layers=L, hidden_size=H, num_heads=4, attention=AttentionKind.GQA, head_dim=16,
              num_kv_heads=2, kv_dtype_bytes=4, total_params=float(ACTIVE + V * H), active_params=float(ACTIVE),
              vocab_size=V, max_context_tokens=4096, cost=CostModel(peak_tflops=0.1, prefill_mfu=0.25))
BT = 16


def cluster(p: int, d: int) -> ClusterSpec:
    return ClusterSpec(p, d, node=NODE, pe_group_gpus=1, de_group_gpus=1, name=f"test-{p}p{d}d")


def workload(agents: int, turns: int, first: int = 150, append: int = 9, generate: int = 3) -> Workload:
    trajectories = tuple(Trajectory(a, (Turn(first + 7 * a, generate),) + (Turn(append, generate),) * (turns - 1))
                         for a in range(agents))
    return Workload("test", tuple(r for t in trajectories for r in requests_of(t, BT)), trajectories)


@contextlib.contextmanager
def engine_pair(secret: str, pe_options: dict[str, Any] | None = None, **common: Any) -> Iterator[tuple]:
    """An in-process PE (pe0) and DE (de0) on the `EngineOptions` fields `common` (plus `pe_options` for the PE),
    started, and a client: (pe, de, pe_address, de_address, client), all closed afterwards."""
    from dualpath.runtime.engine import EngineOptions, create_engine
    from dualpath.runtime.scheduling.client import ClusterClient

    de = create_engine(EngineOptions(role="decode", name="de0", **common), secret)
    pe = create_engine(EngineOptions(role="prefill", name="pe0", **{**common, **(pe_options or {})}), secret)
    de_address, pe_address = de.start(), pe.start()
    client = ClusterClient(secret)
    try:
        yield pe, de, pe_address, de_address, client
    finally:
        client.close()
        pe.close()
        de.close()
