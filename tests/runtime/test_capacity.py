"""Online metrics on the steady state and the capacity search."""

import random
from dataclasses import replace

import pytest

from dualpath.calibration import Calibration
from dualpath.errors import SpecError
from dualpath.request import Trajectory, Turn
from dualpath.runtime.capacity import (
    SLO,
    capacity_runner,
    find_capacity,
    online_horizon_s,
    online_summary,
    slo_lifetime_s,
    steady_state,
)
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy
from dualpath.trace import RequestRecord, Trace
from tests.runtime.sim.cases import TOY_LLM, agents_workload, toy_cluster

CAL = Calibration(cost_model=None, schedule_interval_s=0.0)


def record(agent: int, turn: int, arrival: float, ttft: float, tpot: float, finish_delta: float = 0.0):
    first = arrival + ttft
    return RequestRecord(f"a{agent}t{turn}", agent, turn, arrival, "PE0", "DE0", 0, 0, arrival, first,
                         first + tpot, first + tpot * 10 + finish_delta, 11)


def fake_run(threshold_aps: float):
    """A stand-in executor whose TTFT grows past 4 s exactly above `threshold_aps`."""

    def run_at(aps: float) -> Trace:
        ttft = 1.0 if aps <= threshold_aps else 10.0
        recs = [record(a, t, a * 10 + t * 0.1, ttft, 0.02) for a in range(5) for t in range(3)]
        return Trace("simulator", "fake", recs)

    return run_at


def test_steady_state_starts_after_the_p90_lifetime_and_ends_at_the_last_arrival():
    # 20 one-turn agents every second, each living 1.1 s (TTFT 1 s, 10 tokens at 10 ms), one of 20 s.
    recs = [record(a, 0, float(a), 1.0, 0.01) for a in range(20)]
    recs.append(record(20, 0, 20.0, 1.0, 0.01, finish_delta=18.9))
    start, end, found = steady_state(Trace("simulator", "x", recs))
    assert found and start == pytest.approx(1.1) and end == 20.0


def test_no_steady_state_when_lifetimes_outlast_the_arrivals():
    recs = [record(a, t, a + 10.0 * t, 1.0, 0.01) for a in range(3) for t in range(5)]  # live 41 s, arrive over 2
    trace = Trace("simulator", "x", recs)
    assert steady_state(trace) == (0.0, 2.0, False)
    summary = online_summary(trace, SLO())
    assert not summary["steady_state_found"] and not summary["slo_met"]  # within SLO, but no steady state
    assert summary["ttft_p99_s"] == pytest.approx(1.0)


def test_horizon_is_the_slo_bound_warmup_plus_the_window():
    assert slo_lifetime_s([(10, 11), (5, 1)], SLO(ttft_s=4.0, tpot_s=0.05)) == pytest.approx(4 + 0.5 + 4)
    trajs = [Trajectory(i, tuple(Turn(10, 11) for _ in range(i + 1))) for i in range(10)]
    # Lifetimes 4.5 s per turn; the 90th percentile agent has 9 turns.
    assert online_horizon_s(trajs, SLO(), window_s=100.0) == pytest.approx(9 * 4.5 + 100.0)


def test_slo_uses_the_steady_state_statistic():
    recs = [record(a, 0, a * 1.0, 1.0 + a % 3, 0.02) for a in range(30)]
    summary = online_summary(Trace("simulator", "x", recs), SLO(ttft_s=4.0, tpot_s=0.05))
    assert summary["steady_requests"] > 0
    assert summary["slo_met"] == (summary["ttft_mean_s"] <= 4.0)
    strict = online_summary(Trace("simulator", "x", recs), SLO(ttft_s=4.0, tpot_s=0.01))
    assert not strict["slo_met"]


def test_bisection_brackets_the_threshold():
    result = find_capacity(fake_run(1.37), SLO(), start_aps=0.5, rel_tol=0.02)
    assert 1.37 / 1.02 <= result.capacity_aps <= 1.37
    met = [p["aps"] for p in result.probes if p["slo_met"]]
    failed = [p["aps"] for p in result.probes if not p["slo_met"]]
    assert max(met) == result.capacity_aps and min(failed) > result.capacity_aps
    assert find_capacity(fake_run(0.001), SLO(), start_aps=0.5, max_probes=4).capacity_aps == 0.0


def test_search_stays_below_the_fluid_limit():
    result = find_capacity(fake_run(100.0), SLO(), rel_tol=0.02, limit_aps=2.0)  # SLO met at any rate probed
    assert result.probes[0]["aps"] == 1.0  # starts at half the limit
    assert all(p["aps"] < 2.0 for p in result.probes)
    assert 2.0 / 1.02 <= result.capacity_aps < 2.0 and result.limit_aps == 2.0
    below = find_capacity(fake_run(0.3), SLO(), rel_tol=0.02, limit_aps=2.0)
    assert 0.3 / 1.02 <= below.capacity_aps <= 0.3
    with pytest.raises(SpecError):
        find_capacity(fake_run(1.0), SLO(), limit_aps=0.0)


def poisson_workload(aps: float, agents: int = 24, seed: int = 0):
    rng = random.Random(seed)
    at, starts = 0.0, []
    for _ in range(agents):
        at += rng.expovariate(aps)
        starts.append(at)
    return agents_workload(agents, 5, seed, start_s=starts)


def test_capacity_search_on_the_simulator_is_deterministic():
    llm = replace(TOY_LLM, cost=replace(TOY_LLM.cost, peak_tflops=10.0))  # prefill in tenths of a second
    cluster = toy_cluster(1, 1, gpus=2, pe_group=2, de_group=2)
    run_at = capacity_runner(lambda **kw: simulate(cluster, llm, calibration=CAL, progress=False, **kw),
                             poisson_workload, lambda: make_policy("dualpath", cluster, llm))
    slo = SLO(ttft_s=1.0, tpot_s=0.05)
    a = find_capacity(run_at, slo, start_aps=1.0, rel_tol=0.1, max_probes=8)
    b = find_capacity(run_at, slo, start_aps=1.0, rel_tol=0.1, max_probes=8)
    assert a.probes == b.probes
    assert a.capacity_aps > 0
    assert any(not p["slo_met"] for p in a.probes)


def test_result_rows_for_the_cli_json():
    from dualpath.runtime.sim.results import offline_row, online_row

    cluster = toy_cluster(1, 1, gpus=2, pe_group=2, de_group=2)
    llm = replace(TOY_LLM, cost=replace(TOY_LLM.cost, peak_tflops=10.0))
    trace = simulate(cluster, llm, poisson_workload(2.0), make_policy("dualpath", cluster, llm), calibration=CAL,
                     online=True, progress=False)
    row = offline_row(trace)
    assert row["policy"] == "dualpath" and row["agents"] == 24 and row["requests"] == len(trace.records)
    assert row["jct_s"] == trace.metrics().jct_s
    assert row["read_bytes_pe"] + row["read_bytes_de"] == trace.meta["hit_bytes"]
    online = online_row(trace, 2.0)
    assert online["aps"] == 2.0 and {"ttft_p50_s", "ttft_p99_s", "tpot_mean_s", "slo_met"} <= set(online)
