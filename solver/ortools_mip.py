"""OR-Tools pywraplp: the exact engine-level model as a MIP (SCIP by default), same sections and
variable names as CP-SAT's (`ortools_model`) and PuLP's (`pulp_model`)."""

from __future__ import annotations

import time

from dualpath.cluster import Role
from dualpath.errors import require
from dualpath.solver.coefficients import ExactResult, coefficients, engine_classes
from dualpath.solver.problem import Problem, Solution


def solve_mip(problem: Problem, split_reads: bool, time_limit_s: float, hint: Solution | None = None,
              backend: str = "SCIP", threads: int = 2, lower_bound_s: float = 0.0) -> ExactResult:
    pywraplp = require("ortools.linear_solver.pywraplp", "solver")
    start = time.perf_counter()
    pb, co = problem, coefficients(problem)
    kv = pb.kv_bytes_per_token
    R, P, D, N = range(pb.num_requests), range(pb.num_pe), range(pb.num_de), range(pb.num_nodes)
    solver = pywraplp.Solver.CreateSolver(backend)
    if solver is None:
        raise ValueError(f"OR-Tools was built without the {backend} MIP backend")
    inf = solver.infinity()

    # Variables
    x = {(r, p): solver.BoolVar(f"x[{r},{p}]") for r in R for p in P}
    y = {(r, d): solver.BoolVar(f"y[{r},{d}]") for r in R for d in D}
    a = {(r, p): solver.IntVar(0, co.pe_cap_tokens[r], f"a[{r},{p}]") for r in R for p in P}
    b = {(r, d): solver.IntVar(0, co.hit_tokens[r], f"b[{r},{d}]") for r in R for d in D}
    z = {r: solver.BoolVar(f"z[{r}]") for r in R} if not split_reads else {}
    T = solver.NumVar(lower_bound_s * (1 - 1e-9), inf, "T")

    def row(lb, ub, terms):
        c = solver.Constraint(lb, ub)
        for var, coef in terms:
            c.SetCoefficient(var, c.GetCoefficient(var) + coef)
        return c

    # Assignment: one PE and one DE per request
    for r in R:
        row(1, 1, [(x[r, p], 1) for p in P])
        row(1, 1, [(y[r, d], 1) for d in D])

    # Read linking: reads only through the chosen engines' nodes; all hit tokens read once
    for r in R:
        for p in P:
            row(-inf, 0, [(a[r, p], 1), (x[r, p], -co.pe_cap_tokens[r])])
        for d in D:
            row(-inf, 0, [(b[r, d], 1), (y[r, d], -co.hit_tokens[r])])
        row(co.hit_tokens[r], co.hit_tokens[r], [(a[r, p], 1) for p in P] + [(b[r, d], 1) for d in D])
        if not split_reads:
            row(0, 0, [(a[r, p], 1) for p in P] + [(z[r], -co.hit_tokens[r])])

    # SNIC per node
    for n in N:
        terms = [(a[r, p], co.token_snic_s[n]) for r in R for p in P if pb.pe_node[p] == n]
        terms += [(b[r, d], co.token_snic_s[n]) for r in R for d in D if pb.de_node[d] == n]
        row(-inf, -co.snic_backlog_s[n], [*terms, (T, -1)])

    # PE compute, CNIC in and CNIC out per engine
    for p in P:
        row(-inf, -co.compute_backlog_s[p], [(x[r, p], co.compute_s[r]) for r in R] + [(T, -1)])
        row(-inf, 0, [(x[r, p], co.hit_cnic_s[r]) for r in R] + [(T, -1)])
        row(-inf, 0, [(x[r, p], co.new_cnic_s[r]) for r in R] + [(a[r, p], co.token_cnic_s) for r in R] + [(T, -1)])

    # DE CNIC out and CNIC in per engine
    for d in D:
        row(-inf, 0, [(y[r, d], co.prompt_cnic_s[r]) for r in R] + [(b[r, d], co.token_cnic_s) for r in R]
            + [(T, -1)])
        row(-inf, 0, [(y[r, d], co.prompt_cnic_s[r]) for r in R] + [(b[r, d], -co.token_cnic_s) for r in R]
            + [(T, -1)])

    # DE HBM
    for d in D:
        row(-inf, pb.hbm_capacity_bytes[d], [(y[r, d], pb.context_bytes[r]) for r in R])

    # Symmetry breaking: interchangeable engines open in order of their first request
    for role, var in ((Role.PREFILL, x), (Role.DECODE, y)):
        for group in engine_classes(pb, role):
            for j in range(1, len(group)):
                for r in R:
                    row(-inf, 0, [(var[r, group[j]], 1)] + [(var[s, group[j - 1]], -1) for s in range(r)])

    # Objective
    solver.Minimize(T)
    if hint is not None:
        pairs = _hint_pairs(pb, hint, x, y, a, b, z)
        solver.SetHint([v for v, _ in pairs], [val for _, val in pairs])
    solver.SetTimeLimit(max(10, int(1000 * (time_limit_s - (time.perf_counter() - start)))))
    solver.SetNumThreads(max(1, threads))
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, 1e-9)  # MPSolver's default 1e-4 is not "optimal"
    params.SetDoubleParam(params.PRIMAL_TOLERANCE, 1e-9)  # rows violated by 1e-7 would show in T
    code = solver.Solve(params)

    # Status check
    status = {pywraplp.Solver.OPTIMAL: "optimal", pywraplp.Solver.FEASIBLE: "feasible",
              pywraplp.Solver.INFEASIBLE: "infeasible"}.get(code, "unknown")
    solution = None
    bound_s = 0.0
    if status in ("optimal", "feasible"):
        bound_s = max(0.0, solver.Objective().BestBound() * (1 - 1e-9))
        # Extraction
        solution = Solution(
            pe=[max(P, key=lambda p: x[r, p].solution_value()) for r in R],
            de=[max(D, key=lambda d: y[r, d].solution_value()) for r in R],
            pe_read_bytes=[kv * round(sum(a[r, p].solution_value() for p in P)) for r in R],
        )
    return ExactResult(solution, status, bound_s, time.perf_counter() - start, f"pywraplp-{backend.lower()}")


def _hint_pairs(pb: Problem, hint: Solution, x, y, a, b, z) -> list:
    kv = pb.kv_bytes_per_token
    pairs = []
    for r in range(pb.num_requests):
        pe_tokens = hint.pe_read_bytes[r] // kv
        for p in range(pb.num_pe):
            pairs += [(x[r, p], float(p == hint.pe[r])), (a[r, p], float(pe_tokens if p == hint.pe[r] else 0))]
        for d in range(pb.num_de):
            rest = pb.requests[r].hit_tokens - pe_tokens
            pairs += [(y[r, d], float(d == hint.de[r])), (b[r, d], float(rest if d == hint.de[r] else 0))]
        if z:
            pairs.append((z[r], float(pe_tokens > 0)))
    return pairs
