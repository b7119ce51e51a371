"""Expert-parallel group sizes and the hardware the simulator builds from a cluster."""

import pytest

from dualpath.calibration import PAPER_CALIBRATION
from dualpath.cluster import parse_shorthand
from dualpath.errors import SpecError
from dualpath.models.llms import llm_preset
from dualpath.runtime.sim.hardware import build_hardware
from dualpath.runtime.sim.parallelism import expert_groups, weight_bytes_per_gpu
from tests.runtime.sim.cases import EXACT, GB, TOY_LLM, TOY_MOE, toy_cluster


def test_deepseek_needs_two_node_prefill_and_four_node_decode_groups():
    llm = llm_preset("deepseek-v3.2")
    assert llm.expert_parallel and not llm_preset("qwen2.5-32b").expert_parallel
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


def test_hardware_groups_engines_and_leaves_hbm_for_kv():
    cluster = toy_cluster(2, 2, gpus=2, pe_group=2, de_group=4)
    moe = build_hardware(cluster, TOY_MOE, EXACT, lockstep=True, sink=None)
    assert moe.node_index == {"P0": 0, "P1": 1, "D0": 2, "D1": 3}
    assert [len(g) for g in moe.pe_groups] == [2, 2] and [len(g) for g in moe.de_groups] == [4]
    assert len(moe.pe_in) == len(moe.pe_out) == len(moe.pe_pcie) == len(moe.de_in) == len(moe.de_out) == 4
    # 16 GB of weights (8e9 parameters, 2 bytes each): 8 GB per GPU of a PE group, 4 GB of a DE group.
    assert moe.pe_free_hbm_bytes == 72 * GB and moe.de_free_hbm_bytes == 76 * GB and moe.de_weight_bytes == 4 * GB
    assert all(de.free_hbm_bytes == 76 * GB for de in moe.des)
    dense = build_hardware(cluster, TOY_LLM, EXACT, lockstep=False, sink=None)
    assert [len(g) for g in dense.pe_groups] == [1, 1, 1, 1] and [de.group for de in dense.des] == [0, 1, 2, 3]
    assert dense.pe_free_hbm_bytes == 78 * GB  # a dense engine holds all 2 GB of its weights


def test_every_bundled_example_cluster_and_model_pair_builds_its_hardware():
    """The qwen2.5-72b example once shipped with 2 GPUs per engine: 72.7 GB of weights per GPU, none left for KV."""
    from dataclasses import replace

    from dualpath.models.registry import resolve_cluster, resolve_model
    from tests.paths import EXAMPLES

    llm = resolve_model(str(EXAMPLES / "models" / "qwen2.5-72b.toml"))
    cluster = resolve_cluster(str(EXAMPLES / "clusters" / "qwen-1p2d.toml"))
    hw = build_hardware(expert_groups(cluster, llm), llm, PAPER_CALIBRATION, lockstep=True, sink=None)
    assert hw.de_free_hbm_bytes > 0
    with pytest.raises(SpecError, match="gpus_per_engine = 2: expected enough GPUs to hold 145 GB"):
        build_hardware(cluster, replace(llm, gpus_per_engine=2), PAPER_CALIBRATION, lockstep=True, sink=None)
