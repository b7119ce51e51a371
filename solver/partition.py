"""Whole-read partition: which node reads each request's hit, so that the SNICs finish together.

With whole reads, the SNIC part of the bottleneck is a multiway number-partitioning problem, which
LP-based branch and bound (CBC, HiGHS) handles badly: on 1P2D with 24 requests neither proves the
optimum in 120 s, while it is a few subset-sum dynamic programmes. `integral_read_sides` picks the
PE-side set whose total meets the integral-read bound (bound.py); `integral_read_nodes` then splits
each side's set over that side's nodes one node at a time, each taking the subset whose total is
closest to its fair share. Both are bitset subset-sums in units of the hits' gcd. The planner seeds
its construction with them on small instances; they are heuristic starts, and every plan is still
checked against the bound.
"""

from __future__ import annotations

import math

from dualpath.solver.bound import fluid_at, integral_read_bound
from dualpath.solver.problem import Problem

MAX_CELLS = 20_000_000  # requests x total units: the DP tables kept for the walk back


def integral_read_sides(problem: Problem) -> dict[int, bool] | None:
    """Which requests read on the PE side so that the PE-side total is the one `integral_read_bound`
    picks; None when the tables would be too large."""
    pb = problem
    hits = [r.hit_tokens for r in pb.requests]
    step = _gcd(hits)
    if not step or len(hits) * (sum(hits) // step) > MAX_CELLS or integral_read_bound(pb) is None:
        return None
    unit_bytes = step * pb.kv_bytes_per_token
    free = [r for r, h in enumerate(hits) if h and pb.pe_read_cap_bytes(r) == pb.hit_bytes[r]]
    chosen = _best_subset([hits[r] // step for r in free], lambda t: fluid_at(pb, t * unit_bytes)[0])
    on_pe = {free[i] for i in chosen}
    return {r: r in on_pe for r in range(pb.num_requests)}


def integral_read_nodes(problem: Problem, sides: dict[int, bool] | None = None) -> dict[int, int] | None:
    """Read node per request (requests that read nothing are left out); None when too large.
    `sides`: `integral_read_sides(problem)`, when the caller has it already."""
    pb = problem
    sides = sides if sides is not None else integral_read_sides(pb)
    if sides is None:
        return None
    nodes: dict[int, int] = {}
    for on_pe, side_nodes in ((True, sorted(set(pb.pe_node))), (False, sorted(set(pb.de_node)))):
        members = [r for r in range(pb.num_requests) if sides[r] == on_pe and pb.hit_bytes[r]]
        assigned = _split(pb, members, side_nodes)
        if assigned is None:
            return None
        nodes.update(assigned)
    return nodes


def _split(pb: Problem, members: list[int], side_nodes: list[int]) -> dict[int, int] | None:
    """Nodes take subsets one by one; each aims at an equal finish time given its queue and rate."""
    out: dict[int, int] = {}
    left = list(members)
    for i, n in enumerate(side_nodes):
        if i == len(side_nodes) - 1:
            out.update(dict.fromkeys(left, n))
            break
        rest = side_nodes[i:]
        rates = sum(pb.snic_bytes_per_s[m] for m in rest)
        work = sum(pb.hit_bytes[r] for r in left) + sum(pb.read_queue_bytes[m] for m in rest)
        target_bytes = work / rates * pb.snic_bytes_per_s[n] - pb.read_queue_bytes[n]
        chosen = _closest_subset(pb, left, max(0.0, target_bytes))
        if chosen is None:
            return None
        out.update(dict.fromkeys(chosen, n))
        left = [r for r in left if r not in chosen]
    return out


def _closest_subset(pb: Problem, members: list[int], target_bytes: float) -> set[int] | None:
    step = _gcd([pb.requests[r].hit_tokens for r in members])
    if not step:
        return set()
    units = [pb.requests[r].hit_tokens // step for r in members]
    if len(units) * (sum(units) + 1) > MAX_CELLS:
        return None
    target = target_bytes / (step * pb.kv_bytes_per_token)
    return {members[i] for i in _best_subset(units, lambda t: abs(t - target))}


def _gcd(values: list[int]) -> int:
    step = 0
    for v in values:
        step = math.gcd(step, v)
    return step


def _best_subset(units: list[int], cost) -> list[int]:
    """Indices of the subset whose total (in units) has the least `cost(total)`, the smallest total on
    ties: reachable totals as bitsets, one per prefix, then a walk back through them."""
    layers = [1]
    for u in units:
        layers.append(layers[-1] | (layers[-1] << u))
    best = min((t for t in range(sum(units) + 1) if layers[-1] >> t & 1), key=lambda t: (cost(t), t))
    chosen, total = [], best
    for i in range(len(units), 0, -1):
        if not layers[i - 1] >> total & 1:
            chosen.append(i - 1)
            total -= units[i - 1]
    return chosen
