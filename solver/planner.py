"""`make_plan`: specs + requests in, a `Plan` out, always with its fluid lower bound and the gap to it.

Steps: build the problem; the paper's greedy (baseline, warm start, fallback); the lower bound (fluid,
and the LP relaxation when node classes differ); then either an exact model (small instances: CP-SAT,
SCIP through pywraplp, or PuLP with CBC / HiGHS, warm-started) or the decomposition (node level, then
engines, then bottleneck descent) until the time limit or the bound. The best plan found is returned
and never one worse than the greedy.

The time limit bounds the whole call, the problem's build included: every phase stops at the deadline
(the greedy too, placing what it has not reached on the least-loaded engines), and a plan cut short
says so (status "fallback", a note). Costs are the `llm`'s: callers pass `calibrated_llm(llm)` from
`dualpath.calibration`, the cost model the simulator executes (`dualpath plan` does), so the plan's
compute coefficients are the step times it will be replayed with.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from dualpath.cluster import ClusterSpec
from dualpath.errors import MissingExtraError, UnknownNameError
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment, Plan
from dualpath.request import Request
from dualpath.solver.bound import Bound, lower_bound
from dualpath.solver.greedy import greedy_until
from dualpath.solver.problem import Backlog, Loads, Problem, Solution, build_problem, solution_from_plan
from dualpath.solver.search import Candidate, Search

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
        _check_installed(module)  # say which extra to install before any work, whatever the size
    deadline = started + max(0.0, time_limit_s)
    # The re-split and read balancing after the search take ~0.3 s on 1,000 requests: the search
    # stops early enough for the whole plan to fit the limit.
    search_deadline = deadline - min(0.5, 0.1 * max(0.0, time_limit_s))
    problem = build_problem(cluster, llm, requests, backlog, block_tokens)
    notes: list[str] = []

    greedy, placed = greedy_until(problem, search_deadline)
    greedy_loads = Loads(problem, greedy)
    greedy_s = greedy_loads.fluid_bottleneck_s()
    cut, late = placed < problem.num_requests, time.perf_counter() >= search_deadline
    # `--solver greedy` asks for nothing more than the greedy: only a cut one is a fallback.
    time_up = cut or (late and exact_backend is not None)
    # Out of time: the fluid bound alone (O(R)), no LP.
    best_bound, bounds = lower_bound(problem, split_reads, None if late else lp_backend,
                                     time_limit_s=max(0.05, 0.3 * (deadline - time.perf_counter())), notes=notes,
                                     deadline=search_deadline)
    if time_up:
        if cut:
            notes.append(f"time limit: the paper's rules placed {placed:,} of {problem.num_requests:,} requests, "
                         f"the rest went to the least-loaded engines; no search")
            method = "paper-rules, cut by the time limit"
        else:
            notes.append("time limit: reached after the paper's rules; no search")
            method = "paper-rules"
        return _finish(problem, greedy, greedy_s, best_bound, bounds, key, "fallback", method,
                       started, split_reads, notes, greedy_s, greedy_loads)
    if exact_backend is None:  # "greedy": the paper's rules alone
        return _finish(problem, greedy, greedy_s, best_bound, bounds, "greedy", "greedy", "paper-rules",
                       started, split_reads, notes, loads=greedy_loads)

    search = Search(problem, split_reads, best_bound, bounds, notes, Candidate(greedy_s, "greedy", greedy))
    use_exact, small = _use_exact(problem, key, exact, notes)
    seeds = search.add_starts(greedy, small, time_limit_s, search_deadline)
    status, method = "feasible", "decomposition"
    if use_exact and search.best().fluid_bottleneck_s <= best_bound.value_s * (1 + 1e-9):
        status = "optimal"  # a start already meets the certified bound
    elif time.perf_counter() >= search_deadline:
        notes.append("time limit: reached before the search")
    elif use_exact:
        status, method = search.run_exact(exact_backend, search_deadline, threads)
    else:
        search.run_descents(seeds, search_deadline, TARGET_GAP)
    if split_reads and status != "optimal" and time.perf_counter() < search_deadline:
        search.add_resplit(deadline)

    best = search.pick()
    solution = search.balanced(best, deadline)
    if best.origin == "greedy" and best.fluid_bottleneck_s >= greedy_s and status != "optimal":
        status = "fallback"
    if best.fluid_bottleneck_s <= search.bound.value_s * (1 + 1e-9):
        status = "optimal"
    return _finish(problem, solution, best.fluid_bottleneck_s, search.bound, search.bounds, key, status,
                   method if best.origin != "greedy" else "paper-rules", started, split_reads, notes, greedy_s)


def _use_exact(problem: Problem, key: str, exact: bool | None, notes: list[str]) -> tuple[bool, bool]:
    """(use the exact model, the instance is small enough for it): `exact` unless PuLP cannot."""
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
    return use_exact, small


def _check_installed(module: str) -> None:
    """`MissingExtraError` unless `module` can be imported; found, not imported: importing CP-SAT (and
    the pandas it loads) takes ~1 s, which a short time limit cannot afford when the search never runs."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        found = False
    if not found:
        raise MissingExtraError(module, "solver")


def _warn(message: str) -> str:
    # Past _warn, _use_exact and plan_with_problem: the warning names the line that asked for the plan.
    warnings.warn(message, PlannerWarning, stacklevel=4)
    return message


def _finish(problem: Problem, solution: Solution, bottleneck: float, bound: Bound, bounds: list[Bound],
            solver: str, status: str, method: str, started: float, split_reads: bool, notes: list[str],
            greedy_s: float | None = None, loads: Loads | None = None) -> tuple[Plan, Problem, Solution]:
    family, index, _ = (loads if loads is not None else Loads(problem, solution)).binding()
    plan = Plan(
        solver=solver, status=status, assignments=assignments_of(problem, solution), fluid_bottleneck_s=bottleneck,
        lower_bound_s=min(bound.value_s, bottleneck), solve_time_s=time.perf_counter() - started,
        greedy_fluid_bottleneck_s=greedy_s if greedy_s is not None else bottleneck, split_reads=split_reads,
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
