"""OR-Tools formulations: CP-SAT (exact, integer 0.1 ps) and the LP relaxation (GLOP).

The same model as a pywraplp MIP is in `ortools_mip`.

Same sections and variable names as `pulp_model`: x[r,p] request r on PE p, y[r,d] on DE d, a[r,p] and
b[r,d] hit tokens (integers) read through p's / d's node SNIC, z[r] = 1 for a PE-side read (whole reads), T the
bottleneck. Coefficients come from `coefficients.coefficients` (seconds per unit).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from dualpath.cluster import Role
from dualpath.errors import require
from dualpath.solver.bound import Relaxation, RelaxationSolution
from dualpath.solver.coefficients import ExactResult, coefficients, engine_classes
from dualpath.solver.problem import TIME_SCALE, Problem, Solution


def _ps(seconds: float) -> int:
    return round(seconds * TIME_SCALE)


# ---- CP-SAT: the exact engine-level model ---------------------------------------------------------
def solve_cpsat(problem: Problem, split_reads: bool, time_limit_s: float, hint: Solution | None = None,
                upper_bound_s: float | None = None, threads: int = 2, lower_bound_s: float = 0.0) -> ExactResult:
    """The exact model; `lower_bound_s` (a certified bound, e.g. from `bound.lower_bound`) is added as
    T >= bound, which lets the search stop as soon as it meets it."""
    cp_model = require("ortools.sat.python.cp_model", "solver")
    start = time.perf_counter()
    pb, co = problem, coefficients(problem)
    kv = pb.kv_bytes_per_token
    R, P, D, N = range(pb.num_requests), range(pb.num_pe), range(pb.num_de), range(pb.num_nodes)
    model = cp_model.CpModel()

    # Variables
    x = {(r, p): model.new_bool_var(f"x[{r},{p}]") for r in R for p in P}
    y = {(r, d): model.new_bool_var(f"y[{r},{d}]") for r in R for d in D}
    a = {(r, p): model.new_int_var(0, co.pe_cap_tokens[r], f"a[{r},{p}]") for r in R for p in P}
    b = {(r, d): model.new_int_var(0, co.hit_tokens[r], f"b[{r},{d}]") for r in R for d in D}
    z = {r: model.new_bool_var(f"z[{r}]") for r in R} if not split_reads else {}
    horizon = _ps(upper_bound_s) + 1 if upper_bound_s else _ps(_trivial_upper_s(pb, co))
    # Each rounded coefficient is off by at most half a unit: the slack keeps bounds certified.
    slack_ps = 0.5 * sum(3 + 2 * h for h in co.hit_tokens)
    T = model.new_int_var(max(0, int(_ps(lower_bound_s) - slack_ps)), max(horizon, _ps(lower_bound_s)), "T")

    # Assignment: one PE and one DE per request
    for r in R:
        model.add_exactly_one(x[r, p] for p in P)
        model.add_exactly_one(y[r, d] for d in D)

    # Read linking: reads only through the chosen engines' nodes; all hit tokens read once
    for r in R:
        for p in P:
            model.add(a[r, p] == 0).only_enforce_if(x[r, p].Not())
        for d in D:
            model.add(b[r, d] == 0).only_enforce_if(y[r, d].Not())
        model.add(sum(a[r, p] for p in P) + sum(b[r, d] for d in D) == co.hit_tokens[r])
        if not split_reads:
            model.add(sum(a[r, p] for p in P) == co.hit_tokens[r] * z[r])

    # Pooled SNICs (redundant: a weighted sum of the node rows below, coefficients rounded down so
    # it stays implied). With whole reads it involves z only, a knapsack CP-SAT reasons on directly.
    if split_reads:
        pe_side = {r: model.new_int_var(0, co.pe_cap_tokens[r], f"t[{r}]") for r in R}
        for r in R:
            model.add(pe_side[r] == sum(a[r, p] for p in P))
        sides = (lambda r: pe_side[r], lambda r: co.hit_tokens[r] - pe_side[r])
    else:
        sides = (lambda r: co.hit_tokens[r] * z[r], lambda r: co.hit_tokens[r] * (1 - z[r]))
    for nodes, reads in ((sorted(set(pb.pe_node)), sides[0]), (sorted(set(pb.de_node)), sides[1])):
        total = sum(pb.snic_bytes_per_s[n] for n in nodes)
        weight = min(int(pb.snic_bytes_per_s[n] / total * _ps(co.token_snic_s[n])) for n in nodes)
        backlog = sum(int(pb.snic_bytes_per_s[n] / total * _ps(co.snic_backlog_s[n])) for n in nodes)
        model.add(backlog + weight * sum(reads(r) for r in R) <= T)

    # SNIC per node
    for n in N:
        terms = [(a[r, p], _ps(co.token_snic_s[n])) for r in R for p in P if pb.pe_node[p] == n]
        terms += [(b[r, d], _ps(co.token_snic_s[n])) for r in R for d in D if pb.de_node[d] == n]
        model.add(_ps(co.snic_backlog_s[n]) + _weighted(cp_model, terms) <= T)

    # PE compute, CNIC in and CNIC out per engine
    for p in P:
        model.add(_ps(co.compute_backlog_s[p]) + _weighted(cp_model, [(x[r, p], _ps(co.compute_s[r])) for r in R]) <= T)
        model.add(_weighted(cp_model, [(x[r, p], _ps(co.hit_cnic_s[r])) for r in R]) <= T)
        model.add(_weighted(cp_model, [(x[r, p], _ps(co.new_cnic_s[r])) for r in R]
                            + [(a[r, p], _ps(co.token_cnic_s)) for r in R]) <= T)

    # DE CNIC out and CNIC in per engine
    for d in D:
        model.add(_weighted(cp_model, [(y[r, d], _ps(co.prompt_cnic_s[r])) for r in R]
                            + [(b[r, d], _ps(co.token_cnic_s)) for r in R]) <= T)
        model.add(_weighted(cp_model, [(y[r, d], _ps(co.prompt_cnic_s[r])) for r in R]
                            + [(b[r, d], -_ps(co.token_cnic_s)) for r in R]) <= T)

    # DE HBM
    for d in D:
        model.add(_weighted(cp_model, [(y[r, d], pb.context_bytes[r]) for r in R]) <= pb.hbm_capacity_bytes[d])

    # Symmetry breaking: interchangeable engines open in order of their first request
    for role, var in ((Role.PREFILL, x), (Role.DECODE, y)):
        for group in engine_classes(pb, role):
            for j in range(1, len(group)):
                for r in R:
                    model.add(var[r, group[j]] <= sum(var[s, group[j - 1]] for s in range(r)))

    # Objective; search the read sides first (the partition of hit bytes over SNICs), then engines
    model.minimize(T)
    if z:
        model.add_decision_strategy(list(z.values()), cp_model.CHOOSE_FIRST, cp_model.SELECT_MAX_VALUE)
    if hint is not None:
        _hint_cpsat(model, pb, hint, x, y, a, b, z)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit_s - (time.perf_counter() - start))
    solver.parameters.num_workers = max(1, threads)
    solver.parameters.random_seed = 1
    # Below the rounding slack, a "better" scaled solution may be no better in seconds: stop there.
    solver.parameters.absolute_gap_limit = 2 * slack_ps
    code = solver.solve(model)

    # Status check
    status = {cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible",
              cp_model.INFEASIBLE: "infeasible"}.get(code, "unknown")
    bound_s = max(0.0, (solver.best_objective_bound - slack_ps) / TIME_SCALE) if status != "unknown" else 0.0
    if status == "infeasible":
        bound_s = 0.0
    solution = None
    if status in ("optimal", "feasible"):
        # Extraction
        solution = Solution(
            pe=[next(p for p in P if solver.boolean_value(x[r, p])) for r in R],
            de=[next(d for d in D if solver.boolean_value(y[r, d])) for r in R],
            pe_read_bytes=[kv * sum(solver.value(a[r, p]) for p in P) for r in R],
        )
    return ExactResult(solution, status, bound_s, time.perf_counter() - start, "cp-sat")


def _weighted(cp_model, terms):
    if not terms:
        return 0
    return cp_model.LinearExpr.weighted_sum([v for v, _ in terms], [c for _, c in terms])


def _hint_cpsat(model, pb: Problem, hint: Solution, x, y, a, b, z) -> None:
    kv = pb.kv_bytes_per_token
    for r in range(pb.num_requests):
        pe_tokens = hint.pe_read_bytes[r] // kv
        for p in range(pb.num_pe):
            model.add_hint(x[r, p], p == hint.pe[r])
            model.add_hint(a[r, p], pe_tokens if p == hint.pe[r] else 0)
        for d in range(pb.num_de):
            model.add_hint(y[r, d], d == hint.de[r])
            model.add_hint(b[r, d], pb.requests[r].hit_tokens - pe_tokens if d == hint.de[r] else 0)
        if z:
            model.add_hint(z[r], pe_tokens > 0)


def _trivial_upper_s(pb: Problem, co) -> float:
    """Everything on one engine and one node: an upper bound on any optimal fluid bottleneck time."""
    total = max(co.snic_backlog_s) + max(co.compute_backlog_s, default=0.0)
    total += sum(co.compute_s) + sum(co.hit_cnic_s) + sum(co.new_cnic_s) + 2 * sum(co.prompt_cnic_s)
    total += sum(co.hit_tokens) * (max(co.token_snic_s) + 2 * co.token_cnic_s)
    return total + 1.0


# ---- GLOP: the LP relaxation over node classes ------------------------------------------------------
def solve_relaxation(relax: Relaxation, time_limit_s: float) -> RelaxationSolution | None:
    pywraplp = require("ortools.linear_solver.pywraplp", "solver")
    pb = relax.problem
    # Index sets: requests, classes of PE nodes, classes of DE nodes
    R, PC, DC = range(pb.num_requests), range(len(relax.pe_classes)), range(len(relax.de_classes))
    solver = pywraplp.Solver.CreateSolver("GLOP")
    inf = solver.infinity()
    gb = 1e-9  # bytes in GB keep the coefficients within a few orders of magnitude
    cn = pb.cnic_bytes_per_s * gb
    hit = [h * gb for h in pb.hit_bytes]
    new = [n * gb for n in pb.new_bytes]
    prompt = [p * gb for p in pb.prompt_bytes]
    context = [k * gb for k in pb.context_bytes]

    # Variables (fractions of request r on class i / j; GB read there)
    x = {(r, i): solver.NumVar(0, 1, "") for r in R for i in PC}
    y = {(r, j): solver.NumVar(0, 1, "") for r in R for j in DC}
    a = {(r, i): solver.NumVar(0, inf, "") for r in R for i in PC}
    b = {(r, j): solver.NumVar(0, inf, "") for r in R for j in DC}
    T = solver.NumVar(relax.constant_s, inf, "T")

    def row(lb: float, ub: float, terms: Sequence[tuple[Any, float]]) -> Any:
        c = solver.Constraint(lb, ub)
        for var, coef in terms:
            c.SetCoefficient(var, coef)
        return c

    # Assignment and read linking
    for r in R:
        row(1, 1, [(x[r, i], 1) for i in PC])
        row(1, 1, [(y[r, j], 1) for j in DC])
        for i in PC:
            row(-inf, 0, [(a[r, i], 1), (x[r, i], -pb.pe_read_cap_bytes(r) * gb)])
        for j in DC:
            row(-inf, 0, [(b[r, j], 1), (y[r, j], -hit[r])])
        row(hit[r], hit[r], [(a[r, i], 1) for i in PC] + [(b[r, j], 1) for j in DC])

    # SNIC per class, then engine resources pooled per class
    rows: dict[tuple[str, str, int] | tuple[str, int], Any] = {}  # the rows whose duals name the binding family
    for i, c in enumerate(relax.pe_classes):
        rows["snic", "pe", i] = row(-inf, -c.read_queue_bytes * gb,
                                    [(a[r, i], 1) for r in R] + [(T, -c.snic_bytes_per_s * gb)])
        rows["pe_compute", i] = row(-inf, -c.compute_backlog_s,
                                    [(x[r, i], pb.compute_s[r]) for r in R] + [(T, -c.num_engines)])
        rows["pe_cnic_in", i] = row(-inf, 0, [(x[r, i], hit[r]) for r in R] + [(T, -c.num_engines * cn)])
        rows["pe_cnic_out", i] = row(-inf, 0, [(x[r, i], new[r]) for r in R] + [(a[r, i], 1) for r in R]
                                     + [(T, -c.num_engines * cn)])
    for j, c in enumerate(relax.de_classes):
        rows["snic", "de", j] = row(-inf, -c.read_queue_bytes * gb,
                                    [(b[r, j], 1) for r in R] + [(T, -c.snic_bytes_per_s * gb)])
        rows["de_cnic_out", j] = row(-inf, 0, [(y[r, j], prompt[r]) for r in R]
                                     + [(b[r, j], 1) for r in R] + [(T, -c.num_engines * cn)])
        rows["de_cnic_in", j] = row(-inf, 0, [(y[r, j], prompt[r]) for r in R]
                                    + [(b[r, j], -1) for r in R] + [(T, -c.num_engines * cn)])
        row(-inf, c.hbm_capacity_bytes * gb, [(y[r, j], context[r]) for r in R])

    # Objective
    solver.Minimize(T)
    solver.SetTimeLimit(max(10, int(1000 * time_limit_s)))
    code = solver.Solve()
    if code != pywraplp.Solver.OPTIMAL:
        return RelaxationSolution(0.0, "unknown")
    value = T.solution_value()
    tight = [k for k, c in rows.items() if abs(c.dual_value()) > 1e-12]
    binding = max(tight, key=lambda k: abs(rows[k].dual_value()))[0] if tight else "constant"
    # GLOP's tolerance is ~1e-7 relative; shave it so the bound stays certified.
    return RelaxationSolution(
        value_s=value * (1 - 1e-7), status="optimal",
        pe_read_bytes={i: sum(a[r, i].solution_value() for r in R) / gb for i in PC},
        binding=binding,
    )
