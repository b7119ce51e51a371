"""Fluid limits: per-resource rates worked out by hand on the toy specs."""

import math

import pytest

from dualpath.errors import SpecError
from dualpath.request import Request, Workload
from dualpath.runtime.fluid import DecodeHardware, fluid_limits
from tests.runtime.sim.cases import GB, TOY_LLM, toy_cluster

# Two agents, one turn each: 6,400 hit tokens (6.4 MB at 1,000 B per token), 100 new, 5 output.
TWO_AGENTS = Workload("two", (Request("a0t0", 0, 0, 6400, 100, 5), Request("a1t0", 1, 0, 6400, 100, 5)))
ROOMY = DecodeHardware(free_hbm_bytes=80 * GB, weight_bytes_per_gpu=0.0)


def limits(readers: str, **kw):
    return fluid_limits(toy_cluster(1, 2), TOY_LLM, TWO_AGENTS, readers=readers, decode=ROOMY, tpot_slo_s=0.05, **kw)


def test_reads_go_through_the_nodes_allowed_to_read():
    pe_only = {r.name: r for r in limits("pe").resources}["SNIC reads (1 PE node)"]
    assert pe_only.capacity_per_s == pytest.approx(1 * GB) and pe_only.demand_per_agent == 6400 * 1000
    assert pe_only.limit_aps == pytest.approx(1e9 / 6.4e6)
    every = {r.name: r for r in limits("all", snic_read_efficiency=0.5).resources}["SNIC reads (3 PE+DE nodes)"]
    assert every.limit_aps == pytest.approx(3 * 0.5e9 / 6.4e6)
    assert not any(r.name.startswith("SNIC") for r in limits("none").resources)  # zero I/O reads nothing


def test_prefill_compute_uses_the_llm_cost_model():
    compute = {r.name: r for r in limits("none").resources}["prefill compute (1 PE engines)"]
    assert compute.demand_per_agent == pytest.approx(TOY_LLM.prefill_time_s([(6400, 100)]))  # no overhead here
    assert compute.limit_aps == pytest.approx(1 / compute.demand_per_agent)


def test_the_smallest_limit_binds_and_is_named():
    fl = limits("pe")
    assert fl.limit_aps == min(r.limit_aps for r in fl.resources)
    assert fl.bound_by == fl.binding.name
    data = fl.as_dict()
    assert data["fluid_limit_aps"] == fl.limit_aps and fl.bound_by in data["resources"]


def test_decode_limit_respects_the_tpot_slo_and_hbm():
    tight = DecodeHardware(free_hbm_bytes=6505 * 1000 * 3, weight_bytes_per_gpu=0.0)  # three contexts fit
    fl = fluid_limits(toy_cluster(1, 1), TOY_LLM, TWO_AGENTS, readers="none", decode=tight, tpot_slo_s=0.05)
    decode = {r.name: r for r in fl.resources}["decode within TPOT SLO (1 DE engines)"]
    step = TOY_LLM.decode_step_s(3, 3 * 6502, 0.0)
    assert decode.capacity_per_s == pytest.approx(3 / step, rel=0.01) and decode.demand_per_agent == 5
    never = fluid_limits(toy_cluster(1, 1), TOY_LLM, TWO_AGENTS, readers="none", decode=tight, tpot_slo_s=1e-9)
    assert {r.name: r for r in never.resources}["decode within TPOT SLO (1 DE engines)"].limit_aps == 0.0


def test_bad_readers_and_empty_workloads_are_refused():
    with pytest.raises(SpecError):
        limits("de")
    with pytest.raises(SpecError):
        fluid_limits(toy_cluster(), TOY_LLM, Workload("none", ()), readers="pe", decode=ROOMY, tpot_slo_s=0.05)



def test_writes_persist_the_completed_blocks_through_the_de_nodes():
    writes = {r.name: r for r in limits("pe").resources}["SNIC writes (2 DE nodes)"]
    # Context 6,505 tokens: 101 whole blocks (6,464 tokens), of which 6,400 were a hit: 64 new tokens.
    assert writes.demand_per_agent == 64 * 1000 and writes.capacity_per_s == pytest.approx(2 * GB)
    assert math.isfinite(writes.limit_aps)
