import pytest

from dualpath.cluster import Role
from dualpath.errors import InfeasibleError, SpecError
from dualpath.solver.coefficients import coefficients, engine_classes
from dualpath.solver.hbm import default_free_hbm_bytes, hbm_waves
from dualpath.solver.problem import (
    Backlog,
    Loads,
    Solution,
    build_problem,
    fluid_bottleneck_s,
)
from tests.solver.cases import DS27B, DSV32, agentic_requests, cluster, request, tiny_cluster


def test_coefficients_follow_the_specs():
    c = tiny_cluster()
    pb = build_problem(c, DS27B, [request("a", 3072, 10, 5)])
    kv = DS27B.kv_bytes_per_token
    assert pb.hit_bytes == (3072 * kv,) and pb.new_bytes == (10 * kv,)
    assert pb.prompt_bytes == (3082 * kv,) and pb.context_bytes == (3087 * kv,)
    assert pb.compute_s[0] == pytest.approx(DS27B.prefill_flops(3072, 10) / (989e12 * DS27B.cost.prefill_mfu))
    assert pb.snic_bytes_per_s == (50e9, 50e9) and pb.cnic_bytes_per_s == 400e9
    co = coefficients(pb)
    assert co.token_snic_s == (kv / 50e9, kv / 50e9) and co.hit_tokens == (3072,)


def test_fluid_bottleneck_is_the_most_loaded_resource():
    c = tiny_cluster()
    kv = DS27B.kv_bytes_per_token
    pb = build_problem(c, DS27B, [request("a", 3072), request("b", 2048), request("c", 2048)])
    h = pb.hit_bytes
    # a on the PE side, b and c on the DE side: the DE node's SNIC carries 4096 tokens.
    sol = Solution([0, 0, 0], [0, 0, 0], [h[0], 0, 0])
    loads = Loads(pb, sol)
    assert fluid_bottleneck_s(pb, sol) == pytest.approx(4096 * kv / 50e9)
    assert loads.binding()[:2] == ("snic", 1)
    loads.add(1, 0, 0, 0, -1)
    loads.add(1, 0, 0, h[1])
    assert loads.fluid_bottleneck_s() == pytest.approx(5120 * kv / 50e9)


def test_backlog_enters_the_fluid_bottleneck_and_the_resource_names():
    c = tiny_cluster()
    pb = build_problem(c, DS27B, [request("a", 64)], Backlog(read_queue_bytes={"D0": 5e10}, pe_compute_s={"PE0": 2.0}))
    assert pb.read_queue_bytes == (0.0, 5e10) and pb.pe_backlog_s == (2.0,)
    assert fluid_bottleneck_s(pb, Solution([0], [0], [pb.hit_bytes[0]])) == pytest.approx(2.0 + pb.compute_s[0])
    assert pb.resource_name("snic", 1) == "D0.snic" and pb.resource_name("de_cnic_out", 0) == "DE0.cnic_out"
    with pytest.raises(SpecError, match="read_queue_bytes"):
        build_problem(c, DS27B, [request("a", 64)], Backlog(read_queue_bytes={"X9": 1.0}))


def test_infeasible_requests_are_named_with_the_constraint():
    c = tiny_cluster(dram_buffer_bytes=10**9)
    with pytest.raises(InfeasibleError, match=r"request big is infeasible: DE DRAM buffer"):
        build_problem(c, DS27B, [request("ok", 64), request("big", 60_000)])
    c = tiny_cluster(hbm_bytes_per_gpu=32 * 10**9)
    free = default_free_hbm_bytes(c, DS27B)
    tokens = free // DS27B.kv_bytes_per_token + 1
    with pytest.raises(InfeasibleError, match=r"request huge is infeasible: DE HBM"):
        build_problem(c, DS27B, [request("huge", tokens - 2, 1, 1)])


def test_duplicate_ids_are_refused():
    with pytest.raises(SpecError, match="unique request ids"):
        build_problem(tiny_cluster(), DS27B, [request("a", 64), request("a", 64)])


def test_hbm_waves_leave_room_for_any_fit():
    assert hbm_waves([10, 10], [100, 100]) == 1
    assert hbm_waves([60] * 10, [100, 100]) == 4  # 600 + 2 x 60 slack over 200
    pb = build_problem(cluster(1, 1), DS27B, agentic_requests(3000, seed=1))
    assert pb.hbm_waves >= 2
    assert all(cap == pb.hbm_capacity_bytes[0] for cap in pb.hbm_capacity_bytes)


def test_weights_fall_back_to_every_de_gpu_when_a_group_cannot_hold_them():
    # DeepSeek-V3.2 in FP8 does not fit 8 x 80 GB: the shard spans all 32 DE GPUs of 2P4D.
    free = default_free_hbm_bytes(cluster(2, 4), DSV32)
    assert free == int(72e9 - DSV32.total_params / 32)


def test_engine_classes_group_interchangeable_engines():
    c = tiny_cluster(gpus=4)
    pb = build_problem(c, DS27B, [request("a", 64)], Backlog(pe_compute_s={"PE0": 1.0}))
    assert engine_classes(pb, Role.PREFILL) == [[1, 2, 3]]
    assert engine_classes(pb, Role.DECODE) == [[0, 1, 2, 3]]
