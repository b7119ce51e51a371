"""One result row per simulation, as `dualpath simulate --json` reports it.

Offline: {"policy", "agents", "requests", "jct_s", "mean_agent_jct_s", "tokens_per_s",
"snic_balance_max_over_avg", "read_bytes_pe", "read_bytes_de", "wall_s", ...} and, as `dualpath run`
reports them, mean/p50/p90/p99 TTFT/TTST/TPOT over all requests ("ttft_p50_s", "tpot_p99_s", ...),
"slo_attainment" and "goodput_requests_per_s". Online rows (a rate `--aps`, or a timestamped trace
replay, whose "aps" is null) add "aps" and the steady window ("steady_start_s", "steady_end_s",
"steady_state_found", "steady_requests"), replace the latency statistics and "slo_attainment" (the share
of requests within both SLOs) with the steady window's, and add "slo_met"; a capacity search gives
"capacity_aps", the fluid limit ("fluid_limit_aps", "bound_by", per-resource "resources") and its probes.
"""

from __future__ import annotations

import math
from typing import Any

from dualpath.runtime.capacity import PAPER_SLO, SLO, CapacityResult, latency_summary, online_summary
from dualpath.runtime.fluid import FluidLimits
from dualpath.trace import Trace


def _clean(value: object) -> object:
    # JSON has no NaN (json.dumps would write a bare NaN most parsers reject): a missing statistic is null.
    return None if isinstance(value, float) and math.isnan(value) else value


def offline_row(trace: Trace, slo: SLO = PAPER_SLO) -> dict[str, Any]:
    """The offline columns; `mean_agent_jct_s` averages each agent's last finish (its JCT when all start at 0)."""
    m = trace.metrics()
    done_at: dict[int, float] = {}
    for r in trace.records:
        done_at[r.agent] = max(done_at.get(r.agent, 0.0), r.finish_s)
    pe_bytes, de_bytes = trace.read_bytes_by_side()
    row = {
        "policy": trace.policy, "agents": len(done_at), "requests": m.num_requests, "jct_s": m.jct_s,
        "mean_agent_jct_s": sum(done_at.values()) / len(done_at) if done_at else math.nan,
        "tokens_per_s": m.tokens_per_s, "ttft_mean_s": m.ttft_mean_s, "tpot_mean_s": m.tpot_mean_s,
        "snic_balance_max_over_avg": trace.meta.get("snic_balance_max_over_avg", math.nan),
        "read_bytes_pe": pe_bytes, "read_bytes_de": de_bytes,
        "wall_s": trace.meta.get("wall_s"), "sim_requests_per_wall_s": trace.meta.get("sim_requests_per_wall_s"),
    }
    row.update(latency_summary(trace, slo))  # the same latency and goodput fields as `dualpath run`
    return {k: _clean(v) for k, v in row.items()}


def online_row(trace: Trace, aps: float | None, slo: SLO = PAPER_SLO) -> dict[str, Any]:
    """The offline columns plus the arrival rate and the steady state's latencies against `slo`."""
    row = offline_row(trace, slo)
    row["aps"] = aps
    row.update(online_summary(trace, slo))
    return {k: _clean(v) for k, v in row.items()}


def capacity_row(result: CapacityResult, policy: str, limits: FluidLimits | None = None) -> dict[str, Any]:
    """The search's answer; `limits` are the fluid limits of the workload at the reported rate."""
    row: dict[str, Any] = {"policy": policy, "capacity_aps": result.capacity_aps}
    if limits is not None:
        row.update(limits.as_dict())
        row["capacity_over_limit"] = result.capacity_aps / limits.limit_aps
    row["probes"] = [{k: _clean(v) for k, v in p.items()} for p in result.probes]
    return row
