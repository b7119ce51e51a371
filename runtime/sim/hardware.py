"""The simulated hardware: per node its storage path, per GPU its CNIC channels and engine, and the
PE/DE groups; plus the up-front check that every request fits where it must go.

An MoE model runs expert parallel with data-parallel attention, so its PE and DE groups move in
lockstep (a group per `pe_group_gpus` / `de_group_gpus`); a dense model's engines run on their own.
Free HBM per GPU is HBM less the reserve and the GPU's share of the weights.
"""

from __future__ import annotations

from dualpath.cluster import ClusterSpec, Role
from dualpath.errors import InfeasibleError, SpecError
from dualpath.runtime.sim.decode_groups import DecodeGroup
from dualpath.runtime.sim.nic import Channel, UsageMeter
from dualpath.runtime.sim.parallelism import weight_bytes_per_gpu
from dualpath.runtime.sim.prefill_groups import PrefillGroup
from dualpath.runtime.sim.state import DEEngine, PEEngine
from dualpath.runtime.sim.storage import NodeStorage


def build_hardware(sim, cluster: ClusterSpec, sink) -> None:
    """Attach storages, channels, engines and groups to `sim`."""
    node, cal, llm = cluster.node, sim.calibration, sim.llm
    sim.node_index = {name: i for i, name in enumerate(cluster.all_nodes())}
    snic = node.snic_bytes_per_s
    sim.storages = [NodeStorage(name, snic * cal.snic_read_efficiency, snic * cal.snic_write_efficiency,
                                snic, node.dram_buffer_bytes, sink) for name in sim.node_index]
    cnic_kv = node.cnic_bytes_per_s * node.cnic_kv_share
    pcie = node.pcie_gbps * 1e9 / 8
    pes, des = cluster.engines(Role.PREFILL), cluster.engines(Role.DECODE)
    # One meter per node and direction: utilisation is reported per node, and thousands of per-GPU
    # meters would cost more than the channels they measure.
    sim.cnic_meters = {d: [UsageMeter() for _ in sim.node_index] for d in ("in", "out")}

    def chans(engines, direction, rate):
        return [Channel(f"{e.name}.cnic_{direction}", "transfer", rate, node.cnic_bytes_per_s, sink,
                        sim.cnic_meters[direction][sim.node_index[e.node]]) for e in engines]

    sim.pe_in, sim.pe_out = chans(pes, "in", cnic_kv), chans(pes, "out", cnic_kv)
    sim.pe_pcie = [Channel(f"{e.name}.pcie", "transfer", pcie, pcie, sink) for e in pes]
    sim.de_in, sim.de_out = chans(des, "in", cnic_kv), chans(des, "out", cnic_kv)
    usable = node.hbm_bytes_per_gpu * (1 - cal.hbm_reserve_fraction)
    free = {}
    for field_name in ("pe_group_gpus", "de_group_gpus"):
        group_gpus = getattr(cluster, field_name)
        weights = weight_bytes_per_gpu(llm, group_gpus, cal)
        free[field_name] = int(usable - weights)
        if free[field_name] <= 0:
            raise SpecError(f"cluster {cluster.name or cluster.shorthand}", field_name, group_gpus,
                            f"a group holding {llm.name}'s weights ({weights * group_gpus / 1e9:,.0f} GB) "
                            f"with HBM left for KV (see dualpath.runtime.sim.parallelism.expert_groups)")
        if field_name == "de_group_gpus":
            sim.de_weight_bytes = weights
    sim.pe_free_hbm, sim.de_free_hbm = free["pe_group_gpus"], free["de_group_gpus"]
    sim.gpu_meters = [UsageMeter() for _ in sim.node_index]  # PE busy GPU-seconds per node
    sim.pe_groups, sim.pes = [], []
    for spec in pes:
        if not sim.lockstep or spec.group >= len(sim.pe_groups):
            sim.pe_groups.append(PrefillGroup(sim, len(sim.pe_groups), []))
        engine = PEEngine(spec, sim.node_index[spec.node], len(sim.pe_groups) - 1)
        sim.pe_groups[-1].engines.append(engine)
        sim.pes.append(engine)
    sim.decode_groups, sim.des = [], []
    for spec in des:
        if not sim.lockstep or spec.group >= len(sim.decode_groups):
            sim.decode_groups.append(DecodeGroup(sim, len(sim.decode_groups), []))
        engine = DEEngine(spec, sim.node_index[spec.node], len(sim.decode_groups) - 1, sim.de_free_hbm)
        sim.decode_groups[-1].engines.append(engine)
        sim.des.append(engine)


def check_fits(sim) -> None:
    """Every request's context fits a DE's free HBM and its prompt a DRAM buffer (and, without
    layerwise prefill, a PE's free HBM); otherwise no schedule can serve it."""
    requests = sim.workload.requests
    if not requests:
        return
    kv, buffer = sim.kv, sim.cluster.node.dram_buffer_bytes
    longest = max(requests, key=lambda r: r.context_tokens)
    if longest.context_tokens * kv > sim.de_free_hbm:
        raise InfeasibleError(longest.id, "DE HBM", f"context KV {longest.context_tokens * kv:,} B > free HBM "
                                                    f"{sim.de_free_hbm:,} B per DE")
    widest = max(requests, key=lambda r: r.prompt_tokens)
    if widest.prompt_tokens * kv > buffer:
        raise InfeasibleError(widest.id, "DE DRAM buffer", f"prompt KV {widest.prompt_tokens * kv:,} B > {buffer:,} B")
    if not sim.options.layerwise and widest.prompt_tokens * kv > sim.pe_free_hbm:
        raise InfeasibleError(widest.id, "PE HBM", f"prompt KV {widest.prompt_tokens * kv:,} B > free HBM "
                                                   f"{sim.pe_free_hbm:,} B (prefill without layerwise)")
