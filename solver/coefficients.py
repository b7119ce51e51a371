"""What the exact models (CP-SAT, pywraplp, PuLP) share: per-unit coefficients, engine symmetry
classes and the result type. Backend-free; built from a `Problem`."""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.cluster import Role
from dualpath.solver.problem import Problem, Solution


def hit_tokens(problem: Problem, r: int) -> int:
    return problem.requests[r].hit_tokens


def pe_read_cap_tokens(problem: Problem, r: int) -> int:
    """Most hit tokens request r may read on the PE side (whole tokens; the PE buffer holds them)."""
    return min(problem.requests[r].hit_tokens, problem.pe_buffer_bytes // problem.kv_bytes_per_token)


def engine_classes(problem: Problem, role: Role) -> list[list[int]]:
    """Interchangeable engines: same node and same backlog (PE) or HBM capacity (DE), in index order.

    Relabelling engines inside a class maps plans to plans of the same bottleneck, so exact models may
    break the symmetry by opening a class's engines in order.
    """
    groups: dict[tuple, list[int]] = {}
    if role is Role.PREFILL:
        for p, n in enumerate(problem.pe_node):
            groups.setdefault((n, problem.pe_backlog_s[p]), []).append(p)
    else:
        for d, n in enumerate(problem.de_node):
            groups.setdefault((n, problem.hbm_capacity_bytes[d]), []).append(d)
    return [g for g in groups.values() if len(g) > 1]


@dataclass(frozen=True)
class Coefficients:
    """Seconds of each resource per unit of each variable; exact models use these (CP-SAT x 1e12).

    x[r,p] (request r on PE p), y[r,d] (on DE d), a[r,p] / b[r,d] (hit tokens read through p's / d's
    node SNIC), T (fluid bottleneck time, seconds).
    """

    compute_s: tuple[float, ...]  # x[r,p] on PE compute
    hit_cnic_s: tuple[float, ...]  # x[r,p] on PE CNIC in
    new_cnic_s: tuple[float, ...]  # x[r,p] on PE CNIC out
    prompt_cnic_s: tuple[float, ...]  # y[r,d] on DE CNIC out and DE CNIC in
    token_cnic_s: float  # a on PE CNIC out; b on DE CNIC out (+) and DE CNIC in (-)
    token_snic_s: tuple[float, ...]  # a, b on their node's SNIC, per node
    snic_backlog_s: tuple[float, ...]
    compute_backlog_s: tuple[float, ...]
    hit_tokens: tuple[int, ...]
    pe_cap_tokens: tuple[int, ...]


def coefficients(problem: Problem) -> Coefficients:
    pb = problem
    cn = pb.cnic_bytes_per_s
    kv = pb.kv_bytes_per_token
    return Coefficients(
        compute_s=pb.compute_s,
        hit_cnic_s=tuple(h / cn for h in pb.hit_bytes),
        new_cnic_s=tuple(n / cn for n in pb.new_bytes),
        prompt_cnic_s=tuple(p / cn for p in pb.prompt_bytes),
        token_cnic_s=kv / cn,
        token_snic_s=tuple(kv / s for s in pb.snic_bytes_per_s),
        snic_backlog_s=tuple(q / s for q, s in zip(pb.read_queue_bytes, pb.snic_bytes_per_s)),
        compute_backlog_s=pb.pe_backlog_s,
        hit_tokens=tuple(r.hit_tokens for r in pb.requests),
        pe_cap_tokens=tuple(pe_read_cap_tokens(pb, r) for r in range(pb.num_requests)),
    )


@dataclass
class ExactResult:
    """What an exact backend returns: a solution (None if none found), its status and a bound."""

    solution: Solution | None
    status: str  # "optimal", "feasible", "unknown", "infeasible", "crashed" (the backend died)
    bound_s: float  # certified lower bound on the fluid bottleneck time proved by the backend (0 if none)
    solve_time_s: float
    backend: str
