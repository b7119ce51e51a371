"""A rollout plan as a policy: priorities reorder admission and batches, pins bend the rules' choices."""

import pytest

from dualpath.errors import InputError
from dualpath.policy import BatchItem
from dualpath.request import Request
from dualpath.rollout_plan import AgentDirective, RolloutPlan, RolloutSource, TurnPriority
from dualpath.solver.optimized import DualPathSRPTPolicy, OptimizedPolicy
from dualpath.solver.paper_rules import DualPathPolicy
from dualpath.solver.rollout_policy import RolloutPolicy, rules_policy
from tests.runtime.sim.cases import TOY_LLM
from tests.solver.test_policies import CLUSTER, KV, state

SOURCE = RolloutSource("toy", "toy", "agentic-64k", 4, 0)


def turn(agent: int, index: int = 0, hit: int = 1000, new: int = 100) -> Request:
    return Request(f"a{agent}t{index}", agent, index, hit, new, 10)


def test_the_rules_named_by_the_plan():
    assert type(rules_policy("dualpath", {}, CLUSTER, TOY_LLM)) is DualPathPolicy
    assert type(rules_policy("dualpath-srpt", {}, CLUSTER, TOY_LLM)) is DualPathSRPTPolicy
    opt = rules_policy("optimized", {"batch_order": "fifo", "lp": False}, CLUSTER, TOY_LLM)
    assert isinstance(opt, OptimizedPolicy) and opt.scheduler.options.batch_order == "fifo"
    assert opt.scheduler.options.budget_s is None  # reproducible: no wall-clock budget
    with pytest.raises(InputError, match="unknown"):
        rules_policy("optimized", {"speed": 2}, CLUSTER, TOY_LLM)
    with pytest.raises(InputError, match="take none"):
        rules_policy("dualpath", {"lp": False}, CLUSTER, TOY_LLM)


def test_without_directives_the_plan_decides_as_its_rules():
    pending = [turn(a) for a in range(4)]
    plain = DualPathPolicy(CLUSTER, TOY_LLM).schedule(pending, state())
    planned = RolloutPolicy(CLUSTER, TOY_LLM, RolloutPlan(SOURCE, "dualpath")).schedule(pending, state())
    assert planned == plain


def test_priorities_go_first_in_admission_and_in_batches():
    plan = RolloutPlan(SOURCE, "dualpath", (AgentDirective(0, 1), AgentDirective(1, 1)))
    policy = RolloutPolicy(CLUSTER, TOY_LLM, plan)
    out = policy.schedule([turn(a) for a in range(4)], state())
    assert [a.request for a in out] == ["a2t0", "a3t0", "a0t0", "a1t0"]
    queue = [BatchItem(f"a{a}t0", 1000, 100) for a in range(4)]
    assert [i.request for i in policy.form_batch(queue)][:2] == ["a2t0", "a3t0"]


def test_turn_rule_prefers_agents_with_many_turns_left():
    rule = TurnPriority(context_tokens=100_000, min_remaining_turns=50)
    policy = RolloutPolicy(CLUSTER, TOY_LLM, RolloutPlan(SOURCE, "dualpath", turn_priority=rule))
    policy.schedule([turn(0, 0, 0, 1000), turn(1, 0, 0, 1000)], state())  # first turns: their prompts noted
    # Agent 0 grew 90,000 tokens in one turn (1 left at most), agent 1 grew 1,000 (about 98 left).
    out = policy.schedule([turn(0, 1, 90_000, 1000), turn(1, 1, 1_000, 1000)], state())
    assert [a.request for a in out] == ["a1t1", "a0t1"]


def test_pins_bend_pe_group_de_and_read_split():
    plan = RolloutPlan(SOURCE, "dualpath", (AgentDirective(0, de="DE3", pe_read_fraction=0.25),
                                            AgentDirective(1, pe_read_fraction=1.0)))
    out = {a.request: a for a in RolloutPolicy(CLUSTER, TOY_LLM, plan, block_tokens=10).schedule(
        [turn(0, hit=1000), turn(1, hit=1000)], state())}
    assert out["a0t0"].de == "DE3"
    assert (out["a0t0"].pe_read_bytes, out["a0t0"].de_read_bytes) == (250 * KV, 750 * KV)
    assert (out["a1t0"].pe_read_bytes, out["a1t0"].de_read_bytes) == (1000 * KV, 0)


def test_dualpath_srpt_is_the_paper_rules_with_least_compute_first():
    srpt = DualPathSRPTPolicy(CLUSTER, TOY_LLM)
    pending = [turn(a) for a in range(3)]
    assert srpt.schedule(pending, state()) == DualPathPolicy(CLUSTER, TOY_LLM).schedule(pending, state())
    long, short = BatchItem("long", 50_000, 4000), BatchItem("short", 1000, 50)
    assert srpt.form_batch([long, short])[0].request == "short"
    assert DualPathPolicy(CLUSTER, TOY_LLM).form_batch([long, short])[0].request == "long"


def test_a_pinned_pe_group_takes_its_least_loaded_engine():
    from tests.runtime.sim.cases import toy_cluster

    two_groups = toy_cluster(2, 2, gpus=2, pe_group=2, de_group=2)  # PE0,1: group 0 on P0; PE2,3: group 1 on P1
    plan = RolloutPlan(SOURCE, "dualpath", (AgentDirective(0, pe_group=1), AgentDirective(1, pe_group=0)))
    out = {a.request: a for a in RolloutPolicy(two_groups, TOY_LLM, plan).schedule(
        [turn(0), turn(1)], state(pe_tokens=(0, 0, 9, 3), cluster=two_groups))}
    assert out["a0t0"].pe == "PE3" and out["a1t0"].pe in ("PE0", "PE1")
