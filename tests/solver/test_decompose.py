import time

import pytest

from dualpath.solver import decompose, descent
from dualpath.solver.bound import lower_bound
from dualpath.solver.problem import Backlog, Loads, build_problem, fluid_bottleneck_s
from tests.solver.cases import DS27B, DSV32, agentic_requests, cluster


@pytest.mark.parametrize("split", [False, True])
def test_construct_then_improve_stays_feasible_and_never_gets_worse(split):
    backlog = Backlog(read_queue_bytes={"P0": 3e11, "D2": 1e11}, pe_compute_s={"PE3": 4.0})
    pb = build_problem(cluster(2, 4), DSV32, agentic_requests(400, seed=1), backlog)
    start = decompose.construct(pb, split)
    better = descent.improve(pb, start, split, time.perf_counter() + 1.0)
    assert fluid_bottleneck_s(pb, better) <= fluid_bottleneck_s(pb, start)
    assert Loads(pb, better).hbm_overflow() == []
    for r in range(pb.num_requests):
        assert 0 <= better.pe_read_bytes[r] <= pb.hit_bytes[r]
        if not split:
            assert better.pe_read_bytes[r] in (0, pb.hit_bytes[r])
    bound, _ = lower_bound(pb, split)
    assert fluid_bottleneck_s(pb, better) <= bound.value_s * 1.01


def test_split_reads_balance_two_snics_to_the_bound():
    pb = build_problem(cluster(1, 1), DS27B, agentic_requests(200, seed=2))
    sol = descent.solve(pb, True, 1.0)
    bound, _ = lower_bound(pb, True)
    assert fluid_bottleneck_s(pb, sol) == pytest.approx(bound.value_s, rel=1e-4)


def test_improve_stops_at_the_target():
    pb = build_problem(cluster(1, 1), DS27B, agentic_requests(100, seed=3))
    start = decompose.construct(pb, False)
    began = time.perf_counter()
    descent.improve(pb, start, False, time.perf_counter() + 30, target_s=fluid_bottleneck_s(pb, start) * 2)
    assert time.perf_counter() - began < 1
