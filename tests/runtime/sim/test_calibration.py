"""The simulator's constants: one cost model shared with the presets and the solver, one fitted value."""

from dataclasses import fields

import pytest

from dualpath.calibration import PAPER_CALIBRATION, calibrated_llm
from dualpath.llm import CostModel
from dualpath.models.llms import llm_preset
from dualpath.solver.problem import request_compute_s


def test_presets_carry_the_simulators_cost_model():
    # The solver plans with the preset, the simulator runs the calibrated model: they must be one object.
    for name in ("deepseek-v3.2", "ds-27b", "qwen2.5-32b"):
        llm = llm_preset(name)
        assert llm.cost == PAPER_CALIBRATION.cost_model
        assert calibrated_llm(llm) is llm


def test_solver_prediction_equals_the_simulators_step_time():
    llm = calibrated_llm(llm_preset("deepseek-v3.2"))
    assert request_compute_s(llm, 32_000, 400) == pytest.approx(llm.prefill_time_s([(32_000, 400)])
                                                                 - llm.cost.prefill_overhead_s)


def test_copy_costs_are_the_papers_figures():
    # about 1 us per RDMA write, 5-7 us per cudaMemcpyAsync (the middle); 3FS's 40 GiB/s of a 400 Gb/s NIC
    assert PAPER_CALIBRATION.rdma_submit_s == 1e-6
    assert 5e-6 <= PAPER_CALIBRATION.cuda_copy_submit_s <= 7e-6
    assert PAPER_CALIBRATION.snic_read_efficiency == pytest.approx(40 * 2**30 / 50e9, abs=0.01)


def test_no_unmeasured_per_step_overheads():
    cost = CostModel()
    assert cost.prefill_overhead_s == 0.0 and cost.decode_overhead_s == 0.0
    assert {f.name for f in fields(CostModel)} >= {"prefill_mfu", "decode_mfu", "hbm_efficiency", "a2a_gb_per_s"}


def test_a_dense_model_pays_no_all_to_all():
    assert llm_preset("qwen2.5-32b").a2a_s(100, ep_gpus=32) == 0.0
    assert llm_preset("deepseek-v3.2").a2a_s(100, ep_gpus=1) == 0.0  # no expert-parallel group
    assert llm_preset("deepseek-v3.2").a2a_s(100, ep_gpus=32) > 0.0


def test_all_to_all_is_deepeps_latency_at_small_batches_and_bandwidth_at_large():
    v32 = llm_preset("deepseek-v3.2")
    moe_layers = 61 - 3
    # DeepEP README, EP32: dispatch 155 us + combine 273 us per MoE layer, whatever the batch below 128.
    assert v32.a2a_s(1, ep_gpus=32) == pytest.approx(moe_layers * (155 + 273) * 1e-6)
    assert v32.a2a_s(64, ep_gpus=32) == v32.a2a_s(1, ep_gpus=32)
    assert v32.a2a_s(1, ep_gpus=8) == pytest.approx(moe_layers * (77 + 114) * 1e-6)  # EP8's row
    big = v32.a2a_s(1024, ep_gpus=32)  # bandwidth bound: 8 experts x hidden x (1 B FP8 + 2 B BF16) per token
    assert big == pytest.approx(moe_layers * 1024 * 8 * 7168 * 3 / 50e9)
    # The floor and the byte formula meet near DeepEP's measured point (128 tokens): within 5%.
    assert moe_layers * 128 * 8 * 7168 * 3 / 50e9 == pytest.approx(v32.a2a_s(1, ep_gpus=32), rel=0.05)
