"""Sampling over workloads: the paper's resampling past 500 agents, Poisson arrivals, optimizer batches.

An online run needs agents arriving for as long as it measures: `online_trajectories` draws Poisson
arrivals over a horizon (warm-up plus measurement window), so the number of agents follows from the
rate and the horizon, and deals the trace's whole trajectories to the arrivals in seeded rounds, so the
agent mix is the trace's at every rate.

Each function takes its own seed and derives a private `random.Random` from it, so adding a draw in one
never shifts another.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

from dualpath.errors import SpecError
from dualpath.kvlayout import PAPER_BLOCK_TOKENS
from dualpath.limits import MAX_AGENTS, MAX_SECONDS
from dualpath.models.workloads import from_requests, from_trajectories, request_order
from dualpath.request import Trajectory, Turn, Workload, by_agent, request_at
from dualpath.validate import integer, number


def resample(trajectories: Sequence[Trajectory], num_agents: int, seed: int = 0) -> list[Trajectory]:
    """`num_agents` agents from a trace: the first ones as they are, agent i >= len(trace) a copy of
    trajectory i mod len(trace) starting at a random turn k (the paper's "random first turn so prefixes
    are not shared"). Turns before k and turn k's append become one fresh prompt, so no hit.
    """
    if not trajectories:
        raise SpecError("resample", "trajectories", 0, "at least one trajectory")
    integer("resample", "num_agents", num_agents, 1, MAX_AGENTS, cap="MAX_AGENTS")
    rng = random.Random(f"resample:{seed}")
    base = len(trajectories)
    out = list(trajectories[:num_agents])
    first_new_id = max(t.agent for t in trajectories) + 1  # = the trace size when ids are 0..n-1
    for i in range(base, num_agents):
        source = trajectories[i % base]
        k = rng.randrange(len(source.turns))
        history = sum(t.append_tokens + t.generate_tokens for t in source.turns[:k])
        first = Turn(history + source.turns[k].append_tokens, source.turns[k].generate_tokens)
        out.append(Trajectory(first_new_id + i - base, (first, *tuple(source.turns[k + 1:])), source.start_s))
    return out


def poisson_arrivals(trajectories: Sequence[Trajectory], agents_per_s: float, seed: int = 0) -> list[Trajectory]:
    """Agents arrive as a Poisson process of rate `agents_per_s` (exponential gaps), in agent order."""
    rate = number("arrivals", "agents_per_s", agents_per_s, 0, MAX_AGENTS, low_open=True)
    rng = random.Random(f"poisson:{seed}")
    at, out = 0.0, []
    for traj in trajectories:
        at += rng.expovariate(rate)
        if at > MAX_SECONDS:  # a rate near 0: arrivals past any horizon the simulator's clock can step
            raise SpecError("arrivals", "agents_per_s", agents_per_s,
                            f"a rate whose {len(trajectories):,} arrivals fall within {MAX_SECONDS:g} s "
                            "(dualpath.limits.MAX_SECONDS)")
        out.append(dataclasses.replace(traj, start_s=at))
    return out


def online_trajectories(trajectories: Sequence[Trajectory], agents_per_s: float, horizon_s: float,
                        seed: int = 0) -> list[Trajectory]:
    """Agents arriving as a Poisson process of rate `agents_per_s` over [0, `horizon_s`): as many as
    arrive (at least one), agent i the whole trajectory dealt to arrival slot i.

    Trajectories are dealt in rounds, each a seeded shuffle of the whole trace, so every trajectory
    serves equally often and the per-agent demand (hit bytes, prefill FLOPs, output tokens) is the
    trace's at every rate and every point of the run. Offline resampling from a random turn
    (`resample`) would not do: its agents skip their early turns and prefill their history without a
    hit, so the mix, and with it the demand per agent, would shift with the number of agents, i.e. the
    rate. Copies share no prefix with their source: each agent's hits are its own history.
    """
    if isinstance(agents_per_s, bool) or not isinstance(agents_per_s, (int, float)) or not agents_per_s > 0:
        raise SpecError("arrivals", "agents_per_s", agents_per_s, "a positive number")
    if isinstance(horizon_s, bool) or not isinstance(horizon_s, (int, float)) or not horizon_s > 0:
        raise SpecError("arrivals", "horizon_s", horizon_s, "a positive number of seconds")
    if not trajectories:
        raise SpecError("arrivals", "trajectories", 0, "at least one trajectory")
    rng = random.Random(f"online:{seed}")
    starts: list[float] = []
    at = rng.expovariate(agents_per_s)
    while at < horizon_s or not starts:
        starts.append(at)
        at += rng.expovariate(agents_per_s)
    order: list[int] = []
    while len(order) < len(starts):
        deal = list(range(len(trajectories)))
        rng.shuffle(deal)
        order.extend(deal)
    return [Trajectory(i, trajectories[source].turns, start) for i, (source, start) in enumerate(zip(order, starts))]


def online_workloads(base: Workload, horizon_s: float, seed: int = 0) -> Callable[[float], Workload]:
    """The online workload at a rate: `base`'s trajectories dealt whole to Poisson arrivals of that many
    agents per second over [0, `horizon_s`) (`online_trajectories`), as `dualpath simulate --aps`, the
    capacity search and the benchmarks run it. The horizon is the caller's steady-state rule
    (`dualpath.runtime.capacity.online_horizon_s`)."""

    def at(agents_per_s: float) -> Workload:
        return from_trajectories(base.name, online_trajectories(base.trajectories, agents_per_s, horizon_s, seed))

    return at


def sample_batch(workload: Workload, num_requests: int, seed: int = 0,
                 block_tokens: int = PAPER_BLOCK_TOKENS) -> Workload:
    """`num_requests` requests released together at t = 0 (the optimizer's `--batch N`).

    With trajectories: one turn per agent, at a random turn (agents resampled past the trace size).
    A trace of requests: its first N requests in arrival order.
    """
    integer("batch", "num_requests", num_requests, 1, MAX_AGENTS, cap="MAX_AGENTS")
    name = f"{workload.name}-batch{num_requests}"
    if workload.trajectories:
        rng = random.Random(f"batch:{seed}")
        picked = []
        if num_requests > len(workload.trajectories):
            # Only the picked turn of each resampled agent is built, not all its turns' requests.
            resampled = sorted((t for t in resample(workload.trajectories, num_requests, seed) if t.turns),
                               key=lambda t: t.agent)
            for traj in resampled[:num_requests]:
                picked.append(request_at(traj, rng.randrange(len(traj.turns)), block_tokens))
        else:
            agents = by_agent(workload.requests)
            for agent in sorted(agents)[:num_requests]:
                turns = agents[agent]
                picked.append(turns[rng.randrange(len(turns))])
    else:
        if num_requests > len(workload.requests):
            raise SpecError(f"workload {workload.name}", "batch", num_requests,
                            f"at most the trace's {len(workload.requests)} requests")
        picked = sorted(workload.requests, key=request_order)[:num_requests]
    return from_requests(name, (dataclasses.replace(r, arrival_s=0.0) for r in picked))
