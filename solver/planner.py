"""`make_plan`: specs + requests in, a `Plan` out, always with its lower bound and gap.

Steps: build the problem; the paper's greedy (baseline, warm start, fallback); the lower bound (fluid,
and the LP relaxation when node classes differ); then either an exact model (small instances: CP-SAT,
SCIP through pywraplp, or PuLP with CBC / HiGHS, warm-started) or the decomposition (node level, then
engines, then bottleneck descent) until the time limit or the bound. The best plan found is returned
and never one worse than the greedy.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from dualpath.cluster import ClusterSpec
from dualpath.errors import MissingExtraError, UnknownNameError, require
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment, Plan
from dualpath.request import Request
from dualpath.solver import decompose, descent
from dualpath.solver.bound import Bound, lower_bound
from dualpath.solver.greedy import greedy_solution
from dualpath.solver.partition import integral_read_nodes, integral_read_sides
from dualpath.solver.problem import Backlog, Loads, Problem, Solution, build_problem, solution_from_plan
from dualpath.solver.resplit import balance_reads, resplit

# solver name -> (exact backend, LP backend for the bound)
SOLVERS = {
    "ortools": ("cp-sat", "ortools"),
    "ortools-mip": ("scip", "ortools"),
    "pulp": ("cbc", "pulp-cbc"),
    "pulp-highs": ("highs", "pulp-highs"),
    "greedy": (None, "ortools"),
}
BACKEND_MODULES = {
    "ortools": ("ortools.sat.python.cp_model", "ortools.linear_solver.pywraplp"),
    "ortools-mip": ("ortools.linear_solver.pywraplp",),
    "pulp": ("pulp",),
    "pulp-highs": ("pulp", "highspy"),
}
EXACT_MAX_REQUESTS = 40
EXACT_MAX_BINARIES = 4_000  # x and y variables; PuLP's CBC ignores time limits well beyond this
TARGET_GAP = 1e-6  # the decomposition stops improving once this close to the bound


class PlannerWarning(UserWarning):
    """The planner changed method because a backend cannot handle the instance's size."""


def make_plan(cluster: ClusterSpec, llm: LLMSpec, requests: Sequence[Request], solver: str = "ortools",
              split_reads: bool = False, time_limit_s: float = 10.0, backlog: Backlog | None = None,
              block_tokens: int = 64, threads: int = 2, exact: bool | None = None) -> Plan:
    """Plan `requests` on `cluster`. `exact`: force (True) or forbid (False) the exact model; by default
    it is used when the instance is small enough to prove optimality within the time limit."""
    plan, _, _ = plan_with_problem(cluster, llm, requests, solver, split_reads, time_limit_s, backlog,
                                   block_tokens, threads, exact)
    return plan


def plan_with_problem(cluster: ClusterSpec, llm: LLMSpec, requests: Sequence[Request], solver: str = "ortools",
                      split_reads: bool = False, time_limit_s: float = 10.0, backlog: Backlog | None = None,
                      block_tokens: int = 64, threads: int = 2, exact: bool | None = None
                      ) -> tuple[Plan, Problem, Solution]:
    """`make_plan`, also returning the problem and solution (for explanations and charts)."""
    key = solver.strip().lower()
    if key not in SOLVERS:
        raise UnknownNameError("solver", solver, list(SOLVERS))
    exact_backend, lp_backend = SOLVERS[key]
    started = time.perf_counter()
    for module in BACKEND_MODULES.get(key, ()):
        require(module, "solver")  # say which extra to install before any work, whatever the size
    deadline = started + max(0.0, time_limit_s)
    # The re-split and read balancing after the search take ~0.3 s on 1,000 requests: the search
    # stops early enough for the whole plan to fit the limit.
    search_deadline = deadline - min(0.5, 0.1 * max(0.0, time_limit_s))
    problem = build_problem(cluster, llm, requests, backlog, block_tokens)
    notes: list[str] = []

    greedy = greedy_solution(problem)
    greedy_s = Loads(problem, greedy).makespan_s()
    best_bound, bounds = lower_bound(problem, split_reads, lp_backend,
                                     time_limit_s=max(0.05, 0.3 * (deadline - time.perf_counter())), notes=notes)
    if key == "greedy":
        return _finish(problem, greedy, greedy_s, best_bound, bounds, "greedy", "greedy", "paper-rules",
                       started, split_reads, notes)

    candidates: list[tuple[float, str, Solution]] = [(greedy_s, "greedy", greedy)]
    status, method = "feasible", "decomposition"
    binaries = problem.num_requests * (problem.num_pe + problem.num_de)
    small = problem.num_requests <= EXACT_MAX_REQUESTS and binaries <= EXACT_MAX_BINARIES
    if exact and not small and key.startswith("pulp"):
        notes.append(_warn(f"{key}: {binaries:,} binaries exceed the {EXACT_MAX_BINARIES:,} PuLP's CBC solves "
                           f"within a time limit; decomposed instead"))
        exact = False
    use_exact = small if exact is None else exact
    if not use_exact and key.startswith("pulp") and not small:
        notes.append(f"{key}: {problem.num_requests:,} requests x {problem.num_pe + problem.num_de} engines is "
                     f"beyond the exact PuLP model; decomposed (nodes, engines, bottleneck descent), "
                     f"bound by the fluid / LP relaxation")

    # A fast decomposition plan first: it is the warm start of the exact model, or the answer.
    start_sol = decompose.construct(problem, split_reads)
    candidates.append((Loads(problem, start_sol).makespan_s(), "decomposition", start_sol))
    seeds = [("decomposition", start_sol, split_reads), ("greedy", greedy, split_reads)]
    if split_reads:
        # Every whole-read plan is a split plan: the whole-read descent runs too, so that a split plan
        # never ends above the whole-read plan of the same instance (the two descents have different
        # moves and local optima).
        whole_sol = decompose.construct(problem, False)
        candidates.append((Loads(problem, whole_sol).makespan_s(), "decomposition", whole_sol))
        seeds[1:1] = [("whole-read decomposition", whole_sol, False)]
        seeds.append(("whole-read greedy", greedy, False))
    if not split_reads and small:
        # Whole reads on a small instance: start from the read sides that meet the integral bound, and
        # from those sides partitioned over each side's nodes (a multiway partition MIPs handle badly).
        sides = integral_read_sides(problem)
        nodes = integral_read_nodes(problem, sides) if sides is not None else None
        starts = ([{"pe_side": sides}] if sides is not None else []) + ([{"read_node": nodes}] if nodes else [])
        for kwargs in starts:
            seeded = decompose.construct(problem, False, **kwargs)
            seeded = descent.improve(problem, seeded, False, time.perf_counter() + 0.05 * time_limit_s,
                                       best_bound.value_s)
            candidates.append((Loads(problem, seeded).makespan_s(), "decomposition", seeded))
    if use_exact and min(c[0] for c in candidates) <= best_bound.value_s * (1 + 1e-9):
        status, method = "optimal", "decomposition"  # a start already meets the certified bound
    elif use_exact:
        hint = min(candidates, key=lambda c: c[0])
        result = _solve_exact(problem, exact_backend, split_reads, search_deadline, hint, threads,
                              best_bound.value_s)
        method = result.backend
        if result.solution is not None:
            candidates.append((Loads(problem, result.solution).makespan_s(), result.backend, result.solution))
        if result.bound_s > best_bound.value_s:
            best_bound = Bound(result.bound_s, best_bound.family, "solver")
            bounds.append(best_bound)
        if result.status == "optimal":
            status = "optimal"
        elif result.status != "feasible":
            notes.append(f"{result.backend}: crashed; the best other plan stands" if result.status == "crashed"
                         else f"{result.backend}: {result.status} within the time limit")
    else:
        target = best_bound.value_s * (1 + TARGET_GAP)
        for i, (seed_name, seed, split) in enumerate(seeds):
            if time.perf_counter() >= search_deadline:
                break
            share = (search_deadline - time.perf_counter()) / (len(seeds) - i)
            improved = descent.improve(problem, seed, split, time.perf_counter() + share, target)
            candidates.append((Loads(problem, improved).makespan_s(), f"{seed_name}+descent", improved))
            if min(c[0] for c in candidates) <= target:
                break

    if split_reads and status != "optimal":
        best = min(candidates, key=lambda c: c[0])
        try:
            resplit_sol = resplit(problem, best[2], max(0.05, deadline - time.perf_counter()))
        except MissingExtraError as exc:  # PuLP alone: the re-split LP needs OR-Tools' GLOP
            resplit_sol = None
            notes.append(f"re-split skipped: {exc}")
        if resplit_sol is not None:
            candidates.append((Loads(problem, resplit_sol).makespan_s(), f"{best[1]}+resplit", resplit_sol))
    makespan, origin, solution = min(candidates, key=lambda c: (c[0], c[1] != "greedy"))
    if origin != "greedy" and Loads(problem, solution).binding()[0] != "snic":
        try:
            balanced = balance_reads(problem, solution, split_reads, max(0.05, deadline - time.perf_counter()))
        except MissingExtraError:
            balanced = solution
        if Loads(problem, balanced).makespan_s() <= makespan:
            solution = balanced
    if origin == "greedy" and makespan >= greedy_s and status != "optimal":
        status = "fallback"
    if makespan <= best_bound.value_s * (1 + 1e-9):
        status = "optimal"
    return _finish(problem, solution, makespan, best_bound, bounds, key, status, method if origin != "greedy"
                   else "paper-rules", started, split_reads, notes, greedy_s)


def _solve_exact(problem: Problem, backend: str, split_reads: bool, deadline: float, hint, threads: int,
                 bound_s: float):
    limit = max(0.05, deadline - time.perf_counter())
    upper_s, _, hint_sol = hint
    if backend == "cp-sat":
        from dualpath.solver.ortools_model import solve_cpsat

        return solve_cpsat(problem, split_reads, limit, hint_sol, upper_bound_s=upper_s, threads=threads,
                           lower_bound_s=bound_s)
    if backend == "scip":
        from dualpath.solver.ortools_mip import solve_mip

        return solve_mip(problem, split_reads, limit, hint_sol, backend="SCIP", threads=threads,
                         lower_bound_s=bound_s)
    from dualpath.solver.pulp_model import solve_mip

    return solve_mip(problem, split_reads, limit, hint_sol, backend=backend, threads=threads, lower_bound_s=bound_s)


def _warn(message: str) -> str:
    warnings.warn(message, PlannerWarning, stacklevel=3)
    return message


def _finish(problem: Problem, solution: Solution, makespan: float, bound: Bound, bounds: list[Bound],
            solver: str, status: str, method: str, started: float, split_reads: bool, notes: list[str],
            greedy_s: float | None = None) -> tuple[Plan, Problem, Solution]:
    loads = Loads(problem, solution)
    family, index, _ = loads.binding()
    plan = Plan(
        solver=solver, status=status, assignments=assignments_of(problem, solution), makespan_s=makespan,
        lower_bound_s=min(bound.value_s, makespan), solve_time_s=time.perf_counter() - started,
        greedy_makespan_s=greedy_s if greedy_s is not None else makespan, split_reads=split_reads,
        meta={
            "cluster": problem.cluster.name or problem.cluster.shorthand, "model": problem.llm.name,
            "num_requests": problem.num_requests, "method": method,
            "binding_family": family, "binding_resource": problem.resource_name(family, index),
            "bound_family": bound.family, "bound_kind": bound.kind,
            "bounds": [{"kind": b.kind, "family": b.family, "value_s": b.value_s} for b in bounds],
            "hbm_waves": problem.hbm_waves, "notes": notes,
        },
    )
    return plan, problem, solution


def assignments_of(problem: Problem, solution: Solution) -> list[Assignment]:
    """Assignments in request order; per PE a FIFO order and compute-only predicted times."""
    pb = problem
    clock = list(pb.pe_backlog_s)
    order = [0] * pb.num_pe
    out = []
    for r, req in enumerate(pb.requests):
        p = solution.pe[r]
        start = clock[p]
        clock[p] += pb.compute_s[r]
        a = solution.pe_read_bytes[r]
        out.append(Assignment(req.id, pb.pe_names[p], pb.de_names[solution.de[r]], int(a),
                              int(pb.hit_bytes[r] - a), order=order[p], predicted_start_s=start,
                              predicted_end_s=clock[p]))
        order[p] += 1
    return out


def write_plan_outputs(out_dir: str | Path, problem: Problem, plan: Plan, max_explained: int = 2000) -> list[Path]:
    """The per-resource load chart (PNG) and the explanations (Markdown) of `plan` under `out_dir`."""
    from dualpath.solver.charts import write_outputs
    from dualpath.solver.explain import explain

    solution = solution_from_plan(problem, plan.assignments)
    explanation = explain(problem, solution, plan.lower_bound_s, max_requests=max_explained)
    return write_outputs(out_dir, problem, solution, plan, explanation)
