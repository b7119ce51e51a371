"""DE HBM for KV: what the weights leave free, and how many waves of it a batch needs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from dualpath.cluster import ClusterSpec
from dualpath.llm import LLMSpec


def weight_bytes_per_gpu(cluster: ClusterSpec, llm: LLMSpec) -> float:
    """Weights one DE GPU holds, as the simulator assumes: weights in the KV dtype (FP8 DeepSeek, BF16
    Qwen); an MoE model sharded expert-parallel over its DE group, a dense one per engine. When a
    group's share would not leave half the HBM, the shard spans every DE GPU (a large-EP deployment)
    rather than making every plan infeasible."""
    total = llm.total_params * llm.kv_dtype_bytes
    shards = cluster.de_group_gpus if llm.total_params > llm.active_params else llm.gpus_per_engine
    per_gpu = total / shards
    if per_gpu > cluster.node.hbm_bytes_per_gpu / 2:
        per_gpu = total / max(shards, cluster.num_de)
    return per_gpu


def default_free_hbm_bytes(cluster: ClusterSpec, llm: LLMSpec, reserve_fraction: float = 0.1) -> int:
    """HBM a DE can give to KV: HBM less a reserve for activations, less the weights."""
    hbm = cluster.node.hbm_bytes_per_gpu
    return max(0, int(hbm * (1 - reserve_fraction) - weight_bytes_per_gpu(cluster, llm)))


def hbm_waves(context_bytes: Sequence[int], free_bytes: Sequence[int]) -> int:
    """Smallest w such that w x free HBM holds the batch with one largest request of slack per DE.

    The slack makes any-fit placement always succeed: a request fails to fit only if every DE is
    fuller than its capacity minus that request, which the slack rules out.
    """
    if not context_bytes:
        return 1
    need = sum(context_bytes) + len(free_bytes) * max(context_bytes)
    have = sum(free_bytes)
    return max(1, math.ceil(need / have)) if have else 1
