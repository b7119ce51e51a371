"""Workload types: agent trajectories (turns), the requests derived from them, and their statistics.

A turn appends `append_tokens` (the user or tool message) to the context and generates
`generate_tokens`. Turn t's prompt is everything before it plus its append; the hit is the part of
the previous context already persisted, i.e. its complete blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dualpath.errors import SpecError
from dualpath.limits import MAX_SECONDS, MAX_TOKENS, MAX_TRACE_RECORDS
from dualpath.validate import integer, number

MAX_COUNT = MAX_TRACE_RECORDS  # turns are numbered within a trace
# Agent ids are labels a trace may choose: any integer JSON carries exactly (RFC 8259's interoperable
# range), not just our 0..n-1.
MAX_AGENT_ID = 2**53 - 1


@dataclass(frozen=True)
class Turn:
    append_tokens: int
    generate_tokens: int

    def __post_init__(self) -> None:
        integer("Turn", "append_tokens", self.append_tokens, 1, MAX_TOKENS, cap="MAX_TOKENS")
        integer("Turn", "generate_tokens", self.generate_tokens, 1, MAX_TOKENS, cap="MAX_TOKENS")


@dataclass(frozen=True)
class Trajectory:
    """One agent's turns. `start_s` is its arrival (online runs); offline runs start all at 0."""

    agent: int
    turns: tuple[Turn, ...]
    start_s: float = 0.0

    def __post_init__(self) -> None:
        integer("Trajectory", "agent", self.agent, 0, MAX_AGENT_ID)
        number(f"Trajectory of agent {self.agent}", "start_s", self.start_s, 0, MAX_SECONDS, cap="MAX_SECONDS")

    @property
    def total_tokens(self) -> int:
        return sum(t.append_tokens + t.generate_tokens for t in self.turns)


@dataclass(frozen=True)
class Request:
    """One turn's prefill+decode job. `arrival_s` is absolute for traces, the agent's start otherwise."""

    id: str
    agent: int
    turn: int
    hit_tokens: int
    new_tokens: int
    output_tokens: int
    arrival_s: float = 0.0

    def __post_init__(self) -> None:
        # The fast path: workloads build 10^5 requests and more; the checks below only name what failed.
        if (type(self.id) is str and self.id and type(self.agent) is int and type(self.turn) is int
                and type(self.hit_tokens) is int and type(self.new_tokens) is int and type(self.output_tokens) is int
                and 0 <= self.agent <= MAX_AGENT_ID and 0 <= self.turn <= MAX_COUNT
                and 0 <= self.hit_tokens <= MAX_TOKENS and 1 <= self.new_tokens <= MAX_TOKENS
                and 1 <= self.output_tokens <= MAX_TOKENS and type(self.arrival_s) in (float, int)
                and 0 <= self.arrival_s <= MAX_SECONDS):  # NaN fails the comparison
            return
        if not isinstance(self.id, str) or not self.id:
            raise SpecError("request", "id", self.id, "a non-empty string")
        source = f"request {self.id}"
        integer(source, "agent", self.agent, 0, MAX_AGENT_ID)
        integer(source, "turn", self.turn, 0, MAX_COUNT)
        integer(source, "hit_tokens", self.hit_tokens, 0, MAX_TOKENS, cap="MAX_TOKENS")
        integer(source, "new_tokens", self.new_tokens, 1, MAX_TOKENS, cap="MAX_TOKENS")
        integer(source, "output_tokens", self.output_tokens, 1, MAX_TOKENS, cap="MAX_TOKENS")
        number(source, "arrival_s", self.arrival_s, 0, MAX_SECONDS, cap="MAX_SECONDS")

    @property
    def prompt_tokens(self) -> int:
        return self.hit_tokens + self.new_tokens

    @property
    def context_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def check_context(workload: Workload, max_context_tokens: int, model: str) -> None:
    """Refuse a request whose context (prompt and output) the model cannot hold: planning or simulating
    it would give numbers for a run no engine could do."""
    for r in workload.requests:
        if r.context_tokens > max_context_tokens:
            raise SpecError(f"workload {workload.name}", f"request {r.id} (agent {r.agent}, turn {r.turn}) context",
                            r.context_tokens, f"at most {max_context_tokens:,} tokens, model {model}'s "
                                              "max_context_tokens")


def requests_of(trajectory: Trajectory, block_tokens: int) -> list[Request]:
    """Requests for each turn; the hit is the previous context rounded down to whole blocks."""
    out, context = [], 0
    for index, turn in enumerate(trajectory.turns):
        out.append(_turn_request(trajectory, index, context, block_tokens))
        context += turn.append_tokens + turn.generate_tokens
    return out


def _turn_request(trajectory: Trajectory, index: int, context_tokens: int, block_tokens: int) -> Request:
    """Turn `index`'s request given the context before it: the hit is that context in whole blocks."""
    turn = trajectory.turns[index]
    hit = (context_tokens // block_tokens) * block_tokens
    return Request(f"a{trajectory.agent}t{index}", trajectory.agent, index, hit,
                   context_tokens + turn.append_tokens - hit, turn.generate_tokens, trajectory.start_s)


def request_at(trajectory: Trajectory, index: int, block_tokens: int) -> Request:
    """`requests_of(trajectory, block_tokens)[index]` alone: a batch sample of one turn per agent
    need not build every turn's request (1 M of them for 20,000 resampled agents)."""
    context = sum(t.append_tokens + t.generate_tokens for t in trajectory.turns[:index])
    return _turn_request(trajectory, index, context, block_tokens)


@dataclass(frozen=True)
class WorkloadStats:
    """Per-request means (append, generate, context) and per-agent means (turns, total tokens).

    The paper's trace table reads every column per turn; `dualpath.models.stats` computes that reading.
    """

    num_agents: int
    num_requests: int
    turns_mean: float
    append_mean: float
    generate_mean: float
    total_tokens_mean: float
    context_mean: float
    hit_rate: float

    def as_rows(self) -> list[tuple[str, str]]:
        return [("agents", f"{self.num_agents:,}"), ("requests", f"{self.num_requests:,}"),
                ("turns / agent", f"{self.turns_mean:,.1f}"), ("append / turn", f"{self.append_mean:,.1f}"),
                ("generate / turn", f"{self.generate_mean:,.1f}"),
                ("total tokens / agent", f"{self.total_tokens_mean:,.0f}"),
                ("mean context", f"{self.context_mean:,.0f}"), ("hit rate", f"{self.hit_rate:.1%}")]


@dataclass(frozen=True)
class Workload:
    """Trajectories (when known) and the requests they produce, in arrival then id order."""

    name: str
    requests: tuple[Request, ...]
    trajectories: tuple[Trajectory, ...] = field(default=())

    @property
    def timed(self) -> bool:
        """True when some request arrives after 0: the workload carries arrival times to replay."""
        return any(r.arrival_s > 0 for r in self.requests)

    def stats(self) -> WorkloadStats:
        reqs = self.requests
        if not reqs:
            raise SpecError(f"workload {self.name}", "requests", 0, "at least one request")
        agents = {r.agent for r in reqs}
        num_agents = len(agents)
        prompt = sum(r.prompt_tokens for r in reqs)
        if self.trajectories:
            turns = [t for traj in self.trajectories for t in traj.turns]
            append = sum(t.append_tokens for t in turns) / len(turns)
            generate = sum(t.generate_tokens for t in turns) / len(turns)
            total = sum(traj.total_tokens for traj in self.trajectories) / len(self.trajectories)
        else:
            append = sum(r.new_tokens for r in reqs) / len(reqs)
            generate = sum(r.output_tokens for r in reqs) / len(reqs)
            total = sum(r.new_tokens + r.output_tokens for r in reqs) / num_agents
        return WorkloadStats(
            num_agents=num_agents,
            num_requests=len(reqs),
            turns_mean=len(reqs) / num_agents,
            append_mean=append,
            generate_mean=generate,
            total_tokens_mean=total,
            context_mean=prompt / len(reqs),
            hit_rate=sum(r.hit_tokens for r in reqs) / prompt,
        )

    def first_turns(self) -> list[Request]:
        return [r for r in self.requests if r.turn == 0]


def by_agent(requests: Sequence[Request]) -> dict[int, list[Request]]:
    """Requests grouped per agent in turn order (offline runs chain each agent's turns)."""
    out: dict[int, list[Request]] = {}
    for r in sorted(requests, key=lambda r: (r.agent, r.turn)):
        out.setdefault(r.agent, []).append(r)
    return out
