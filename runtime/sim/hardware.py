"""The simulated hardware: per node its storage path, per GPU its CNIC channels and engine, and the
PE/DE groups' members; plus the up-front check that every request fits where it must go.

An MoE model runs expert parallel with data-parallel attention, so its PE and DE groups move in
lockstep (a group per `pe_group_gpus` / `de_group_gpus`); a dense model's engines run on their own.
Free HBM per GPU is HBM less the reserve and the GPU's share of the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dualpath.calibration import Calibration
from dualpath.cluster import ClusterSpec, Engine, Role
from dualpath.errors import InfeasibleError, SpecError
from dualpath.llm import LLMSpec
from dualpath.request import Request
from dualpath.runtime.sim.nic import NicChannel, SpanSink, UsageMeter
from dualpath.runtime.sim.parallelism import weight_bytes_per_gpu
from dualpath.runtime.sim.state import DEEngine, PEEngine
from dualpath.runtime.sim.storage import NodeStorage


@dataclass(frozen=True, slots=True)
class Hardware:
    """One run's resources. Per-node lists follow `node_index`; per-engine lists the engines' `index`."""

    node_index: dict[str, int]  # node name -> its position in the per-node lists
    storages: list[NodeStorage]  # per node
    # "in" / "out" -> per node. One meter per node and direction: utilisation is reported per node,
    # and thousands of per-GPU meters would cost more than the channels they measure.
    cnic_meters: dict[str, list[UsageMeter]]
    gpu_meters: list[UsageMeter]  # per node: PE busy GPU-seconds
    pe_in: list[NicChannel]  # per PE: its CNIC's KV lane, into and out of the GPU
    pe_out: list[NicChannel]
    pe_pcie: list[NicChannel]  # per PE: host -> HBM copies when prefill is not layerwise
    de_in: list[NicChannel]  # per DE
    de_out: list[NicChannel]
    pes: list[PEEngine]
    des: list[DEEngine]
    pe_groups: list[list[PEEngine]]  # the engines of each PE group
    de_groups: list[list[DEEngine]]
    pe_free_hbm_bytes: int  # per GPU, for KV
    de_free_hbm_bytes: int
    de_weight_bytes: float  # per DE GPU: what each decode step reads besides the KV
    de_ep_gpus: int  # GPUs of a DE group's expert-parallel all-to-all (1: none)


def _free_hbm_bytes(cluster: ClusterSpec, llm: LLMSpec, calibration: Calibration, field_name: str
                    ) -> tuple[int, float]:
    """(free HBM, weight bytes) per GPU of a group of `cluster.<field_name>` GPUs."""
    usable = cluster.node.hbm_bytes_per_gpu * (1 - calibration.hbm_reserve_fraction)
    group_gpus = getattr(cluster, field_name)
    weights = weight_bytes_per_gpu(llm, group_gpus, calibration)
    free = int(usable - weights)
    if free <= 0:
        # A dense model is sharded over its engine's GPUs, an MoE model over its group's (see parallelism).
        if llm.expert_parallel:
            raise SpecError(f"cluster {cluster.name or cluster.shorthand}", field_name, group_gpus,
                            f"a group holding {llm.name}'s weights ({weights * group_gpus / 1e9:,.0f} GB) "
                            f"with HBM left for KV (see dualpath.runtime.sim.parallelism.expert_groups)")
        total_bytes = llm.total_params * calibration.weight_bytes_per_param_of(llm)
        raise SpecError(llm.name, "gpus_per_engine", llm.gpus_per_engine,
                        f"enough GPUs to hold {total_bytes / 1e9:,.0f} GB of weights with HBM left for KV "
                        f"({weights / 1e9:,.1f} GB per GPU of "
                        f"{usable / 1e9:,.1f} GB usable)")
    return free, weights


def build_hardware(cluster: ClusterSpec, llm: LLMSpec, calibration: Calibration, lockstep: bool,
                   sink: SpanSink | None) -> Hardware:
    """Storages, channels, meters and engines of `cluster`; `lockstep` groups engines as the cluster does."""
    node, cal = cluster.node, calibration
    node_index = {name: i for i, name in enumerate(cluster.all_nodes())}
    snic = node.snic_bytes_per_s
    storages = [NodeStorage(name, snic * cal.snic_read_efficiency, snic * cal.snic_write_efficiency,
                            snic, node.dram_buffer_bytes, sink) for name in node_index]
    cnic_kv = node.cnic_bytes_per_s * node.cnic_kv_share
    pcie = node.pcie_gbps * 1e9 / 8
    pe_specs, de_specs = cluster.engines(Role.PREFILL), cluster.engines(Role.DECODE)
    cnic_meters = {d: [UsageMeter() for _ in node_index] for d in ("in", "out")}

    def chans(engines: list[Engine], direction: str) -> list[NicChannel]:
        return [NicChannel(f"{e.name}.cnic_{direction}", "transfer", cnic_kv, node.cnic_bytes_per_s, sink,
                           cnic_meters[direction][node_index[e.node]]) for e in engines]

    pe_in, pe_out = chans(pe_specs, "in"), chans(pe_specs, "out")
    pe_pcie = [NicChannel(f"{e.name}.pcie", "transfer", pcie, pcie, sink) for e in pe_specs]
    de_in, de_out = chans(de_specs, "in"), chans(de_specs, "out")
    pe_free, _ = _free_hbm_bytes(cluster, llm, cal, "pe_group_gpus")
    de_free, de_weights = _free_hbm_bytes(cluster, llm, cal, "de_group_gpus")
    pe_groups: list[list[PEEngine]] = []
    pes: list[PEEngine] = []
    for spec in pe_specs:
        if not lockstep or spec.group >= len(pe_groups):
            pe_groups.append([])
        pe = PEEngine(spec, node_index[spec.node], len(pe_groups) - 1)
        pe_groups[-1].append(pe)
        pes.append(pe)
    de_groups: list[list[DEEngine]] = []
    des: list[DEEngine] = []
    for spec in de_specs:
        if not lockstep or spec.group >= len(de_groups):
            de_groups.append([])
        de = DEEngine(spec, node_index[spec.node], len(de_groups) - 1, de_free)
        de_groups[-1].append(de)
        des.append(de)
    return Hardware(node_index, storages, cnic_meters, [UsageMeter() for _ in node_index], pe_in, pe_out, pe_pcie,
                    de_in, de_out, pes, des, pe_groups, de_groups, pe_free, de_free, de_weights,
                    cluster.de_group_gpus if llm.expert_parallel else 1)


def check_fits(requests: Sequence[Request], kv_bytes_per_token: int, hw: Hardware, dram_buffer_bytes: int,
               layerwise: bool) -> None:
    """Every request's context fits a DE's free HBM and its prompt a DRAM buffer (and, without
    layerwise prefill, a PE's free HBM); otherwise no schedule can serve it."""
    if not requests:
        return
    kv, buffer = kv_bytes_per_token, dram_buffer_bytes
    longest = max(requests, key=lambda r: r.context_tokens)
    if longest.context_tokens * kv > hw.de_free_hbm_bytes:
        raise InfeasibleError(longest.id, "DE HBM", f"context KV {longest.context_tokens * kv:,} B > free HBM "
                                                    f"{hw.de_free_hbm_bytes:,} B per DE")
    widest = max(requests, key=lambda r: r.prompt_tokens)
    if widest.prompt_tokens * kv > buffer:
        raise InfeasibleError(widest.id, "DE DRAM buffer", f"prompt KV {widest.prompt_tokens * kv:,} B > {buffer:,} B")
    if not layerwise and widest.prompt_tokens * kv > hw.pe_free_hbm_bytes:
        raise InfeasibleError(widest.id, "PE HBM", f"prompt KV {widest.prompt_tokens * kv:,} B > free HBM "
                                                   f"{hw.pe_free_hbm_bytes:,} B (prefill without layerwise)")
