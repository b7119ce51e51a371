"""The paper's trace-table statistics, with our reading of each column.

The table (design.md section 3) gives, for each trace of 500 trajectories, "per-turn means" of turns,
append, generate, total tokens and mean context. We read every column as a mean over turns (requests):

- append, generate, mean context: tokens appended, generated, and the prompt length, per turn;
- turns: the number of turns of the trajectory a turn belongs to, per turn (= sum n^2 / sum n);
- total tokens: the final context (all appends and generates) of that trajectory, per turn.

Two checks single this reading out. Per-trajectory turns and totals with per-turn appends cannot be
meant: total = turns x (append + generate) would then be an identity, yet 157 x (429 + 176) = 94,985
!= 55,958. And per-turn appends and contexts reproduce the paper's sixth figure: a turn misses only
its append, so the hit rate is 1 - 429 / 32,721 = 98.7%, exactly the 64K trace's reported hit rate.

`Workload.stats()` (core) has the per-turn append, generate and context, and per-trajectory turns and
totals; this module adds the per-turn turns and totals.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.request import Workload, by_agent


@dataclass(frozen=True)
class TraceTableStats:
    num_agents: int
    num_requests: int
    turns_per_turn_mean: float  # the table's "turns"
    append_mean: float
    generate_mean: float
    total_tokens_per_turn_mean: float  # the table's "total tokens"
    context_mean: float
    hit_rate: float
    turns_per_agent_mean: float  # plain means over trajectories, for reference
    total_tokens_per_agent_mean: float

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        """The five columns of the paper's table, in its order."""
        return (self.turns_per_turn_mean, self.append_mean, self.generate_mean, self.total_tokens_per_turn_mean,
                self.context_mean)


COLUMNS = ("turns", "append", "generate", "total tokens", "mean context")


def trace_table_stats(workload: Workload) -> TraceTableStats:
    """The table's columns for any workload (a trace's agents are its requests grouped by agent)."""
    core = workload.stats()
    if workload.trajectories:
        sizes = [(len(t.turns), t.total_tokens) for t in workload.trajectories]
    else:
        sizes = [(len(reqs), reqs[-1].context_tokens) for reqs in by_agent(workload.requests).values()]
    turns = sum(n for n, _ in sizes)
    return TraceTableStats(
        num_agents=core.num_agents,
        num_requests=core.num_requests,
        turns_per_turn_mean=sum(n * n for n, _ in sizes) / turns,
        append_mean=core.append_mean,
        generate_mean=core.generate_mean,
        total_tokens_per_turn_mean=sum(n * total for n, total in sizes) / turns,
        context_mean=core.context_mean,
        hit_rate=core.hit_rate,
        turns_per_agent_mean=core.turns_mean,
        total_tokens_per_agent_mean=sum(total for _, total in sizes) / len(sizes),
    )
