"""make_plan end to end: every solver, hand-solved optimum, invariants on generated instances, bad input."""

import json
import sys
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualpath.errors import MissingExtraError, UnknownNameError
from dualpath.plan import Plan
from dualpath.solver.planner import SOLVERS, PlannerWarning, make_plan, plan_with_problem, write_plan_outputs
from dualpath.solver.problem import Backlog, build_problem
from dualpath.solver.validate import check_plan
from tests.solver.cases import DS27B, DSV32, agentic_requests, cluster, request, tiny_cluster

KV = DS27B.kv_bytes_per_token
HAND = [request("a", 3072), request("b", 2048), request("c", 2048)]


@pytest.mark.parametrize("solver", ["ortools", "ortools-mip", "pulp", "pulp-highs"])
def test_hand_solved_instance_reaches_the_known_optimum(solver):
    for split, tokens in ((False, 4096), (True, 3584)):
        plan, pb, _ = plan_with_problem(tiny_cluster(), DS27B, HAND, solver, split_reads=split, time_limit_s=10)
        assert plan.status == "optimal"
        assert plan.fluid_bottleneck_s == pytest.approx(tokens * KV / 50e9, rel=1e-6)
        assert check_plan(pb, plan) == []
        assert plan.fluid_bottleneck_s <= plan.greedy_fluid_bottleneck_s


def test_plan_json_has_the_documented_keys(tmp_path):
    plan = make_plan(tiny_cluster(1, 1, 2), DS27B, agentic_requests(12, seed=1), "ortools", time_limit_s=5)
    plan.save(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    for key in ("solver", "status", "fluid_bottleneck_s", "lower_bound_s", "gap", "solve_time_s",
                "greedy_fluid_bottleneck_s"):
        assert key in data
    for key in ("request", "pe", "de", "pe_read_bytes", "de_read_bytes"):
        assert key in data["assignments"][0]
    assert Plan.load(tmp_path / "plan.json").fluid_bottleneck_s == plan.fluid_bottleneck_s


def test_outputs_chart_and_explanations(tmp_path):
    pytest.importorskip("matplotlib")
    plan, pb, _ = plan_with_problem(cluster(1, 1), DS27B, agentic_requests(40, seed=2), "ortools", time_limit_s=2)
    paths = write_plan_outputs(tmp_path, pb, plan)
    assert sorted(p.name for p in paths) == ["explanation.md", "loads.png"]
    assert (tmp_path / "loads.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "explanation.md").read_text()
    assert "Binding" in text and "| r0 |" in text


def test_medium_batch_is_decomposed_close_to_the_bound_and_beats_greedy():
    plan, pb, _ = plan_with_problem(cluster(2, 4), DSV32, agentic_requests(300, seed=3), "ortools",
                                    time_limit_s=2)
    assert check_plan(pb, plan) == []
    assert plan.gap <= 0.005
    assert plan.fluid_bottleneck_s <= plan.greedy_fluid_bottleneck_s


def test_time_limit_returns_the_best_plan_so_far():
    plan, pb, _ = plan_with_problem(tiny_cluster(1, 1, 4), DS27B, agentic_requests(30, seed=4), "ortools",
                                    time_limit_s=0.05, exact=True)
    assert check_plan(pb, plan) == []
    assert plan.gap >= 0 and plan.fluid_bottleneck_s <= plan.greedy_fluid_bottleneck_s
    assert plan.solve_time_s < 5


@pytest.mark.parametrize("limit_s", [0.05, 0.1])
def test_time_limit_bounds_the_whole_call_and_the_cut_plan_says_so(limit_s):
    """The greedy alone takes longer than these limits here (4,000 requests on 8P16D): every phase,
    the greedy included, stops at the deadline; the call returns within 10% + 1 s of the limit."""
    requests = agentic_requests(4000, seed=11)
    started = time.perf_counter()
    plan, pb, _ = plan_with_problem(cluster(8, 16), DSV32, requests, "ortools", time_limit_s=limit_s)
    wall_s = time.perf_counter() - started
    assert wall_s <= 1.1 * limit_s + 1.0
    assert plan.status == "fallback" and any(n.startswith("time limit") for n in plan.meta["notes"])
    assert check_plan(pb, plan) == [] and len(plan.assignments) == len(requests)
    assert plan.lower_bound_s <= plan.fluid_bottleneck_s


def test_pulp_beyond_its_size_is_decomposed_with_a_warning():
    with pytest.warns(PlannerWarning, match="binaries exceed"):
        plan = make_plan(cluster(2, 4), DSV32, agentic_requests(200, seed=5), "pulp", time_limit_s=1, exact=True)
    assert plan.meta["method"] == "decomposition" and plan.meta["notes"]


def test_unknown_solver_and_missing_backend(monkeypatch):
    with pytest.raises(UnknownNameError, match="ortools"):
        make_plan(tiny_cluster(), DS27B, HAND, "gurobi")
    monkeypatch.setitem(sys.modules, "ortools.sat.python.cp_model", None)
    with pytest.raises(MissingExtraError, match=r"install the 'solver' extra"):
        make_plan(tiny_cluster(), DS27B, HAND, "ortools")
    monkeypatch.setitem(sys.modules, "pulp", None)
    with pytest.raises(MissingExtraError, match="pulp"):
        make_plan(tiny_cluster(), DS27B, HAND, "pulp")


def test_greedy_solver_is_the_paper_rules():
    plan = make_plan(cluster(1, 1), DS27B, agentic_requests(50, seed=6), "greedy")
    assert plan.status == "greedy" and plan.meta["method"] == "paper-rules"
    assert all(a.path in ("pe", "de") for a in plan.assignments)


# ---- invariants on generated instances -----------------------------------------------------------
@st.composite
def instances(draw):
    gpus = draw(st.integers(1, 3))
    c = tiny_cluster(draw(st.integers(1, 2)), draw(st.integers(1, 2)), gpus,
                     cnic_gbps=draw(st.sampled_from([100.0, 400.0, 3200.0])))
    n = draw(st.integers(1, 7))
    reqs = [request(f"r{i}", draw(st.integers(0, 600)) * 64, draw(st.integers(1, 2000)),
                    draw(st.integers(1, 300)), agent=i) for i in range(n)]
    nodes = c.all_nodes()
    backlog = Backlog(read_queue_bytes={m: draw(st.floats(0, 5e9)) for m in nodes if draw(st.booleans())},
                      pe_compute_s={f"PE{p}": draw(st.floats(0, 0.5)) for p in range(c.num_pe) if draw(st.booleans())})
    return c, reqs, backlog


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.sampled_from(["ortools", "pulp-highs", "greedy"]), st.booleans())
def test_generated_instances_yield_valid_plans(instance, solver, split):
    c, reqs, backlog = instance
    plan, pb, _ = plan_with_problem(c, DS27B, reqs, solver, split_reads=split, time_limit_s=3, backlog=backlog)
    assert check_plan(pb, plan) == []
    assert plan.gap >= 0 and plan.lower_bound_s >= 0
    # Every bound computed, not only the reported one (which is clamped to the fluid bottleneck time), is valid:
    # an invalid integral-read bound once hid behind the clamp.
    for bound in plan.meta["bounds"]:
        assert bound["value_s"] <= plan.fluid_bottleneck_s * (1 + 1e-9), bound
    if solver == "ortools" and len(reqs) <= 4:  # exact optimum: no bound above it either
        from dualpath.solver.ortools_model import solve_cpsat
        from dualpath.solver.problem import fluid_bottleneck_s

        exact = solve_cpsat(pb, split, 10)
        if exact.status == "optimal":
            assert max(b["value_s"] for b in plan.meta["bounds"]) <= fluid_bottleneck_s(pb, exact.solution) * (1 + 1e-9)
    assert plan.fluid_bottleneck_s <= plan.greedy_fluid_bottleneck_s * (1 + 1e-12)
    for a, r in zip(plan.assignments, pb.requests):
        assert a.pe_read_bytes + a.de_read_bytes == r.hit_tokens * KV  # bytes conserved
        if not split:
            assert a.path in ("pe", "de", "none")


def test_solver_names_are_listed():
    assert set(SOLVERS) >= {"ortools", "pulp", "greedy"}
    assert build_problem(tiny_cluster(), DS27B, HAND).num_requests == 3


@pytest.mark.parametrize("seed", range(3))
def test_split_plans_are_never_above_whole_plans_and_resplit_only_improves(seed):
    """Beyond the exact model's size (decomposition): the split plan starts from the whole-read
    descents too and is re-split by the LP, so it is never above the whole-read plan."""
    import random

    from dualpath.solver.problem import Loads
    from dualpath.solver.resplit import resplit

    rng = random.Random(seed)
    c = cluster(2, 4)
    reqs = agentic_requests(64, seed=seed)
    backlog = Backlog(read_queue_bytes={n: rng.uniform(0, 20e9) for n in c.all_nodes()})
    whole, _, _ = plan_with_problem(c, DS27B, reqs, "ortools", False, 3, backlog)
    split, pb, sol = plan_with_problem(c, DS27B, reqs, "ortools", True, 3, backlog)
    assert split.fluid_bottleneck_s <= whole.fluid_bottleneck_s * (1 + 1e-12)
    assert check_plan(pb, split) == []
    again = resplit(pb, sol)
    if again is not None:
        assert Loads(pb, again).fluid_bottleneck_s() < split.fluid_bottleneck_s
        assert all(a % KV == 0 and 0 <= a <= pb.pe_read_cap_bytes(r) for r, a in enumerate(again.pe_read_bytes))


def test_resplit_halves_a_single_read_bound_request():
    from dualpath.solver.problem import Loads, Solution
    from dualpath.solver.resplit import resplit

    pb = build_problem(tiny_cluster(), DS27B, [request("a", 4096)])
    whole = Solution([0], [0], [0])
    better = resplit(pb, whole)
    assert better is not None and better.pe_read_bytes == [2048 * KV]
    assert Loads(pb, better).fluid_bottleneck_s() == pytest.approx(Loads(pb, whole).fluid_bottleneck_s() / 2, rel=1e-9)
    assert resplit(pb, better) is None  # already the best split: nothing to improve


@pytest.mark.slow
@pytest.mark.parametrize("split", [False, True])
def test_compute_bound_plans_spread_reads_over_both_paths(split):
    """Slow compute: any read side gives the same fluid bottleneck time; the plan evens out the SNICs anyway."""
    from dualpath.llm import CostModel
    from dualpath.solver.problem import Loads
    from dualpath.solver.resplit import balance_reads

    slow = replace(DS27B, cost=CostModel(prefill_mfu=0.001))
    c = cluster(1, 2)
    plan, pb, sol = plan_with_problem(c, slow, agentic_requests(40, seed=3), "ortools", split, 3)
    loads = Loads(pb, sol)
    assert loads.binding()[0] == "pe_compute" and check_plan(pb, plan) == []
    snic = [loads.time_s("snic", n) for n in range(pb.num_nodes)]
    assert 0 < sum(sol.pe_read_bytes) < sum(pb.hit_bytes)
    if split:  # engines fixed, the LP's balance: no node can take more off the busiest ones
        assert max(snic) < 0.5 * sum(pb.hit_bytes) / pb.snic_bytes_per_s[0]
        assert balance_reads(pb, sol, True) is sol or Loads(pb, balance_reads(pb, sol, True)).family_max(
            "snic")[0] >= max(snic) * (1 - 1e-6)
    else:  # within one request's read of the mean
        assert max(snic) - sum(snic) / len(snic) <= max(pb.hit_bytes) / pb.snic_bytes_per_s[0]


def test_a_crashing_backend_leaves_the_best_other_plan(monkeypatch):
    import pulp

    def crash(self, *args, **kwargs):
        raise pulp.PulpSolverError("Pulp: Error while trying to execute cbc")

    monkeypatch.setattr(pulp.LpProblem, "solve", crash)
    plan, pb, _ = plan_with_problem(tiny_cluster(1, 1, 2), DS27B, agentic_requests(12, seed=2), "pulp",
                                    time_limit_s=5, exact=True)
    assert check_plan(pb, plan) == [] and plan.fluid_bottleneck_s <= plan.greedy_fluid_bottleneck_s
    assert any("crashed" in n for n in plan.meta["notes"])


def test_whole_reads_partitioned_over_nodes_meet_the_bound_without_a_mip():
    """Reads decide (slow SNICs, one-token appends): 1P2D's three SNICs must share hits 6+2 | 5+3 | 4+4."""
    from dualpath.solver.partition import integral_read_nodes

    reqs = [request(f"r{i}", 1024 * h) for i, h in enumerate((6, 5, 4, 4, 3, 2))]
    pb = build_problem(tiny_cluster(1, 2, snic_gbps=1.0), DS27B, reqs)
    nodes = integral_read_nodes(pb)
    per_node = {}
    for r, n in nodes.items():
        per_node[n] = per_node.get(n, 0) + pb.hit_bytes[r]
    assert sorted(per_node.values()) == [8 * 1024 * KV] * 3
    for solver in ("pulp", "pulp-highs", "ortools"):
        plan, pb, _ = plan_with_problem(tiny_cluster(1, 2, snic_gbps=1.0), DS27B, reqs, solver, False, 10, exact=True)
        assert plan.status == "optimal" and plan.fluid_bottleneck_s == pytest.approx(8 * 1024 * KV / 0.125e9, rel=1e-9)
        assert check_plan(pb, plan) == []
