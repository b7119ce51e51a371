"""Specs and request generators shared by the solver tests (built directly: solver tests never
import dualpath.models)."""

from __future__ import annotations

import random

from dualpath.cluster import ClusterSpec, NodeSpec
from dualpath.llm import AttentionKind, LLMSpec
from dualpath.request import Request

DSV32 = LLMSpec(
    name="dsv32-test", num_layers=61, hidden_size=7168, num_heads=128, attention=AttentionKind.MLA,
    head_dim=128, kv_lora_rank=512, qk_rope_head_dim=64, kv_dtype_bytes=1, index_topk_tokens=2048,
    indexer_heads=64, indexer_head_dim=128, total_params=671e9, active_params=37e9,
)
DS27B = LLMSpec(
    name="ds27b-test", num_layers=30, hidden_size=2560, num_heads=32, attention=AttentionKind.MLA,
    head_dim=128, kv_lora_rank=512, qk_rope_head_dim=64, kv_dtype_bytes=1, index_topk_tokens=1024,
    indexer_heads=64, indexer_head_dim=128, total_params=27e9, active_params=3.5e9,
)


def cluster(p: int, d: int, **node) -> ClusterSpec:
    return ClusterSpec(p, d, node=NodeSpec(**node), name=f"{p}P{d}D")


def agentic_requests(n: int, seed: int = 0, max_context: int = 65536, block_tokens: int = 64) -> list[Request]:
    """Turns of 64K-trace-like agents at a random turn: context ~U(1K, max), append ~ 430, output ~ 176."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        context = rng.randint(1024, max_context - 2048)
        hit = context // block_tokens * block_tokens
        append = max(1, int(rng.expovariate(1 / 430)))
        out.append(Request(f"r{i}", i, rng.randint(1, 150), hit, context - hit + append,
                           max(1, int(rng.expovariate(1 / 176)))))
    return out


def tiny_cluster(p_nodes: int = 1, d_nodes: int = 1, gpus: int = 1, **node) -> ClusterSpec:
    """Small clusters for exact models: one-GPU groups, fast CNICs unless told otherwise."""
    node.setdefault("cnic_gbps", 3200.0)
    return ClusterSpec(p_nodes, d_nodes, node=NodeSpec(num_gpus=gpus, **node), pe_group_gpus=1, de_group_gpus=1,
                       name=f"{p_nodes}P{d_nodes}D-{gpus}g")


def request(rid: str, hit: int, new: int = 1, out: int = 1, agent: int = 0) -> Request:
    return Request(rid, agent, 0, hit, new, out)
