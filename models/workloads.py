"""Building `Workload`s: from trajectories (requests derived per turn) or from a trace's requests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dualpath.kvlayout import PAPER_BLOCK_TOKENS
from dualpath.request import Request, Trajectory, Workload, requests_of


def request_order(request: Request) -> tuple[float, int, int, str]:
    """Arrival first; ties (an offline batch all at 0) by agent and turn, not by id text."""
    return (request.arrival_s, request.agent, request.turn, request.id)


def from_trajectories(name: str, trajectories: Sequence[Trajectory],
                      block_tokens: int = PAPER_BLOCK_TOKENS) -> Workload:
    requests = [r for traj in trajectories for r in requests_of(traj, block_tokens)]
    return Workload(name, tuple(sorted(requests, key=request_order)), tuple(trajectories))


def from_requests(name: str, requests: Iterable[Request]) -> Workload:
    return Workload(name, tuple(sorted(requests, key=request_order)))
