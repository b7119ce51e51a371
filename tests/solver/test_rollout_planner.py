"""Choosing a rollout plan: candidates judged by the caller's executions, never by the truth by default."""

import pytest

from dualpath.errors import SpecError
from dualpath.request import Request, Workload
from dualpath.rollout_plan import RolloutSource
from dualpath.solver.rollout_planner import PlannerOptions, candidates, plan_rollout

SOURCE = RolloutSource("1P1D", "ds-27b", "agentic-64k", 3, 0)


def rollout(name: str, turns=(3, 1, 2)) -> Workload:
    reqs = [Request(f"a{a}t{t}", a, t, 64 * t, 10, 5) for a, n in enumerate(turns) for t in range(n)]
    return Workload(name, tuple(reqs))


def fake(jcts: dict[str, dict[str, float]], seen: list):
    """simulate(workload, plan) from a table: candidate -> workload name -> JCT."""
    def simulate(workload, plan):
        seen.append((workload.name, plan.candidate))
        return jcts[plan.candidate][workload.name]
    return simulate


def test_default_mode_judges_on_the_samples_only_and_needs_the_margin_everywhere():
    truth, samples = rollout("truth"), [rollout("s1"), rollout("s2")]
    seen = []
    jct = {"optimized": {"s1": 100.0, "s2": 100.0}, "dualpath": {"s1": 110.0, "s2": 90.0},
           "optimized+turns>=50": {"s1": 95.0, "s2": 89.5}}
    planning = plan_rollout(SOURCE, truth.first_turns(), samples, fake(jct, seen))
    assert {w for w, _ in seen} == {"s1", "s2"}  # the truth is never executed while planning
    # s2: 89.5 is under the better online rules (90) by less than 1%: not chosen; optimized has the best mean.
    assert planning.plan.candidate == "optimized" and planning.plan.knowledge == "first-turns"
    jct["optimized+turns>=50"]["s2"] = 85.0
    assert plan_rollout(SOURCE, truth.first_turns(), samples, fake(jct, [])).plan.candidate == "optimized+turns>=50"
    loose = PlannerOptions(margin=0.0)
    jct["optimized+turns>=50"]["s2"] = 89.5
    assert plan_rollout(SOURCE, truth.first_turns(), samples, fake(jct, []), options=loose).plan.turn_priority


def test_clairvoyant_judges_on_the_truth_with_chain_priorities():
    truth = rollout("truth")
    options = PlannerOptions(chain_fractions=(0.25, 0.5))
    names = [c.candidate for c in candidates(SOURCE, "clairvoyant", 1000, options, truth)]
    assert names == ["optimized", "dualpath", "optimized+turns>=50", "optimized+longest0.25", "optimized+longest0.5"]
    jct = {n: {"truth": 100.0} for n in names} | {"optimized+longest0.25": {"truth": 99.9}}
    plan = plan_rollout(SOURCE, truth.first_turns(), [truth], fake(jct, []), clairvoyant=True, options=options).plan
    assert plan.candidate == "optimized+longest0.25" and plan.knowledge == "clairvoyant"
    assert {d.agent: d.priority for d in plan.agents} == {0: 0, 1: 1, 2: 1}  # agent 0 has the longest chain
    assert plan.meta["candidates_jct_s"]["dualpath"] == [100.0] and plan.solve_time_s >= 0


def test_bad_inputs():
    truth = rollout("truth")
    with pytest.raises(SpecError, match="evaluation"):
        plan_rollout(SOURCE, truth.first_turns(), [], fake({}, []))
    with pytest.raises(SpecError, match="exactly the true rollout"):
        plan_rollout(SOURCE, truth.first_turns(), [truth, truth], fake({}, []), clairvoyant=True)
    with pytest.raises(SpecError, match="one first turn per agent"):
        plan_rollout(SOURCE, list(truth.requests), [truth], fake({}, []))
