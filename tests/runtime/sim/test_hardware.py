"""Expert-parallel group sizes and the hardware the simulator builds from a cluster."""

import pytest

from dualpath.cluster import parse_shorthand
from dualpath.errors import SpecError
from dualpath.models.llms import llm_preset
from dualpath.runtime.sim.calibration import PAPER_CALIBRATION
from dualpath.runtime.sim.parallelism import expert_groups, is_expert_parallel, weight_bytes_per_gpu
from tests.runtime.sim.cases import TOY_LLM, TOY_MOE, toy_cluster


def test_deepseek_needs_two_node_prefill_and_four_node_decode_groups():
    llm = llm_preset("deepseek-v3.2")
    assert is_expert_parallel(llm) and not is_expert_parallel(llm_preset("qwen2.5-32b"))
    for shorthand in ("2P4D", "48P96D"):
        cluster = expert_groups(parse_shorthand(shorthand), llm)
        assert (cluster.pe_group_gpus, cluster.de_group_gpus) == (16, 32)
    # 671 GB of FP8 weights: 42 GB per GPU over 16, 21 GB over 32 (of 72 GB usable HBM).
    assert weight_bytes_per_gpu(llm, 16) == pytest.approx(llm.total_params / 16)
    with pytest.raises(SpecError, match="pe_group_gpus"):
        expert_groups(parse_shorthand("1P1D"), llm)


def test_workable_groups_and_dense_models_are_left_alone():
    cluster = toy_cluster(2, 2, gpus=2, pe_group=2, de_group=4)
    assert expert_groups(cluster, TOY_MOE) is cluster
    assert expert_groups(cluster, TOY_LLM) is cluster
    assert expert_groups(parse_shorthand("1P1D"), llm_preset("ds-27b")).pe_group_gpus == 8
    assert PAPER_CALIBRATION.weight_bytes_per_param_of(llm_preset("qwen2.5-32b")) == 2.0
