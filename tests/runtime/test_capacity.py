"""Online metrics on the steady state and the capacity search."""

import random
from dataclasses import replace

import pytest

from dualpath.calibration import Calibration
from dualpath.runtime.capacity import SLO, capacity_runner, find_capacity, online_summary, steady_state
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
        recs = [record(a, t, a * 10 + t, ttft, 0.02) for a in range(5) for t in range(3)]
        return Trace("simulator", "fake", recs)

    return run_at


def test_steady_state_is_between_first_completion_and_last_arrival():
    recs = [record(0, 0, 0.0, 1.0, 0.01), record(0, 1, 1.2, 1.0, 0.01), record(1, 0, 5.0, 1.0, 0.01)]
    start, end, found = steady_state(Trace("simulator", "x", recs))
    assert found and start == pytest.approx(1.2 + 1.0 + 0.1) and end == 5.0


def test_slo_uses_the_steady_state_statistic():
    recs = [record(a, 0, a * 1.0, 1.0 + a, 0.02) for a in range(10)]
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
