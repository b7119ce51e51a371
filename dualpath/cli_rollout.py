"""`dualpath plan --rollout` and `dualpath simulate --plan ROLLOUT.json`: rollout plans, judged by execution.

The composition root for rollout planning: the planner (`solver.rollout_planner`) chooses among candidate
plans by executing them through a callback that runs the simulator here, on independent samples of the
workload (another seed) or, with `--clairvoyant`, on the true rollout. The chosen plan is then executed
on the true rollout (`executed_jct_s`), beside the online `dualpath` and `optimized` policies on the same
rollout (`baselines`) and the certified bound on any execution (`lower_bound_s`, 13's rollout bound).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from dualpath import flags
from dualpath.errors import SpecError
from dualpath.table import format_table

SAMPLE_SEED_STRIDE = 1000  # sample k of a rollout with seed s uses seed s + 1000 (k + 1): never the truth's


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `dualpath plan --rollout` adds to `dualpath plan`'s."""
    parser.add_argument("--rollout", action="store_true",
                        help="plan a whole rollout (every agent's turns) instead of one batch")
    parser.add_argument("--agents", type=flags.agents, default=None, help="with --rollout: agents (default 500)")
    parser.add_argument("--clairvoyant", action="store_true",
                        help="with --rollout: let the planner see the true later turns (default: first turns "
                             "and independent samples of the workload only)")
    parser.add_argument("--samples", type=flags.integer(1, 1_000), default=1,
                        help="with --rollout: independent samples the candidates are judged on (default 1)")


def sample_seeds(seed: int, samples: int) -> list[int]:
    return [seed + SAMPLE_SEED_STRIDE * (k + 1) for k in range(samples)]


def rollout_simulator(cluster, llm, seed: int) -> Callable[[Any, Any], float]:
    """`simulate(workload, plan) -> executed JCT`, the callback the planner judges candidates with."""
    from dualpath.runtime.sim.simulator import simulate
    from dualpath.solver.rollout_policy import RolloutPolicy

    def executed_jct_s(workload, plan) -> float:
        policy = RolloutPolicy(cluster, llm, plan, plan.source.block_tokens)
        return simulate(cluster, llm, workload, policy, seed=seed, progress=False).metrics().jct_s

    return executed_jct_s


def make_rollout_plan(cluster_name: str, model_name: str, workload_name: str, agents: int, seed: int, *,
                      clairvoyant: bool = False, samples: int = 1, options=None,
                      simulate: Callable[[Any, Any], float] | None = None):
    """Plan, execute and bound one rollout: the `RolloutPlan` with every result field filled in."""
    from dualpath.calibration import PAPER_CALIBRATION, calibrated_llm
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.rollout_plan import RolloutSource
    from dualpath.solver.rollout_bound import rollout_lower_bound
    from dualpath.solver.rollout_planner import BASELINE_RULES, plan_rollout

    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        raise SpecError("--agents", "agents", agents, "a positive integer")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise SpecError("--samples", "samples", samples, "a positive integer")
    cluster, raw_llm = resolve_cluster(cluster_name), resolve_model(model_name)
    llm = calibrated_llm(raw_llm)  # policies predict with the cost model the simulator runs
    truth = resolve_workload(workload_name, agents=agents, seed=seed)
    source = RolloutSource(cluster_name, model_name, workload_name, agents, seed)
    run = simulate or rollout_simulator(cluster, llm, seed)
    seeds = [] if clairvoyant else sample_seeds(seed, samples)
    evaluation = [truth] if clairvoyant else [resolve_workload(workload_name, agents=agents, seed=s) for s in seeds]
    planning = plan_rollout(source, truth.first_turns(), evaluation, run, clairvoyant=clairvoyant, options=options)
    plan = planning.plan
    on_truth = planning.sample_jct_s if clairvoyant else {}
    executed = on_truth[plan.candidate][0] if clairvoyant else run(truth, plan)
    baselines = {}
    for rules in BASELINE_RULES:  # each baseline is the plan of its online rules alone: the same execution
        baselines[rules] = on_truth[rules][0] if clairvoyant else run(truth, type(plan)(source, rules))
    bound = rollout_lower_bound(cluster, raw_llm, truth.requests, PAPER_CALIBRATION, source.block_tokens)
    meta = dict(plan.meta) | {"sample_seeds": seeds, "bound_binding": bound.binding, "bound_terms_s": bound.terms_s}
    return plan.with_results(executed_jct_s=executed, lower_bound_s=bound.value_s, baselines=baselines, meta=meta)


def plan_command(args: argparse.Namespace) -> int:
    """`dualpath plan --rollout ...`."""
    plan = make_rollout_plan(args.cluster, args.model, args.workload, 500 if args.agents is None else args.agents,
                             args.seed, clairvoyant=args.clairvoyant, samples=args.samples)
    _print_plan(plan)
    if args.json:
        plan.save(args.json)
        if args.json != "-":
            print(f"wrote {args.json}")
    return 0


def _print_plan(plan) -> None:
    best = min(plan.baselines.values()) if plan.baselines else None
    gap = plan.gap
    rows: list[tuple[str, object]] = [
        ("rollout", f"{plan.source.cluster} {plan.source.model} {plan.source.workload}, "
                    f"{plan.source.agents} agents, seed {plan.source.seed}"),
        ("knowledge", plan.knowledge), ("plan", plan.candidate),
        ("executed JCT (s)", plan.executed_jct_s),
        *((f"online {name} JCT (s)", jct) for name, jct in plan.baselines.items()),
        ("gain vs better online", f"{1 - plan.executed_jct_s / best:.2%}" if best and plan.executed_jct_s else "-"),
        ("lower bound (s)", plan.lower_bound_s),
        ("bound set by", plan.meta.get("bound_binding", "-")),
        ("gap to bound", f"{gap:.1%}" if gap is not None else "-"),
        ("solve time (s)", plan.solve_time_s),
        ("solve CPU time (s)", plan.meta.get("solve_cpu_s", "-"))]
    print(format_table(("rollout plan", "value"), rows))


def is_rollout_plan(path: str) -> bool:
    """Whether `path` holds a rollout plan (any other document, or none, is left to the batch plan reader)."""
    from dualpath.jsonio import read_json
    from dualpath.rollout_plan import ROLLOUT_PLAN_KIND

    try:
        data = read_json(path)
    except Exception:  # the batch plan reader reports an unreadable file in its own words
        return False
    return isinstance(data, dict) and data.get("kind") == ROLLOUT_PLAN_KIND


def rollout_policy_of(path: str, cluster, llm, block_tokens: int):
    """For `dualpath run --plan`: the rollout plan at `path` as a policy on this run's engines (its rules and
    per-agent directives; agents are matched by id), or None when `path` holds another kind of plan."""
    if not is_rollout_plan(path):
        return None
    from dualpath.rollout_plan import RolloutPlan
    from dualpath.solver.rollout_policy import RolloutPolicy

    return RolloutPolicy(cluster, llm, RolloutPlan.load(path), block_tokens)


def replay_command(args: argparse.Namespace) -> int:
    """`dualpath simulate --plan ROLLOUT.json`: execute the plan on the rollout it records."""
    from dualpath.calibration import calibrated_llm
    from dualpath.jsonio import versioned, write_json_atomic
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.rollout_plan import RolloutPlan

    plan = RolloutPlan.load(args.plan)
    src = plan.source
    cluster, llm = resolve_cluster(src.cluster), calibrated_llm(resolve_model(src.model))
    truth = resolve_workload(src.workload, agents=src.agents, seed=src.seed)
    jct = rollout_simulator(cluster, llm, src.seed)(truth, plan)
    recorded = plan.executed_jct_s
    diff = abs(jct / recorded - 1) if recorded else None
    rows = [("rollout", f"{src.cluster} {src.model} {src.workload}, {src.agents} agents, seed {src.seed}"),
            ("plan", plan.candidate or plan.rules), ("executed JCT (s)", jct),
            ("plan's executed_jct_s", recorded if recorded is not None else "-"),
            ("difference", f"{diff:.3%}" if diff is not None else "-")]
    print(format_table(("replay", "value"), rows))
    if args.json:
        payload = {"cluster": src.cluster, "model": src.model, "workload": src.workload, "agents": src.agents,
                   "seed": src.seed, "plan": plan.candidate or plan.rules, "executed_jct_s": jct,
                   "recorded_executed_jct_s": recorded, "relative_difference": diff}
        write_json_atomic(args.json, versioned("rollout-replay", payload))
    return 0
