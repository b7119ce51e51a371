"""Online serving: SLO checks on the steady state and the search for the highest SLO-compliant rate.

Agents arrive as a Poisson process at X agents per second; the SLO (TTFT <= 4 s, TPOT <= 50 ms, on
the means) must hold in the steady state. design.md states no rule for the warm-up and the drain, so
this module's, applied the same way to simulated runs, real runs and timestamped trace replays:

- *arrivals cover the measurement*: an online run draws arrivals over a horizon of warm-up plus
  measurement window (`online_horizon_s`), so the number of agents follows from the rate;
- *warm-up*: the load (agents in the system) of a Poisson stream of agents grows until the time
  equals the agents' lifetimes, then holds (an M/G/infinity system). Requests that arrive before the
  first arrival plus the 90th percentile of the agents' measured lifetimes are excluded; the horizon
  sizes that warm-up a priori with the 90th percentile of the lifetimes the SLO allows (each turn
  4 s to its first token, then 50 ms per output token), an upper bound whenever the SLO holds;
- *drain*: once the last agent has arrived the load only decays: requests after it are excluded;
- a run whose warm-up ends after the last arrival has no steady state (overload stretches the
  lifetimes past the horizon) and does not meet the SLO; its statistics cover every request.

The capacity is searched below the fluid limit (`dualpath.runtime.fluid`): a rate at or above the
smallest per-resource limit has no steady state, so the search starts at half of it, doubles while
the SLO holds and bisects, never probing or reporting the limit itself. Each probe is one
deterministic run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dualpath.errors import SpecError
from dualpath.policy import Policy
from dualpath.request import Trajectory, Workload
from dualpath.trace import Trace, percentile

STATISTICS = ("mean", "p50", "p90", "p99")


@dataclass(frozen=True)
class SLO:
    ttft_s: float = 4.0
    tpot_s: float = 0.05
    statistic: str = "mean"  # over the steady-state requests: mean, p50, p90 or p99

    def __post_init__(self) -> None:
        if not self.ttft_s > 0 or not self.tpot_s > 0:
            raise SpecError("SLO", "ttft_s/tpot_s", (self.ttft_s, self.tpot_s), "positive seconds")
        if self.statistic not in STATISTICS:
            raise SpecError("SLO", "statistic", self.statistic, "one of " + ", ".join(STATISTICS))


PAPER_SLO = SLO()  # TTFT <= 4 s, TPOT <= 50 ms, on the steady state's means


def _stat(values: list[float], statistic: str) -> float:
    if not values:
        return float("nan")
    if statistic == "mean":
        return sum(values) / len(values)
    return percentile(values, float(statistic[1:]))


WARMUP_LIFETIME_PERCENTILE = 90.0  # the warm-up lasts this percentile of the agents' lifetimes
DEFAULT_WINDOW_S = 600.0  # measurement window an online run's arrivals cover after the warm-up


def slo_lifetime_s(turns: Sequence[tuple[int, int]], slo: SLO = PAPER_SLO) -> float:
    """The longest life an agent of (append, generate) turns has when every turn just meets `slo`."""
    return sum(slo.ttft_s + slo.tpot_s * max(0, generate - 1) for _, generate in turns)


def online_horizon_s(trajectories: Sequence[Trajectory], slo: SLO = PAPER_SLO,
                     window_s: float = DEFAULT_WINDOW_S) -> float:
    """Seconds of arrivals an online run needs: the SLO-bound warm-up of these agents plus `window_s`."""
    if not trajectories or not window_s > 0:
        raise SpecError("online run", "trajectories/window_s", (len(trajectories), window_s),
                        "at least one trajectory and a positive window")
    lives = [slo_lifetime_s([(t.append_tokens, t.generate_tokens) for t in traj.turns], slo) for traj in trajectories]
    return percentile(lives, WARMUP_LIFETIME_PERCENTILE) + window_s


def steady_state(trace: Trace) -> tuple[float, float, bool]:
    """(start_s, end_s, found): from the first arrival plus the 90th-percentile agent lifetime to the
    last agent's arrival; (first arrival, last arrival, False) when that window is empty."""
    records = [r for r in trace.records if r.status != "failed"]
    if not records:
        return 0.0, 0.0, False
    first_arrival: dict[int, float] = {}
    done_at: dict[int, float] = {}
    for r in records:
        first_arrival[r.agent] = min(first_arrival.get(r.agent, r.arrival_s), r.arrival_s)
        done_at[r.agent] = max(done_at.get(r.agent, r.finish_s), r.finish_s)
    lives = [done_at[a] - first_arrival[a] for a in first_arrival]
    t0, end = min(first_arrival.values()), max(first_arrival.values())
    start = t0 + percentile(lives, WARMUP_LIFETIME_PERCENTILE)
    if start < end:
        return start, end, True
    return t0, end, False


def online_summary(trace: Trace, slo: SLO = PAPER_SLO) -> dict[str, Any]:
    """TTFT/TTST/TPOT statistics of the steady state and whether the SLO holds there."""
    start, end, found = steady_state(trace)
    window = [r for r in trace.records if r.status != "failed" and start <= r.arrival_s <= end]
    ttft = [r.ttft_s for r in window]
    ttst = [t for t in (r.ttst_s for r in window) if t is not None]
    tpot = [t for t in (r.tpot_s for r in window) if t is not None]
    out: dict[str, Any] = {"steady_start_s": start, "steady_end_s": end, "steady_state_found": found,
                           "steady_requests": len(window)}
    for name, values in (("ttft", ttft), ("ttst", ttst), ("tpot", tpot)):
        for statistic in STATISTICS:
            out[f"{name}_{statistic}_s"] = _stat(values, statistic)
    ok = sum(1 for r in window if r.within_slo(slo.ttft_s, slo.tpot_s))
    out["slo_attainment"] = ok / len(window) if window else 0.0
    # No steady state (overload stretched the agents' lives past the arrivals): the SLO is not met.
    within = out[f"ttft_{slo.statistic}_s"] <= slo.ttft_s and out[f"tpot_{slo.statistic}_s"] <= slo.tpot_s
    out["slo_met"] = found and bool(window) and within
    return out


def latency_summary(trace: Trace, slo: SLO = PAPER_SLO) -> dict[str, Any]:
    """Mean/p50/p90/p99 TTFT, TTST and TPOT over every finished request, the fraction within `slo` and
    the goodput (requests within `slo` per second of the run): the same fields for `simulate` and `run`."""
    m = trace.metrics()
    out: dict[str, Any] = {}
    for name in ("ttft", "ttst", "tpot"):
        for statistic in STATISTICS:
            out[f"{name}_{statistic}_s"] = getattr(m, f"{name}_{statistic}_s")
    done = [r for r in trace.records if r.status != "failed"]
    ok = sum(1 for r in done if r.within_slo(slo.ttft_s, slo.tpot_s))
    out["slo_attainment"] = ok / len(done) if done else 0.0
    out["goodput_requests_per_s"] = ok / m.jct_s if done and m.jct_s > 0 else 0.0
    return out


@dataclass
class CapacityResult:
    capacity_aps: float  # highest rate probed that met the SLO (0 when none did)
    probes: list[dict[str, Any]] = field(default_factory=list)  # in probe order: aps, slo_met and the statistics
    limit_aps: float = math.inf  # the fluid limit the search stayed below


def find_capacity(run_at: Callable[[float], Trace], slo: SLO = PAPER_SLO, *, start_aps: float = 0.5,
                  rel_tol: float = 0.05, max_probes: int = 16, min_aps: float = 1e-3,
                  limit_aps: float = math.inf) -> CapacityResult:
    """Highest agents-per-second rate whose run (`run_at(aps) -> Trace`) meets `slo` in steady state.

    Doubling from `start_aps` (halving while it fails) brackets the capacity; bisection narrows the
    bracket to `rel_tol`. With a finite `limit_aps` (the fluid limit) the search starts at half of it
    and treats the limit as failing without running it. Deterministic when `run_at` is.
    """
    if not start_aps > 0 or not 0 < rel_tol < 1 or not limit_aps > 0:
        raise SpecError("find_capacity", "start_aps/rel_tol/limit_aps", (start_aps, rel_tol, limit_aps),
                        "start_aps > 0, 0 < rel_tol < 1, limit_aps > 0")
    if math.isfinite(limit_aps):
        start_aps = limit_aps / 2
    result = CapacityResult(0.0, limit_aps=limit_aps)

    def probe(aps: float) -> bool:
        summary = online_summary(run_at(aps), slo)
        result.probes.append({"aps": aps, **summary})
        if summary["slo_met"]:
            result.capacity_aps = max(result.capacity_aps, aps)
        return summary["slo_met"]

    low, high = 0.0, 0.0
    aps = start_aps
    if probe(aps):
        low = aps
        while len(result.probes) < max_probes:
            if aps * 2 >= limit_aps:
                high = limit_aps  # at the fluid limit a resource is saturated: no steady state to probe
                break
            aps *= 2
            if not probe(aps):
                high = aps
                break
            low = aps
    else:
        high = aps
        while len(result.probes) < max_probes and aps > min_aps:
            aps /= 2
            if probe(aps):
                low = aps
                break
            high = aps
    if not low or not high:
        return result  # never met (capacity 0) or never failed within max_probes (a lower bound)
    while high / low - 1 > rel_tol and len(result.probes) < max_probes:
        mid = (low + high) / 2
        if probe(mid):
            low = mid
        else:
            high = mid
    return result


def capacity_runner(simulate_fn: Callable[..., Trace], workload_at: Callable[[float], Workload],
                    make_policy: Callable[[], Policy], **simulate_kwargs: Any) -> Callable[[float], Trace]:
    """`run_at(aps)` for `find_capacity`: a fresh policy and the workload's Poisson arrivals at `aps`."""

    def run_at(aps: float) -> Trace:
        return simulate_fn(workload=workload_at(aps), policy=make_policy(), online=True, **simulate_kwargs)

    return run_at
