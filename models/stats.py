"""The paper's trace-table statistics, with our reading of each column.

The table (design.md section 3) gives, per trace of 500 trajectories, "per-turn means": turns, append,
generate, total tokens, mean context. Pooled per-turn means cannot be meant: they would make
total = turns x (append + generate) an identity, but 157 x (429 + 176) = 94,985 != 55,958 on the 64K
trace (and the same gap on the others). Averaging per trajectory first is consistent with all rows, so:

- turns: mean over trajectories of its number of turns (requests);
- append / generate: mean over trajectories of the trajectory's mean tokens per turn (the first turn's
  append carries the system prompt and task, so short trajectories weigh heavily here);
- total tokens: mean over trajectories of its final context (all appends and generates);
- mean context: mean prompt length over requests, as `Workload.stats().context_mean`;
- hit rate: hit tokens over prompt tokens over all requests, as `Workload.stats().hit_rate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.errors import SpecError
from dualpath.request import Workload, by_agent


@dataclass(frozen=True)
class TraceTableStats:
    num_agents: int
    turns_mean: float
    append_mean: float
    generate_mean: float
    total_tokens_mean: float
    context_mean: float
    hit_rate: float

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        """The five columns of the paper's table, in its order."""
        return (self.turns_mean, self.append_mean, self.generate_mean, self.total_tokens_mean, self.context_mean)


COLUMNS = ("turns", "append", "generate", "total tokens", "mean context")


def trace_table_stats(workload: Workload) -> TraceTableStats:
    """Per-trajectory means averaged over trajectories (requests grouped by agent for traces)."""
    core = workload.stats()
    per_agent: list[tuple[int, float, float, int]] = []  # turns, mean append, mean generate, final context
    if workload.trajectories:
        for traj in workload.trajectories:
            n = len(traj.turns)
            if n == 0:
                raise SpecError(f"workload {workload.name}", f"agent {traj.agent} turns", 0, "at least one turn")
            per_agent.append((n, sum(t.append_tokens for t in traj.turns) / n,
                              sum(t.generate_tokens for t in traj.turns) / n, traj.total_tokens))
    else:
        for reqs in by_agent(workload.requests).values():
            n = len(reqs)
            per_agent.append((n, sum(r.new_tokens for r in reqs) / n, sum(r.output_tokens for r in reqs) / n,
                              reqs[-1].context_tokens))
    count = len(per_agent)
    return TraceTableStats(
        num_agents=count,
        turns_mean=sum(p[0] for p in per_agent) / count,
        append_mean=sum(p[1] for p in per_agent) / count,
        generate_mean=sum(p[2] for p in per_agent) / count,
        total_tokens_mean=sum(p[3] for p in per_agent) / count,
        context_mean=core.context_mean,
        hit_rate=core.hit_rate,
    )
