"""Expert-parallel group sizes the simulator assumes when a cluster file does not set workable ones.

An MoE model is served expert parallel: a PE or DE group shares one copy of the weights, so a group
must span enough GPUs to hold them. DeepSeek's own deployment uses wider groups for decode than for
prefill (EP32 prefill, EP144 decode) because decode HBM holds the batch's KV for the whole output;
we take the fewest whole nodes (a power of two) that hold the weights for a PE group, and for a DE
group the fewest that also leave at least half of each GPU's HBM for KV. For DeepSeek-V3.2 (671 GB FP8) on 80 GB
GPUs: PE groups of 2 nodes (EP16), DE groups of 4 nodes (EP32), i.e. 2P4D is one PE and one DE group
and 48P96D is 24 of each. Dense models run one engine per GPU: groups are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dualpath.calibration import PAPER_CALIBRATION, Calibration
from dualpath.cluster import ClusterSpec
from dualpath.errors import SpecError
from dualpath.llm import LLMSpec

DE_MIN_KV_SHARE = 0.5  # of each decode GPU's HBM


def weight_bytes_per_gpu(llm: LLMSpec, group_gpus: int, calibration: Calibration = PAPER_CALIBRATION) -> float:
    """Weights one GPU holds: sharded over its group (MoE) or over its engine's GPUs (dense)."""
    shards = group_gpus if llm.expert_parallel else llm.gpus_per_engine
    return llm.total_params * calibration.weight_bytes_per_param_of(llm) / shards


def _fewest_nodes(num_nodes: int, gpus_per_node: int, fits: Callable[[int], bool]) -> int:
    """GPUs of the smallest power-of-two node count dividing `num_nodes` that `fits` (0: none)."""
    nodes = 1
    while nodes <= num_nodes:
        if num_nodes % nodes == 0 and fits(nodes * gpus_per_node):
            return nodes * gpus_per_node
        nodes *= 2
    return 0


def expert_groups(cluster: ClusterSpec, llm: LLMSpec, calibration: Calibration = PAPER_CALIBRATION) -> ClusterSpec:
    """`cluster` with PE/DE group sizes that hold `llm`'s weights (unchanged when already workable)."""
    if not llm.expert_parallel:
        return cluster
    node = cluster.node
    usable = node.hbm_bytes_per_gpu * (1 - calibration.hbm_reserve_fraction)

    def pe_fits(gpus: int) -> bool:
        return weight_bytes_per_gpu(llm, gpus, calibration) < usable

    def de_fits(gpus: int) -> bool:
        return usable - weight_bytes_per_gpu(llm, gpus, calibration) >= DE_MIN_KV_SHARE * node.hbm_bytes_per_gpu

    pe, de = cluster.pe_group_gpus, cluster.de_group_gpus
    if not pe_fits(pe):
        pe = _fewest_nodes(cluster.num_prefill_nodes, node.num_gpus, pe_fits)
    if not pe_fits(de):
        de = _fewest_nodes(cluster.num_decode_nodes, node.num_gpus, de_fits) or \
            _fewest_nodes(cluster.num_decode_nodes, node.num_gpus, pe_fits)
    for field_name, gpus in (("pe_group_gpus", pe), ("de_group_gpus", de)):
        if not gpus:
            raise SpecError(f"cluster {cluster.name or cluster.shorthand}", field_name, getattr(cluster, field_name),
                            f"a group of whole nodes holding {llm.name}'s weights; this cluster has none")
    if (pe, de) == (cluster.pe_group_gpus, cluster.de_group_gpus):
        return cluster
    return replace(cluster, pe_group_gpus=pe, de_group_gpus=de)
