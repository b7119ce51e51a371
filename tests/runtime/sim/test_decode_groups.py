"""Continuous batching in decode groups: sequences join and leave at step boundaries, exactly."""

import math

import pytest

from dualpath.request import Request, Workload
from dualpath.runtime.sim.simulator import simulate
from tests.runtime.sim.cases import EXACT, TOY_LLM, FixedPolicy, toy_cluster

PREFILL_S = (2 * 1e9 * 100 + 2 * 100 * 2 * 250 * 6450) / 1e12  # one request: 6,400 cached + 100 new tokens
WEIGHTS = 2e9  # 1e9 parameters in 2-byte weights on the DE GPU


def step(*contexts: int) -> float:
    return TOY_LLM.decode_step_s(len(contexts), sum(contexts), WEIGHTS)


def test_a_sequence_joining_mid_decode_waits_for_the_boundary_and_slows_the_step():
    # r0 arrives at 0 and decodes 200 tokens; r1 arrives at 0.1 s, prefills after r0, decodes 50.
    requests = (Request("r0", 0, 0, 6400, 100, 200, 0.0), Request("r1", 1, 0, 6400, 100, 50, 0.1))
    cluster = toy_cluster()
    trace = simulate(cluster, TOY_LLM, Workload("two", requests), FixedPolicy(cluster, TOY_LLM, zero_io=True),
                     calibration=EXACT, online=True, progress=False)
    r0, r1 = sorted(trace.records, key=lambda r: r.request)
    ctx0, ctx1 = 6500 + 200 // 2, 6500 + 50 // 2
    s1, s2 = step(ctx0), step(ctx0, ctx1)
    start0 = PREFILL_S  # r0's first token; no I/O under zero_io, so it joins at once
    assert r0.first_token_s == pytest.approx(start0)
    assert r0.second_token_s == pytest.approx(start0 + s1)
    t1 = 2 * PREFILL_S  # r1's prefill waits for r0's forward step
    assert r1.first_token_s == pytest.approx(t1)
    done = math.ceil((t1 - start0) / s1)  # r0's steps completed at the boundary where r1 joins
    boundary = start0 + done * s1
    assert r1.second_token_s == pytest.approx(boundary + s2)
    assert r1.finish_s == pytest.approx(boundary + 49 * s2)
    # r0 ran `done` steps alone, 49 with r1, and the rest alone again.
    assert r0.finish_s == pytest.approx(boundary + 49 * s2 + (199 - done - 49) * s1)


def test_single_output_token_finishes_at_the_first_token():
    cluster = toy_cluster()
    trace = simulate(cluster, TOY_LLM, Workload("one", (Request("r0", 0, 0, 6400, 100, 1),)),
                     FixedPolicy(cluster, TOY_LLM, zero_io=True), calibration=EXACT, progress=False)
    r = trace.records[0]
    assert r.finish_s == r.second_token_s == r.first_token_s == pytest.approx(PREFILL_S)
