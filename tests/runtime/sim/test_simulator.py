"""One request through the simulator, both read paths, against times worked out by hand."""

import math

import pytest

from dualpath.errors import InfeasibleError, InputError, SpecError
from dualpath.plan import Assignment, Plan
from dualpath.request import Request, Workload
from dualpath.runtime.sim.simulator import simulate
from tests.runtime.sim.cases import EXACT, TOY_LLM, FixedPolicy, one_request, toy_cluster

# Request r0: 6,400 hit tokens (6.4 MB of KV), 100 new, 5 output tokens. Toy specs (cases.py):
READ_S = 6.4e6 / 1e9  # SNIC at 1 GB/s
# Prefill FLOPs: dense 2 x 1e9 x 100, attention 2 layers x 100 queries x 2 x 250 x 6,450 (mid context).
PREFILL_S = (2 * 1e9 * 100 + 2 * 100 * 2 * 250 * 6450) / 1e12  # 0.200645 s at 1 TFLOPS
C_LAYER = PREFILL_S / 2
# Decode step with 1 sequence of mean context 6,500 + 5 // 2 = 6,502: compute and memory tie at 2.0065 ms.
STEP_S = 0.001 + (2e9 + 2 * 2 * 250 * 6502) / 1e12
H2D_S = 6.5e6 / 2e9  # prompt KV into DE HBM through its CNIC at 2 GB/s


def run(side: str, layerwise: bool = True, window=(0.0, math.inf)):
    cluster = toy_cluster()
    policy = FixedPolicy(cluster, TOY_LLM, side, layerwise)
    return simulate(cluster, TOY_LLM, one_request(), policy, calibration=EXACT, chrome_window=window, progress=False)


def test_pe_read_path_hand_computed():
    r = run("pe").records[0]
    t_in = 6.4e6 / 2 / 2e9  # each layer's hit KV, buffer -> PE HBM over the PE CNIC
    t_out = 6.5e6 / 2 / 2e9  # each layer's full KV (hit + new) PE -> DE
    step = t_in + C_LAYER + t_out + 1 * max(t_in, C_LAYER, t_out)
    assert r.pe_read_bytes == 6_400_000 and r.de_read_bytes == 0
    assert r.prefill_start_s == pytest.approx(READ_S)
    assert r.first_token_s == pytest.approx(READ_S + step)
    assert r.second_token_s == pytest.approx(READ_S + step + H2D_S + STEP_S)
    assert r.finish_s == pytest.approx(READ_S + step + H2D_S + 4 * STEP_S)


def test_de_read_path_hand_computed():
    r = run("de").records[0]
    t_in = 6.4e6 / 2 / 2e9  # DE buffer -> PE HBM, per layer
    t_out = 1e5 / 2 / 2e9  # only the new tokens' KV goes back
    step = t_in + C_LAYER + t_out + 1 * max(t_in, C_LAYER, t_out)
    assert r.pe_read_bytes == 0 and r.de_read_bytes == 6_400_000
    assert r.prefill_start_s == pytest.approx(READ_S)
    assert r.first_token_s == pytest.approx(READ_S + step)
    assert r.finish_s == pytest.approx(READ_S + step + H2D_S + 4 * STEP_S)


def test_not_layerwise_copies_all_kv_first_then_sends():
    r = run("pe", layerwise=False).records[0]
    h2d_pe = 6.4e6 / 4e9  # over PCIe at 4 GB/s before the forward pass
    send = 6.5e6 / 2e9  # PE -> DE after the forward pass
    assert r.first_token_s == pytest.approx(READ_S + h2d_pe + PREFILL_S)
    assert r.finish_s == pytest.approx(READ_S + h2d_pe + PREFILL_S + send + H2D_S + 4 * STEP_S)


def test_event_order_in_spans():
    trace = run("de")
    order = [(s.resource, s.kind) for s in sorted(trace.spans, key=lambda s: (s.start_s, s.end_s))]
    assert order[0] == ("D0.snic", "read")
    prefill = [s for s in trace.spans if s.kind == "prefill"]
    assert len(prefill) == 1 and prefill[0].resource == "PE0"
    assert prefill[0].start_s == pytest.approx(READ_S)
    persist = [s for s in trace.spans if s.kind == "persist"]
    assert persist and persist[0].start_s == pytest.approx(trace.records[0].finish_s)
    # The decode-start copy into DE HBM begins when the prefill step ends.
    h2d = [s for s in trace.spans if s.resource == "DE0.cnic_in" and s.start_s >= prefill[0].end_s - 1e-12]
    assert h2d and h2d[0].end_s - h2d[0].start_s == pytest.approx(H2D_S)


def test_zero_io_oracle_costs_only_compute():
    cluster = toy_cluster()
    trace = simulate(cluster, TOY_LLM, one_request(), FixedPolicy(cluster, TOY_LLM, "pe", zero_io=True),
                     calibration=EXACT, progress=False)
    r = trace.records[0]
    assert r.prefill_start_s == 0.0
    assert r.first_token_s == pytest.approx(PREFILL_S)
    assert r.finish_s == pytest.approx(PREFILL_S + 4 * STEP_S)
    assert trace.meta["snic_read_bytes"]["P0"] == 6_400_000  # still counted once, at no cost


def test_plan_replay_follows_the_plan():
    cluster = toy_cluster()
    plan = Plan("test", "feasible", [Assignment("r0", "PE0", "DE0", 0, 6_400_000)], 0.0, 0.0)
    trace = simulate(cluster, TOY_LLM, one_request(), plan, calibration=EXACT, progress=False)
    assert trace.records[0].de_read_bytes == 6_400_000
    assert trace.policy == "plan:test"


def test_bad_assignment_is_a_clear_error():
    cluster = toy_cluster()
    plan = Plan("test", "feasible", [Assignment("r0", "PE0", "DE0", 1, 2)], 0.0, 0.0)
    with pytest.raises(InputError, match="hit bytes"):
        simulate(cluster, TOY_LLM, one_request(), plan, calibration=EXACT, progress=False)
    plan = Plan("test", "feasible", [Assignment("r0", "PE9", "DE0", 6_400_000, 0)], 0.0, 0.0)
    with pytest.raises(InputError, match="unknown engine"):
        simulate(cluster, TOY_LLM, one_request(), plan, calibration=EXACT, progress=False)


def test_request_larger_than_de_hbm_is_infeasible():
    cluster = toy_cluster()
    with pytest.raises(InfeasibleError, match="DE HBM"):
        simulate(cluster, TOY_LLM, one_request(hit=90_000_000 // 1000 * 1000), FixedPolicy(cluster, TOY_LLM),
                 calibration=EXACT, progress=False)


def test_weights_that_do_not_fit_name_the_group_field():
    from dataclasses import replace

    from tests.runtime.sim.cases import TOY_MOE

    big = replace(TOY_MOE, total_params=200e9)  # 400 GB of weights on one 80 GB GPU
    cluster = toy_cluster()
    with pytest.raises(SpecError, match="pe_group_gpus"):
        simulate(cluster, big, one_request(), FixedPolicy(cluster, big), calibration=EXACT, progress=False)


def test_a_des_load_into_hbm_pays_its_own_per_block_cost():
    """Per Full Block and layer, the DE's buffer -> HBM load costs `de_load_submit_s` when set, else the PE's."""
    from dataclasses import replace

    cluster = toy_cluster()
    policy = FixedPolicy(cluster, TOY_LLM, "pe", True)
    blocks = -(-6500 // policy.block_tokens) * TOY_LLM.num_layers  # the prompt's blocks, per layer
    submit_s = 2 * H2D_S / blocks  # submission-bound: twice the bytes' time
    gaps = {}
    for de_load in (None, 0.0):
        cal = replace(EXACT, rdma_submit_s=submit_s, de_load_submit_s=de_load)
        r = simulate(cluster, TOY_LLM, one_request(), policy, calibration=cal, progress=False).records[0]
        gaps[de_load] = r.second_token_s - r.first_token_s
    assert gaps[None] == pytest.approx(blocks * submit_s + STEP_S)
    assert gaps[0.0] == pytest.approx(H2D_S + STEP_S)


def test_not_layerwise_copies_the_next_batch_while_the_current_one_computes():
    # r1 arrives while r0's step computes; its KV is read (6.4 ms) and copied into HBM (1.6 ms) during
    # that step (cudaMemcpyAsync, HBM to spare), so its own step starts with nothing left to copy.
    cluster = toy_cluster()
    workload = Workload("two", (Request("r0", 0, 0, 6400, 100, 5), Request("r1", 1, 0, 6400, 100, 5, 0.01)))
    trace = simulate(cluster, TOY_LLM, workload, FixedPolicy(cluster, TOY_LLM, "pe", layerwise=False),
                     calibration=EXACT, progress=False)
    r0, r1 = sorted(trace.records, key=lambda r: r.request)
    h2d_pe = 6.4e6 / 4e9
    assert r0.first_token_s == pytest.approx(READ_S + h2d_pe + PREFILL_S)
    assert r1.prefill_start_s == pytest.approx(r0.first_token_s)
    assert r1.first_token_s == pytest.approx(r0.first_token_s + PREFILL_S)  # no copy left on its path
