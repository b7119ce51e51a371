"""Certified lower bounds on a plan's fluid bottleneck time: the divisible (fluid) bound and the LP relaxation.

Both relax the engine-level problem of `problem.py`, so every plan's fluid bottleneck time is at least their value:
the fluid bound pools all PE nodes and all DE nodes and lets requests divide (O(R), then a 1-D convex
minimisation over the PE-read total); the LP keeps requests whole per node *class* (nodes with the
same backlog are symmetric, so merging them loses nothing) and pools engines inside a class.
`Relaxation` is the backend-free LP data; `ortools_model` and `pulp_model` solve it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from dualpath.solver.problem import Problem


@dataclass(frozen=True)
class Bound:
    value_s: float
    family: str  # the constraint family that sets it
    kind: str  # "fluid", "integral", "lp", "request", "backlog", "solver"
    pe_read_fraction: float | None = None  # fluid optimum: share of hit bytes read on the PE side


@dataclass(frozen=True)
class NodeClass:
    """Nodes with identical backlogs, merged: capacities summed, engines pooled."""

    nodes: tuple[int, ...]
    num_engines: int
    snic_bytes_per_s: float
    read_queue_bytes: float
    compute_backlog_s: float  # PE classes: sum over engines
    hbm_capacity_bytes: int  # DE classes: sum over engines


@dataclass(frozen=True)
class Relaxation:
    """LP relaxation over node classes; variables x[r,i], y[r,j], a[r,i], b[r,j], T."""

    problem: Problem
    pe_classes: tuple[NodeClass, ...]
    de_classes: tuple[NodeClass, ...]
    constant_s: float  # bounds that hold regardless (single requests, backlogs)

    @property
    def num_variables(self) -> int:
        return 2 * self.problem.num_requests * (len(self.pe_classes) + len(self.de_classes)) + 1


@dataclass
class RelaxationSolution:
    value_s: float
    status: str  # "optimal" or a backend status
    pe_read_bytes: dict[int, float] = field(default_factory=dict)  # PE class -> PE-read bytes
    binding: str = ""


# ---- constants: what single requests and existing backlogs force ---------------------------------
def constant_bound(problem: Problem, split_reads: bool = True) -> Bound:
    pb = problem
    best = Bound(0.0, "snic", "backlog")
    for n in range(pb.num_nodes):
        t = pb.read_queue_bytes[n] / pb.snic_bytes_per_s[n]
        if t > best.value_s:
            best = Bound(t, "snic", "backlog")
    if pb.pe_backlog_s and max(pb.pe_backlog_s) > best.value_s:
        best = Bound(max(pb.pe_backlog_s), "pe_compute", "backlog")
    if not pb.num_requests:
        return best
    min_backlog = min(pb.pe_backlog_s) if pb.pe_backlog_s else 0.0
    cn = pb.cnic_bytes_per_s
    snic_max = max(pb.snic_bytes_per_s)
    q_min = min(pb.read_queue_bytes)
    for r in range(pb.num_requests):
        # A request runs on one PE and one DE; its read uses one SNIC (two when split).
        cands = (
            (min_backlog + pb.compute_s[r], "pe_compute"),
            (pb.hit_bytes[r] / cn, "pe_cnic_in"),
            (pb.new_bytes[r] / cn, "pe_cnic_out"),
            (pb.prompt_bytes[r] / cn, "de_cnic_out"),
            ((q_min + pb.hit_bytes[r] / (2 if split_reads else 1)) / snic_max, "snic"),
        )
        for t, fam in cands:
            if t > best.value_s:
                best = Bound(t, fam, "request")
    return best


# ---- the fluid bound -----------------------------------------------------------------------------
def fluid_bound(problem: Problem) -> Bound:
    """Pool every PE node and every DE node; choose the PE-read total A to minimise the max."""
    pb = problem
    pe_nodes = sorted(set(pb.pe_node))
    de_nodes = sorted(set(pb.de_node))
    s_p = sum(pb.snic_bytes_per_s[n] for n in pe_nodes)
    s_d = sum(pb.snic_bytes_per_s[n] for n in de_nodes)
    q_p = sum(pb.read_queue_bytes[n] for n in pe_nodes)
    q_d = sum(pb.read_queue_bytes[n] for n in de_nodes)
    hit, new, prompt = sum(pb.hit_bytes), sum(pb.new_bytes), sum(pb.prompt_bytes)
    a_max = sum(pb.pe_read_cap_bytes(r) for r in range(pb.num_requests))
    pe_cn, de_cn = pb.num_pe * pb.cnic_bytes_per_s, pb.num_de * pb.cnic_bytes_per_s
    const = [
        ((sum(pb.pe_backlog_s) + sum(pb.compute_s)) / pb.num_pe, "pe_compute"),
        (hit / pe_cn, "pe_cnic_in"),
    ]
    # (offset, slope, family): time = offset + slope * A
    rising = [(q_p / s_p, 1 / s_p, "snic"), (new / pe_cn, 1 / pe_cn, "pe_cnic_out"),
              ((prompt - hit) / de_cn, 1 / de_cn, "de_cnic_in")]
    falling = [((q_d + hit) / s_d, -1 / s_d, "snic"), ((hit + prompt) / de_cn, -1 / de_cn, "de_cnic_out")]

    def worst(lines, a):
        return max((o + s * a, f) for o, s, f in lines)

    lo, hi = 0.0, float(a_max)
    for _ in range(200):  # bisection on the crossing of a rising and a falling convex envelope
        mid = (lo + hi) / 2
        if worst(rising, mid)[0] < worst(falling, mid)[0]:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-9 * max(1.0, hi):
            break
    value, family, a_star = min((*max(worst(rising, a), worst(falling, a)), a) for a in (lo, hi))
    value, family = max((value, family), *const)
    fraction = a_star / hit if hit else 0.0
    return Bound(value, family, "fluid", fraction)


def integral_read_bound(problem: Problem, max_bits: int = 4_000_000, deadline: float | None = None) -> Bound | None:
    """The fluid bound with whole reads: the PE-side total must be a sum of whole requests' hits.

    The fluid objective is convex in the PE-side total A, so over the achievable sums (a bitset built
    by shifting, in units of the hits' gcd) the best is one of the two neighbours of the continuous
    optimum. None when the bitset would exceed `max_bits`, nothing is read, or `time.perf_counter()`
    passes `deadline` first (the shifts take ~0.4 s for 3,000 requests near the bit limit).
    """
    pb = problem
    hits = [r.hit_tokens for r in pb.requests]
    step = 0
    for h in hits:
        step = math.gcd(step, h)
    if not step or sum(hits) // step > max_bits:
        return None
    free = [h // step for h, r in zip(hits, range(pb.num_requests)) if h and pb.pe_read_cap_bytes(r) == pb.hit_bytes[r]]
    reachable = 1
    for i, units in enumerate(free):
        if deadline is not None and i % 64 == 0 and time.perf_counter() >= deadline:
            return None
        reachable |= reachable << units
    fluid = fluid_bound(pb)
    unit_bytes = step * pb.kv_bytes_per_token
    target = (fluid.pe_read_fraction or 0.0) * sum(pb.hit_bytes) / unit_bytes
    low_mask = reachable & ((1 << (int(target) + 1)) - 1)
    candidates = [low_mask.bit_length() - 1]
    above = int(target) + 1  # the first achievable total strictly above the floor of the optimum
    high = reachable >> above
    if high:
        candidates.append(above + (high & -high).bit_length() - 1)
    value, family = min(fluid_at(pb, units * unit_bytes) for units in candidates)
    return Bound(value, family, "integral")


def fluid_at(problem: Problem, pe_read_bytes: float) -> tuple[float, str]:
    """The pooled fluid bottleneck time when `pe_read_bytes` of hit KV in all are read on the PE side."""
    pb = problem
    pe_nodes, de_nodes = sorted(set(pb.pe_node)), sorted(set(pb.de_node))
    s_p = sum(pb.snic_bytes_per_s[n] for n in pe_nodes)
    s_d = sum(pb.snic_bytes_per_s[n] for n in de_nodes)
    q_p = sum(pb.read_queue_bytes[n] for n in pe_nodes)
    q_d = sum(pb.read_queue_bytes[n] for n in de_nodes)
    hit, new, prompt = sum(pb.hit_bytes), sum(pb.new_bytes), sum(pb.prompt_bytes)
    pe_cn, de_cn = pb.num_pe * pb.cnic_bytes_per_s, pb.num_de * pb.cnic_bytes_per_s
    a = pe_read_bytes
    return max(((sum(pb.pe_backlog_s) + sum(pb.compute_s)) / pb.num_pe, "pe_compute"), (hit / pe_cn, "pe_cnic_in"),
               ((q_p + a) / s_p, "snic"), ((q_d + hit - a) / s_d, "snic"), ((new + a) / pe_cn, "pe_cnic_out"),
               ((prompt - hit + a) / de_cn, "de_cnic_in"), ((hit - a + prompt) / de_cn, "de_cnic_out"))


# ---- the LP relaxation ---------------------------------------------------------------------------
def node_classes(problem: Problem) -> tuple[tuple[NodeClass, ...], tuple[NodeClass, ...]]:
    pb = problem
    pe_groups: dict[tuple, list[int]] = {}
    de_groups: dict[tuple, list[int]] = {}
    engines_pe: dict[int, list[int]] = {}
    engines_de: dict[int, list[int]] = {}
    for p, n in enumerate(pb.pe_node):
        engines_pe.setdefault(n, []).append(p)
    for d, n in enumerate(pb.de_node):
        engines_de.setdefault(n, []).append(d)
    for n, ps in sorted(engines_pe.items()):
        key = (pb.snic_bytes_per_s[n], pb.read_queue_bytes[n], tuple(sorted(pb.pe_backlog_s[p] for p in ps)))
        pe_groups.setdefault(key, []).append(n)
    for n, ds in sorted(engines_de.items()):
        key = (pb.snic_bytes_per_s[n], pb.read_queue_bytes[n], tuple(sorted(pb.hbm_capacity_bytes[d] for d in ds)))
        de_groups.setdefault(key, []).append(n)

    def make(nodes, engines, role):
        members = [e for n in nodes for e in engines[n]]
        return NodeClass(
            nodes=tuple(nodes), num_engines=len(members),
            snic_bytes_per_s=sum(pb.snic_bytes_per_s[n] for n in nodes),
            read_queue_bytes=sum(pb.read_queue_bytes[n] for n in nodes),
            compute_backlog_s=sum(pb.pe_backlog_s[e] for e in members) if role == "pe" else 0.0,
            hbm_capacity_bytes=sum(pb.hbm_capacity_bytes[e] for e in members) if role == "de" else 0,
        )

    pe = tuple(make(nodes, engines_pe, "pe") for nodes in pe_groups.values())
    de = tuple(make(nodes, engines_de, "de") for nodes in de_groups.values())
    return pe, de


def relaxation(problem: Problem, split_reads: bool = True) -> Relaxation:
    pe, de = node_classes(problem)
    return Relaxation(problem, pe, de, constant_bound(problem, split_reads).value_s)


MAX_LP_VARIABLES = {"ortools": 400_000, "pulp-cbc": 60_000, "pulp-highs": 60_000}  # built and solved in seconds


def lower_bound(problem: Problem, split_reads: bool = False, backend: str | None = "ortools",
                time_limit_s: float = 5.0, notes: list[str] | None = None, deadline: float | None = None
                ) -> tuple[Bound, list[Bound]]:
    """The best certified bound and every bound computed (fluid, constants, LP when it adds anything).

    The LP is only solved when node classes differ (otherwise it equals the fluid bound exactly) and
    when the backend can build it in time; `backend=None` skips it. Skips are noted in `notes`.
    """
    bounds = [fluid_bound(problem), constant_bound(problem, split_reads)]
    if not split_reads:
        integral = integral_read_bound(problem, deadline=deadline)
        if integral is not None:
            bounds.append(integral)
    if not backend or not problem.num_requests:
        return max(bounds, key=lambda b: b.value_s), bounds
    relax = relaxation(problem, split_reads)
    symmetric = len(relax.pe_classes) == 1 and len(relax.de_classes) == 1
    if not symmetric:
        limit = MAX_LP_VARIABLES.get(backend, 0)
        if relax.num_variables > limit:
            if notes is not None:
                notes.append(f"LP relaxation skipped: {relax.num_variables:,} variables exceed what {backend} "
                             f"builds in time ({limit:,}); the fluid bound stands")
        else:
            solution = solve_relaxation(relax, backend, time_limit_s)
            if solution is not None and solution.status == "optimal":
                bounds.append(Bound(solution.value_s, solution.binding or "lp", "lp"))
            elif notes is not None:
                notes.append(f"LP relaxation ({backend}) did not finish within {time_limit_s:.2f} s")
    best = max(bounds, key=lambda b: b.value_s)
    return best, bounds


def solve_relaxation(relax: Relaxation, backend: str, time_limit_s: float) -> RelaxationSolution | None:
    if backend == "ortools":
        from dualpath.solver import ortools_model

        return ortools_model.solve_relaxation(relax, time_limit_s)
    if backend in ("pulp-cbc", "pulp-highs"):
        from dualpath.solver import pulp_model

        return pulp_model.solve_relaxation(relax, time_limit_s, backend=backend.split("-")[1])
    raise ValueError(f"unknown LP backend {backend!r}: expected ortools, pulp-cbc or pulp-highs")
