"""Whole-read partition: which node reads each request's hit, so that the SNICs finish together.

With whole reads, the SNIC part of the makespan is a multiway number-partitioning problem, which
LP-based branch and bound (CBC, HiGHS) handles badly: on 1P2D with 24 requests neither proves the
optimum in 120 s, while it is a few subset-sum dynamic programmes. `integral_read_sides` (bound.py)
picks the PE-side set whose total meets the integral-read bound; here each side's set is split over
that side's nodes one node at a time, each taking the subset whose total is closest to its fair
share (bitset subset-sum, in units of the hits' gcd). The planner seeds its construction with the
result on small instances; it is a heuristic start, and every plan is still checked against the bound.
"""

from __future__ import annotations

import math

from dualpath.solver.bound import integral_read_sides
from dualpath.solver.problem import Problem

MAX_CELLS = 20_000_000  # requests x total units: the DP tables kept for the walk back


def integral_read_nodes(problem: Problem) -> dict[int, int] | None:
    """Read node per request (requests that read nothing are left out); None when too large."""
    pb = problem
    sides = integral_read_sides(pb)
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
            out.update({r: n for r in left})
            break
        rest = side_nodes[i:]
        rates = sum(pb.snic_bytes_per_s[m] for m in rest)
        work = sum(pb.hit_bytes[r] for r in left) + sum(pb.read_queue_bytes[m] for m in rest)
        target_bytes = work / rates * pb.snic_bytes_per_s[n] - pb.read_queue_bytes[n]
        chosen = _closest_subset(pb, left, max(0.0, target_bytes))
        if chosen is None:
            return None
        out.update({r: n for r in chosen})
        left = [r for r in left if r not in chosen]
    return out


def _closest_subset(pb: Problem, members: list[int], target_bytes: float) -> set[int] | None:
    tokens = [pb.requests[r].hit_tokens for r in members]
    step = 0
    for t in tokens:
        step = math.gcd(step, t)
    if not step:
        return set()
    units = [t // step for t in tokens]
    if len(units) * (sum(units) + 1) > MAX_CELLS:
        return None
    layers = [1]
    for u in units:
        layers.append(layers[-1] | (layers[-1] << u))
    target = target_bytes / (step * pb.kv_bytes_per_token)
    reachable = layers[-1]
    best = min((t for t in range(sum(units) + 1) if reachable >> t & 1), key=lambda t: (abs(t - target), t))
    chosen, total = set(), best
    for i in range(len(units), 0, -1):
        if not layers[i - 1] >> total & 1:
            chosen.add(members[i - 1])
            total -= units[i - 1]
    return chosen
