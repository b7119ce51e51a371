"""Result rows of `dualpath simulate --json`, the simulator's fluid limits and its capacity search."""

import json
import math
import random
from dataclasses import replace

import pytest

from dualpath.calibration import Calibration
from dualpath.runtime.capacity import SLO, CapacityResult
from dualpath.runtime.sim.online import readers_of, search_capacity, sim_fluid_limits
from dualpath.runtime.sim.results import capacity_row, online_row
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy
from tests.runtime.sim.cases import TOY_LLM, agents_workload, toy_cluster

CAL = Calibration(cost_model=None, schedule_interval_s=0.0)
LLM = replace(TOY_LLM, cost=replace(TOY_LLM.cost, peak_tflops=10.0))
CLUSTER = toy_cluster(1, 1, gpus=2, pe_group=2, de_group=2)


def poisson_workload(aps: float, horizon_s: float = 30.0, seed: int = 0):
    rng = random.Random(seed)
    starts, at = [], rng.expovariate(aps)
    while at < horizon_s:
        starts.append(at)
        at += rng.expovariate(aps)
    return agents_workload(max(1, len(starts)), 5, seed, start_s=starts or [0.0])


def test_online_row_has_the_percentiles_and_attainment():
    trace = simulate(CLUSTER, LLM, poisson_workload(2.0), make_policy("dualpath", CLUSTER, LLM), calibration=CAL,
                     online=True, progress=False)
    row = online_row(trace, 2.0)
    for metric in ("ttft", "ttst", "tpot"):
        for q in ("p50", "p90", "p99"):
            assert row[f"{metric}_{q}_s"] is not None
        assert row[f"{metric}_p50_s"] <= row[f"{metric}_p90_s"] <= row[f"{metric}_p99_s"]
    assert 0.0 <= row["slo_attainment"] <= 1.0 and row["steady_state_found"]
    assert online_row(trace, None)["aps"] is None  # a trace replay has no rate of its own
    json.dumps(row, allow_nan=False)


def test_readers_follow_the_policy():
    assert readers_of(make_policy("basic", CLUSTER, LLM)) == "pe"
    assert readers_of(make_policy("dualpath", CLUSTER, LLM)) == "all"
    assert readers_of(make_policy("oracle", CLUSTER, LLM)) == "none"


def test_sim_limits_use_the_calibrated_snic_rate():
    workload = poisson_workload(1.0)
    basic = sim_fluid_limits(CLUSTER, LLM, workload, make_policy("basic", CLUSTER, LLM), tpot_slo_s=0.05,
                             calibration=replace(CAL, snic_read_efficiency=0.5))
    reads = {r.name: r for r in basic.resources}["SNIC reads (1 PE node)"]
    assert reads.capacity_per_s == pytest.approx(0.5 * CLUSTER.node.snic_bytes_per_s)
    dual = sim_fluid_limits(CLUSTER, LLM, workload, make_policy("dualpath", CLUSTER, LLM), tpot_slo_s=0.05,
                            calibration=CAL)
    assert dual.limit_aps >= basic.limit_aps


def test_capacity_row_names_the_bound():
    limits = sim_fluid_limits(CLUSTER, LLM, poisson_workload(1.0), make_policy("basic", CLUSTER, LLM),
                              tpot_slo_s=0.05, calibration=CAL)
    row = capacity_row(CapacityResult(limits.limit_aps / 2, [], limits.limit_aps), "basic", limits)
    assert row["bound_by"] == limits.bound_by and row["capacity_over_limit"] == pytest.approx(0.5)
    json.dumps(row, allow_nan=False)


def test_search_reports_a_rate_below_the_fluid_limit():
    row = search_capacity(CLUSTER, LLM, poisson_workload, lambda: make_policy("dualpath", CLUSTER, LLM),
                          SLO(ttft_s=1.0, tpot_s=0.05), rel_tol=0.1, calibration=CAL)
    assert 0 < row["capacity_aps"] < row["fluid_limit_aps"] and math.isfinite(row["fluid_limit_aps"])
    assert all(p["aps"] < row["fluid_limit_aps"] * 1.01 for p in row["probes"])


def test_without_layerwise_the_kv_copies_are_a_resource_of_their_own():
    cal = replace(CAL, cuda_copy_submit_s=1e-3)
    workload = poisson_workload(1.0)
    basic = {r.name.split(" (")[0]: r for r in sim_fluid_limits(
        CLUSTER, LLM, workload, make_policy("basic", CLUSTER, LLM), tpot_slo_s=0.05, calibration=cal).resources}
    layerwise = {r.name.split(" (")[0]: r for r in sim_fluid_limits(
        CLUSTER, LLM, workload, make_policy("layerwise", CLUSTER, LLM), tpot_slo_s=0.05, calibration=cal).resources}
    # The copy stream overlaps the compute (double buffering): two resources, each a bound; the compute
    # demand is the layerwise policy's, and only basic has copies.
    assert basic["prefill compute"].demand_per_agent == layerwise["prefill compute"].demand_per_agent
    assert "KV copies into HBM" not in layerwise and basic["KV copies into HBM"].demand_per_agent > 0
