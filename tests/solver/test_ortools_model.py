"""CP-SAT, pywraplp (SCIP) and GLOP: hand-solved optimum, agreement with PuLP, certified bounds."""

import random

import pytest

from dualpath.solver import ortools_mip, ortools_model, pulp_model
from dualpath.solver.bound import fluid_bound, lower_bound, relaxation
from dualpath.solver.problem import Backlog, build_problem, fluid_bottleneck_s
from tests.solver.cases import DS27B, agentic_requests, request, tiny_cluster

KV = DS27B.kv_bytes_per_token


def hand_problem():
    """One PE, one DE, equal SNICs: only the read side matters. Hits 3, 2, 2 (x 1024 tokens)."""
    return build_problem(tiny_cluster(), DS27B, [request("a", 3072), request("b", 2048), request("c", 2048)])


@pytest.mark.parametrize("solve", [
    lambda pb, split: ortools_model.solve_cpsat(pb, split, 10),
    lambda pb, split: ortools_mip.solve_mip(pb, split, 10),
])
def test_hand_solved_three_requests(solve):
    pb = hand_problem()
    whole = solve(pb, False)
    assert whole.status == "optimal"
    # Best partition of {3, 2, 2}: {3} | {2, 2} -> 4096 tokens on one SNIC.
    assert fluid_bottleneck_s(pb, whole.solution) == pytest.approx(4096 * KV / 50e9, rel=1e-9)
    split = solve(pb, True)
    assert split.status == "optimal"
    assert fluid_bottleneck_s(pb, split.solution) == pytest.approx(3584 * KV / 50e9, rel=1e-6)
    assert 0 < whole.bound_s <= fluid_bottleneck_s(pb, whole.solution)


def test_cpsat_and_pulp_reach_the_same_optimum_on_small_instances():
    for seed, (p_nodes, d_nodes, gpus) in enumerate([(1, 1, 2), (1, 2, 2), (2, 1, 1)]):
        reqs = agentic_requests(8, seed=seed, max_context=16384)
        pb = build_problem(tiny_cluster(p_nodes, d_nodes, gpus, cnic_gbps=400.0), DS27B, reqs,
                           Backlog(read_queue_bytes={"P0": 2e8}))
        for split in (False, True):
            cp = ortools_model.solve_cpsat(pb, split, 20)
            cbc = pulp_model.solve_mip(pb, split, 20, backend="cbc")
            highs = pulp_model.solve_mip(pb, split, 20, backend="highs")
            assert cp.status == cbc.status == highs.status == "optimal"
            ref = fluid_bottleneck_s(pb, cp.solution)
            assert fluid_bottleneck_s(pb, cbc.solution) == pytest.approx(ref, rel=1e-6)
            assert fluid_bottleneck_s(pb, highs.solution) == pytest.approx(ref, rel=1e-6)
            assert cp.bound_s <= ref * (1 + 1e-12)


@pytest.mark.slow
def test_hint_is_accepted_and_time_limit_returns_something():
    pb = build_problem(tiny_cluster(1, 1, 4), DS27B, agentic_requests(20, seed=4))
    res = ortools_model.solve_cpsat(pb, False, 0.2)
    assert res.status in ("optimal", "feasible", "unknown")
    first = ortools_model.solve_cpsat(pb, False, 5)
    hinted = ortools_model.solve_cpsat(pb, False, 0.5, hint=first.solution)
    assert hinted.solution is not None
    assert fluid_bottleneck_s(pb, hinted.solution) <= fluid_bottleneck_s(pb, first.solution) * (1 + 1e-9)


def test_lp_relaxation_bounds_every_plan_and_beats_fluid_with_uneven_backlogs():
    reqs = agentic_requests(30, seed=5)
    backlog = Backlog(read_queue_bytes={"P0": 4e10, "D0": 0.0}, pe_compute_s={"PE0": 0.5})
    pb = build_problem(tiny_cluster(2, 2, 2, cnic_gbps=400.0), DS27B, reqs, backlog)
    relax = relaxation(pb)
    assert len(relax.pe_classes) == 2
    lp = ortools_model.solve_relaxation(relax, 5)
    lp_pulp = pulp_model.solve_relaxation(relax, 5)
    assert lp.status == lp_pulp.status == "optimal"
    assert lp.value_s == pytest.approx(lp_pulp.value_s, rel=1e-6)
    assert lp.value_s >= fluid_bound(pb).value_s * (1 - 1e-9)
    best, bounds = lower_bound(pb)
    assert any(b.kind == "lp" for b in bounds)
    exact = ortools_model.solve_cpsat(pb, True, 10)
    assert best.value_s <= fluid_bottleneck_s(pb, exact.solution) * (1 + 1e-12)


@pytest.mark.parametrize("seed", range(24))
def test_integral_read_bound_is_the_best_whole_read_split_of_the_pooled_fluid(seed):
    """Brute force over every PE/DE side assignment: the integral bound is their minimum, never above
    it (a missed achievable total just above the continuous optimum once made it invalid)."""
    import itertools

    from dualpath.solver.bound import fluid_at, integral_read_bound

    rng = random.Random(seed)
    # Hits on a 64-token grid and few requests, so that exact ties with the fluid optimum happen.
    # Read-bound (slow SNICs, one-token appends) on 1P2D: the PE side's optimum is a third of the hits.
    reqs = [request(f"r{i}", 64 * rng.randint(1, 6), 1) for i in range(rng.randint(2, 9))]
    pb = build_problem(tiny_cluster(1, 2, snic_gbps=1.0), DS27B, reqs)
    best = min(fluid_at(pb, sum(h for h, on_pe in zip(pb.hit_bytes, sides) if on_pe))[0]
               for sides in itertools.product((False, True), repeat=len(reqs)))
    bound = integral_read_bound(pb)
    assert bound is not None and bound.value_s == pytest.approx(best, rel=1e-12)
