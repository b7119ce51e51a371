"""The capacity search of `dualpath simulate --find-capacity`: simulated probes below the fluid limit.

Fluid limits (`dualpath.runtime.fluid`) on the simulator's own hardware: its constants decide them
(the SNIC efficiencies, the expert-parallel group sizes that set each DE GPU's weight share and so its
free HBM, the calibrated cost model). The policy decides which nodes read: PE-only readers
(`read_side = "pe"`: Basic, Layerwise) use the PE nodes' SNICs, a zero-I/O policy (the Oracle) none,
every other policy all nodes. Without layerwise prefill (Basic) the engine copies each request's hit
KV into HBM before computing it (over PCIe, one `cuda_copy_submit_s` per Layer Block of its Full
Blocks), on a copy stream that overlaps the previous batch's compute: a resource of its own.

The fluid limit depends on the agent mix and so, a little, on the rate (sampling noise: how many of
each trajectory arrive over the horizon): it is taken at its own rate (a fixed point, two passes from
1 agent/s), the search stays below it, and the limit reported is that of the workload at the
capacity found.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from dualpath.calibration import PAPER_CALIBRATION, Calibration
from dualpath.cluster import ClusterSpec
from dualpath.llm import LLMSpec
from dualpath.policy import Policy
from dualpath.request import Request, Workload
from dualpath.runtime.capacity import SLO, capacity_runner, find_capacity
from dualpath.runtime.fluid import DecodeHardware, FluidLimits, fluid_limits
from dualpath.runtime.sim.hardware import build_hardware
from dualpath.runtime.sim.parallelism import expert_groups
from dualpath.runtime.sim.results import capacity_row
from dualpath.runtime.sim.simulator import simulate

FIXED_POINT_PASSES = 2


def readers_of(policy: Policy) -> str:
    """Which nodes' SNICs a policy loads hit KV through: "pe", "all" or "none"."""
    if policy.execution.zero_io:
        return "none"
    # The policy interface has no read-side attribute; the baselines that read on the PE only say so.
    return "pe" if getattr(policy, "read_side", None) == "pe" else "all"


def sim_fluid_limits(cluster: ClusterSpec, llm: LLMSpec, workload: Workload, policy: Policy, *, tpot_slo_s: float,
                     calibration: Calibration = PAPER_CALIBRATION) -> FluidLimits:
    """`fluid_limits` of `workload` under `policy` with the simulator's efficiencies and group sizes."""
    llm = calibration.apply(llm)
    cluster = expert_groups(cluster, llm, calibration)
    hw = build_hardware(cluster, llm, calibration, False, None)
    decode = DecodeHardware(free_hbm_bytes=hw.de_free_hbm_bytes, weight_bytes_per_gpu=hw.de_weight_bytes,
                            ep_gpus=hw.de_ep_gpus)
    options, kv, bt = policy.execution, llm.kv_bytes_per_token, policy.block_tokens
    pcie_bytes_per_s = cluster.node.pcie_gbps * 1e9 / 8

    def resident_copy_s(r: Request) -> float:
        blocks = -(-r.hit_tokens // bt)
        return r.hit_tokens * kv / pcie_bytes_per_s + blocks * llm.num_layers * calibration.cuda_copy_submit_s

    copies = None if options.layerwise or options.zero_io else resident_copy_s
    return fluid_limits(cluster, llm, workload, readers=readers_of(policy), decode=decode, tpot_slo_s=tpot_slo_s,
                        snic_read_efficiency=calibration.snic_read_efficiency,
                        snic_write_efficiency=calibration.snic_write_efficiency, block_tokens=bt,
                        resident_copy_s=copies)


def limit_at_own_rate(limits_at: Callable[[float], FluidLimits], first_aps: float = 1.0) -> FluidLimits:
    """The fluid limits of the workload arriving at (about) the limit's own rate."""
    limits = limits_at(first_aps)
    for _ in range(FIXED_POINT_PASSES - 1):
        if not math.isfinite(limits.limit_aps):
            break
        limits = limits_at(limits.limit_aps)
    return limits


def search_capacity(cluster: ClusterSpec, llm: LLMSpec, workload_at: Callable[[float], Workload],
                    make_policy: Callable[[], Policy], slo: SLO, *, seed: int = 0, rel_tol: float = 0.05,
                    calibration: Calibration = PAPER_CALIBRATION) -> dict[str, Any]:
    """`capacity_row` of the highest SLO-compliant rate of `make_policy()`'s policy, with its fluid limit."""
    started = time.perf_counter()
    policy = make_policy()

    def limits_at(aps: float) -> FluidLimits:
        return sim_fluid_limits(cluster, llm, workload_at(aps), policy, tpot_slo_s=slo.tpot_s,
                                calibration=calibration)

    limit = limit_at_own_rate(limits_at)
    run_at = capacity_runner(simulate, workload_at, make_policy, cluster=cluster, llm=llm, seed=seed,
                             calibration=calibration, progress=False)
    found = find_capacity(run_at, slo, rel_tol=rel_tol, limit_aps=limit.limit_aps)
    final = limits_at(found.capacity_aps) if found.capacity_aps > 0 else limit
    row = capacity_row(found, policy.name, final)
    row["search_wall_s"] = time.perf_counter() - started
    return row
