import dataclasses

import pytest

from dualpath.plan import Assignment, Plan
from dualpath.solver.planner import assignments_of
from dualpath.solver.problem import Backlog, Solution, build_problem, fluid_bottleneck_s
from dualpath.solver.validate import check_plan, recompute_fluid_bottleneck_s
from tests.solver.cases import DS27B, request, tiny_cluster


def setup():
    pb = build_problem(tiny_cluster(1, 1, 2), DS27B, [request("a", 3072), request("b", 2048), request("c", 2048)],
                       Backlog(read_queue_bytes={"P0": 1e8}))
    sol = Solution([0, 1, 0], [1, 0, 0], [pb.hit_bytes[0], 0, pb.hit_bytes[2] // 2])
    t = fluid_bottleneck_s(pb, sol)
    plan = Plan("test", "feasible", assignments_of(pb, sol), t, t / 2, split_reads=True)
    return pb, plan


def constraints(pb, plan):
    return sorted({v.constraint for v in check_plan(pb, plan)})


def test_a_correct_plan_passes_and_its_fluid_bottleneck_is_recomputed_from_names():
    pb, plan = setup()
    assert check_plan(pb, plan) == []
    assert recompute_fluid_bottleneck_s(pb, plan)[0] == pytest.approx(plan.fluid_bottleneck_s, rel=1e-12)


def test_each_broken_rule_is_reported():
    pb, plan = setup()
    a0, a1, a2 = plan.assignments
    cases = {
        "assignment": [a0, a1],  # c missing
        "bytes": [a0, a1, dataclasses.replace(a2, de_read_bytes=a2.de_read_bytes + 1)],
    }
    for expected, rows in cases.items():
        bad = dataclasses.replace(plan, assignments=rows)
        assert expected in constraints(pb, bad)
    bad = dataclasses.replace(plan, assignments=[a0, a1, dataclasses.replace(a2, pe="DE0")])
    assert "assignment" in constraints(pb, bad)
    bad = dataclasses.replace(plan, assignments=[a0, a1, a1, a2])
    assert [v.subject for v in check_plan(pb, bad) if v.constraint == "assignment"] == ["b"]
    whole = dataclasses.replace(plan, split_reads=False)
    assert constraints(pb, whole) == ["whole_read"]
    shorter = dataclasses.replace(plan, fluid_bottleneck_s=plan.fluid_bottleneck_s * 0.99)
    assert constraints(pb, shorter) == ["fluid_bottleneck"]
    assert constraints(pb, dataclasses.replace(plan, lower_bound_s=plan.fluid_bottleneck_s * 1.01)) == ["bound"]
    assert "bytes" in constraints(pb, dataclasses.replace(plan, assignments=[
        Assignment("a", "PE0", "DE1", -1, pb.hit_bytes[0] + 1), a1, a2]))


def test_buffer_and_hbm_limits_are_checked():
    pb, plan = setup()
    small = dataclasses.replace(pb, pe_buffer_bytes=pb.hit_bytes[0] - 1)
    assert "pe_buffer" in constraints(small, plan)
    tight = dataclasses.replace(pb, hbm_capacity_bytes=(pb.context_bytes[0], pb.context_bytes[0]))
    bad = [v for v in check_plan(tight, plan) if v.constraint == "de_hbm"]
    assert [v.subject for v in bad] == ["DE0"] and "1 wave" in bad[0].detail
