"""Rollout planning: choose, by executing them, the plan an executor follows for a whole rollout.

A candidate is a `RolloutPlan`: online rules (`dualpath` or `optimized`) plus what the plan fixes on top
(a per-turn priority rule; with clairvoyance, per-agent priorities from the true chain lengths). Each
candidate is executed by the caller's `simulate` callback (the CLI wires the simulator in: `solver`
never imports `runtime`) on the evaluation rollouts, and the plan is the candidate with the lowest
executed JCT, judged as follows:
- default knowledge: the evaluation rollouts are independent samples of the workload (another seed:
  the statistics, never the true later turns). The better online rules on the samples (by mean JCT)
  is the fallback; another candidate replaces it only if it beats the better online rules on EVERY
  sample by `margin` (a plan that wins by noise on the sample could lose on the truth);
- clairvoyant: the one evaluation rollout is the truth itself, so the least executed JCT wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from dualpath.errors import SpecError
from dualpath.request import Request, Workload, by_agent
from dualpath.rollout_plan import AgentDirective, RolloutPlan, RolloutSource, TurnPriority

SimulateRollout = Callable[[Workload, RolloutPlan], float]  # executed JCT (s) of a plan on a rollout
BASELINE_RULES = ("optimized", "dualpath")  # the online policies a plan must never lose to


@dataclass(frozen=True)
class PlannerOptions:
    # Turn rule thresholds tried: a turn goes first when its agent has at least this many turns left.
    min_remaining_turns: tuple[float, ...] = (50.0,)
    margin: float = 0.01  # default knowledge: the win on every sample a candidate needs over the online rules
    # Clairvoyant only: the fractions of agents with the longest true chains given priority 0.
    chain_fractions: tuple[float, ...] = (0.5,)


@dataclass(frozen=True)
class RolloutPlanning:
    """The chosen plan and every candidate's executed JCT on each evaluation rollout."""

    plan: RolloutPlan
    sample_jct_s: dict[str, list[float]]  # candidate -> JCT per evaluation rollout


def context_tokens_of(workloads: Sequence[Workload]) -> int:
    """The largest context any turn reaches: the workload's context limit, as its statistics show it."""
    return max((r.context_tokens for w in workloads for r in w.requests), default=1)


def candidates(source: RolloutSource, knowledge: str, context_tokens: int, options: PlannerOptions,
               truth: Workload | None = None) -> list[RolloutPlan]:
    """The plans tried: each online rule set alone, `optimized` with each turn rule, and (clairvoyant,
    given `truth`) `optimized` with the longest true chains first."""
    out = [RolloutPlan(source, rules, knowledge=knowledge, candidate=rules) for rules in BASELINE_RULES]
    for threshold in options.min_remaining_turns:
        rule = TurnPriority(context_tokens, threshold)
        out.append(RolloutPlan(source, "optimized", turn_priority=rule, knowledge=knowledge,
                               candidate=f"optimized+turns>={threshold:g}"))
    if knowledge == "clairvoyant" and truth is not None:
        chains = by_agent(truth.requests)
        longest = sorted(chains, key=lambda a: (-len(chains[a]), a))
        for fraction in options.chain_fractions:
            first = set(longest[:max(1, round(fraction * len(longest)))])
            directives = tuple(AgentDirective(a, 0 if a in first else 1) for a in sorted(chains))
            out.append(RolloutPlan(source, "optimized", directives, knowledge=knowledge,
                                   candidate=f"optimized+longest{fraction:g}"))
    return out


def plan_rollout(source: RolloutSource, first_turns: Sequence[Request], evaluation: Sequence[Workload],
                 simulate: SimulateRollout, *, clairvoyant: bool = False,
                 options: PlannerOptions | None = None) -> RolloutPlanning:
    """Plan the rollout whose agents start with `first_turns`.

    `evaluation`: independent samples of the workload (default knowledge), or the true rollout alone
    (`clairvoyant`). `solve_time_s` (wall) and `meta["solve_cpu_s"]` (this process's CPU) count everything
    here, the candidates' executions included.
    """
    options = options or PlannerOptions()
    started, started_cpu = time.perf_counter(), time.process_time()
    if not evaluation:
        raise SpecError("plan_rollout", "evaluation", 0, "at least one sample rollout")
    if clairvoyant and len(evaluation) != 1:
        raise SpecError("plan_rollout", "evaluation", len(evaluation), "exactly the true rollout when clairvoyant")
    agents = {r.agent for r in first_turns}
    if len(agents) != len(first_turns):
        raise SpecError("plan_rollout", "first_turns", len(first_turns), "one first turn per agent")
    knowledge = "clairvoyant" if clairvoyant else "first-turns"
    tried = candidates(source, knowledge, context_tokens_of(evaluation), options,
                       evaluation[0] if clairvoyant else None)
    jct = {c.candidate: [simulate(w, c) for w in evaluation] for c in tried}
    chosen = _choose(tried, jct, 0.0 if clairvoyant else options.margin)
    # CPU seconds beside the wall time: on a shared machine the wall time says more about the neighbours.
    meta = {"solve_cpu_s": time.process_time() - started_cpu,
            "candidates_jct_s": jct, "margin": 0.0 if clairvoyant else options.margin,
            "evaluation": "true rollout" if clairvoyant else f"{len(evaluation)} independent sample(s)"}
    plan = replace(chosen, solve_time_s=time.perf_counter() - started, meta=meta)
    return RolloutPlanning(plan, jct)


def _choose(tried: Sequence[RolloutPlan], jct: dict[str, list[float]], margin: float) -> RolloutPlan:
    def mean(name: str) -> float:
        return sum(jct[name]) / len(jct[name])

    baselines = [c for c in tried if c.candidate in BASELINE_RULES]
    best = min(baselines, key=lambda c: (mean(c.candidate), BASELINE_RULES.index(c.candidate)))  # ties: optimized
    floor = [min(jct[b.candidate][i] for b in baselines) for i in range(len(jct[best.candidate]))]
    others = sorted((c for c in tried if c.candidate not in BASELINE_RULES),
                    key=lambda c: (mean(c.candidate), c.candidate))
    for c in others:
        if all(v <= f * (1.0 - margin) for v, f in zip(jct[c.candidate], floor)):
            return c
    return best
