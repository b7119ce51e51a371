"""Agentic workload generators `agentic-32k`, `agentic-48k`, `agentic-64k` (the paper's three traces).

The production traces are not public; their table (`PAPER_TABLE`, columns read as in
`dualpath.models.stats`) is what a generator must reproduce. The generative model, per trajectory
(an agent solving one task):

- a planned number of turns, lognormal (sigma 0.8): about 30% of tasks end as planned, the others
  run until the context is full;
- a verbosity scale, lognormal with mean 1: it multiplies the agent's appends, and its square root
  the generates (chatty tools make long outputs; the model's own replies vary less);
- turn 0 appends the system prompt and task, lognormal (sigma 0.5), at most half the context;
- later turns append a tool result (lognormal, sigma 1) and generate a reply (lognormal, sigma 0.7);
- the trajectory ends at its planned turn, or before the turn that would overflow the max context.

The per-trajectory latents (planned turns, verbosity, first prompt) are a randomly shifted Halton
design over the trace's 500 trajectories, truncated at 2 standard deviations, so each keeps its
distribution's spread while the trace's means barely swing with the seed (the noisiest column,
turns, varies by about 1.6% between seeds). The parameters of each generator were fitted by
Nelder-Mead to the table's five columns on 2 x 4,000 simulated trajectories with seeds other than
the default; `tests/models/test_generators.py` checks each generator within 5% at 500 agents, seed 0.
Past 500 agents the trace is resampled as the paper does (`dualpath.models.sampling.resample`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist

from dualpath.errors import SpecError, UnknownNameError
from dualpath.kvlayout import PAPER_BLOCK_TOKENS
from dualpath.models.sampling import poisson_arrivals, resample
from dualpath.models.workloads import from_trajectories
from dualpath.request import Trajectory, Turn, Workload
from dualpath.validate import positive

TRACE_AGENTS = 500  # trajectories per production trace in the paper

# Paper's table: turns, append, generate, total tokens, mean context (per-turn means, 500 trajectories).
PAPER_TABLE: dict[str, tuple[float, float, float, float, float]] = {
    "agentic-32k": (60, 608, 148, 28_639, 17_183),
    "agentic-48k": (106, 474, 172, 42_607, 25_120),
    "agentic-64k": (157, 429, 176, 55_958, 32_721),
}
PAPER_HIT_RATE_64K = 0.987

FIRST_APPEND_SIGMA = 0.5
APPEND_SIGMA = 1.0  # tool outputs are heavy-tailed: a file listing vs a whole file
GENERATE_SIGMA = 0.7
# Latents are truncated at 2 standard deviations (95% of each distribution): at the far corner (a long
# task with terse tools) an agent would run a thousand 50-token turns, and one such agent more or less
# would swing a 500-agent trace's turn statistics by 5%.
LATENT_Z_LIMIT = 2.0


@dataclass(frozen=True)
class AgenticShape:
    """Parameters of one generator; token counts are lognormal means (not medians) before the cap.

    `append_mean` and `generate_mean` are for an agent of verbosity 1. The per-turn means come out
    lower (429 and 176 on the 64K trace) because verbose agents fill their context in fewer turns.
    """

    name: str
    max_context_tokens: int
    planned_turns_mean: float
    planned_turns_sigma: float
    first_append_mean: float
    append_mean: float
    generate_mean: float
    verbosity_sigma: float

    def __post_init__(self) -> None:
        for field in ("max_context_tokens", "planned_turns_mean", "first_append_mean", "append_mean",
                      "generate_mean", "planned_turns_sigma", "verbosity_sigma"):
            positive(f"generator {self.name}", field, getattr(self, field), cap="MAX_TOKENS")


# Fitted to PAPER_TABLE (see the module docstring); fields in AgenticShape's order.
AGENTIC_SHAPES: dict[str, AgenticShape] = {
    "agentic-32k": AgenticShape("agentic-32k", 32 * 1024, 97.64, 0.8, 6220.0, 1170.8, 252.4, 1.164),
    "agentic-48k": AgenticShape("agentic-48k", 48 * 1024, 161.8, 0.8, 8246.0, 971.0, 313.7, 1.262),
    "agentic-64k": AgenticShape("agentic-64k", 64 * 1024, 227.5, 0.8, 10135.0, 1074.4, 364.1, 1.404),
}


def _lognormal(mean: float, sigma: float, z: float) -> float:
    """The lognormal with this mean and log-sigma at standard normal score z."""
    return math.exp(math.log(mean) - sigma * sigma / 2 + sigma * z)


def _radical_inverse(index: int, base: int) -> float:
    """Van der Corput: the digits of `index` in `base` mirrored behind the point."""
    out, scale = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        out += digit * scale
        scale /= base
    return out


def _quasi_scores(rng: random.Random, count: int, dims: int) -> list[tuple[float, ...]]:
    """`count` points of standard normal scores in `dims` dimensions that fill the joint space evenly.

    A Halton sequence (bases 2, 3, 5) with a random shift per dimension (Cranley-Patterson rotation),
    mapped through the normal distribution truncated at +-LATENT_Z_LIMIT, in random order: each
    trajectory's latents keep their distributions while the trace as a whole covers every combination
    (long tasks with terse tools, short tasks with verbose ones) in proportion.
    """
    bases = (2, 3, 5, 7, 11)[:dims]
    shifts = [rng.random() for _ in bases]
    unit = NormalDist()
    low, high = unit.cdf(-LATENT_Z_LIMIT), unit.cdf(LATENT_Z_LIMIT)
    points = []
    for i in range(1, count + 1):
        us = ((_radical_inverse(i, b) + shift) % 1.0 for b, shift in zip(bases, shifts))
        points.append(tuple(unit.inv_cdf(low + (high - low) * u) for u in us))
    rng.shuffle(points)
    return points


def _trajectory(shape: AgenticShape, agent: int, rng: random.Random, z_turns: float, z_scale: float,
                z_first: float) -> Trajectory:
    cap = shape.max_context_tokens
    planned = max(1, math.ceil(_lognormal(shape.planned_turns_mean, shape.planned_turns_sigma, z_turns)))
    scale = _lognormal(1.0, shape.verbosity_sigma, z_scale)
    append_mean, generate_mean = shape.append_mean * scale, shape.generate_mean * math.sqrt(scale)
    turns, context = [], 0
    for index in range(planned):
        if index == 0:
            append = min(max(1, round(_lognormal(shape.first_append_mean, FIRST_APPEND_SIGMA, z_first))), cap // 2)
        else:
            append = max(1, round(_lognormal(append_mean, APPEND_SIGMA, rng.gauss(0.0, 1.0))))
        generate = max(1, round(_lognormal(generate_mean, GENERATE_SIGMA, rng.gauss(0.0, 1.0))))
        if context + append + generate > cap:
            if index:
                break
            generate = cap - append  # the first turn always fits: its prompt is at most half the cap
        turns.append(Turn(append, generate))
        context += append + generate
    return Trajectory(agent, tuple(turns))


def agentic_trajectories(name: str, num_agents: int = TRACE_AGENTS, seed: int = 0) -> list[Trajectory]:
    """`num_agents` fresh trajectories of generator `name` (no resampling: each is its own task)."""
    shape = agentic_shape(name)
    if isinstance(num_agents, bool) or not isinstance(num_agents, int) or num_agents < 1:
        raise SpecError(f"generator {name}", "num_agents", num_agents, "a positive integer")
    rng = random.Random(f"{shape.name}:{seed}")
    latents = _quasi_scores(rng, num_agents, 3)
    return [_trajectory(shape, i, rng, *latents[i]) for i in range(num_agents)]


def agentic_workload(name: str, agents: int = TRACE_AGENTS, seed: int = 0, *,
                     block_tokens: int = PAPER_BLOCK_TOKENS, aps: float | None = None) -> Workload:
    """The paper's setup: a 500-trajectory trace, its first `agents` or resampled past 500; offline
    (all start at 0) unless `aps` (agents per second) gives Poisson arrivals."""
    trace = agentic_trajectories(name, TRACE_AGENTS, seed)
    trajectories = resample(trace, agents, seed)
    if aps is not None:
        trajectories = poisson_arrivals(trajectories, aps, seed)
    return from_trajectories(name, trajectories, block_tokens)


def agentic_shape(name: str) -> AgenticShape:
    try:
        return AGENTIC_SHAPES[name.strip().lower()]
    except KeyError:
        raise UnknownNameError("workload generator", name, list(AGENTIC_SHAPES)) from None
