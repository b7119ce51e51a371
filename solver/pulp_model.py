"""PuLP formulations (CBC or HiGHS): the exact engine-level MIP and the LP relaxation.

Same sections and variable names as `ortools_model`: x[r,p] request r on PE p, y[r,d] on DE d, a[r,p]
and b[r,d] hit tokens (integers) read through p's / d's node SNIC, z[r] = 1 for a PE-side read (whole reads),
T the fluid bottleneck time in seconds. CBC does not honour time limits reliably on large models, so the planner
only sends PuLP models up to `MAX_MIP_BINARIES` binaries (larger instances are decomposed).
"""

from __future__ import annotations

import time
import warnings

from dualpath.cluster import Role
from dualpath.errors import require
from dualpath.solver.bound import Relaxation, RelaxationSolution
from dualpath.solver.coefficients import ExactResult, coefficients, engine_classes
from dualpath.solver.problem import Problem, Solution

MAX_MIP_BINARIES = 4_000
MAX_LP_VARIABLES = 60_000
BACKENDS = ("cbc", "highs")


def _solver(pulp, backend: str, time_limit_s: float, threads: int, gap: float = 1e-9):
    limit = max(1, round(time_limit_s))
    if backend == "cbc":
        # `increment`: CBC only accepts a solution 1e-5 (absolute) better than its incumbent by
        # default, which on bottleneck times of ~0.1 s stops it 2e-6 (relative) above the optimum.
        with warnings.catch_warnings():  # PuLP 3.3 deprecates its bundled CBC in favour of pulp[cbc]
            warnings.simplefilter("ignore", DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, threads=threads, gapRel=gap, gapAbs=0,
                                     warmStart=True,
                                     options=["randomSeed 1", "randomCbcSeed 1", "primalTolerance 1e-9",
                                              "increment 1e-12"])
    if backend == "highs":
        require("highspy", "solver")
        # No `threads`: HiGHS keeps one global scheduler per process and refuses a different count.
        # Tight tolerances: a row violated by the default 1e-7 shows as a fluid bottleneck time 1e-6 too long.
        return pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=gap, gapAbs=0, random_seed=1,
                          primal_feasibility_tolerance=1e-9, mip_feasibility_tolerance=1e-9)
    raise ValueError(f"unknown PuLP backend {backend!r}: expected one of {', '.join(BACKENDS)}")


# ---- the exact engine-level model ------------------------------------------------------------------
def solve_mip(problem: Problem, split_reads: bool, time_limit_s: float, hint: Solution | None = None,
              backend: str = "cbc", threads: int = 2, lower_bound_s: float = 0.0) -> ExactResult:
    pulp = require("pulp", "solver")
    start = time.perf_counter()
    pb, co = problem, coefficients(problem)
    kv = pb.kv_bytes_per_token
    R, P, D, N = range(pb.num_requests), range(pb.num_pe), range(pb.num_de), range(pb.num_nodes)
    model = pulp.LpProblem("dualpath_plan", pulp.LpMinimize)

    # Variables
    x = {(r, p): model.add_variable(f"x_{r}_{p}", cat="Binary") for r in R for p in P}
    y = {(r, d): model.add_variable(f"y_{r}_{d}", cat="Binary") for r in R for d in D}
    a = {(r, p): model.add_variable(f"a_{r}_{p}", 0, co.pe_cap_tokens[r], cat="Integer") for r in R for p in P}
    b = {(r, d): model.add_variable(f"b_{r}_{d}", 0, co.hit_tokens[r], cat="Integer") for r in R for d in D}
    z = {r: model.add_variable(f"z_{r}", cat="Binary") for r in R} if not split_reads else {}
    T = model.add_variable("T", lower_bound_s * (1 - 1e-9))  # a certified bound, when given

    # Objective
    model += T

    # Assignment: one PE and one DE per request
    for r in R:
        model += pulp.lpSum(x[r, p] for p in P) == 1
        model += pulp.lpSum(y[r, d] for d in D) == 1

    # Read linking: reads only through the chosen engines' nodes; all hit tokens read once
    for r in R:
        for p in P:
            model += a[r, p] <= co.pe_cap_tokens[r] * x[r, p]
        for d in D:
            model += b[r, d] <= co.hit_tokens[r] * y[r, d]
        model += pulp.lpSum(a[r, p] for p in P) + pulp.lpSum(b[r, d] for d in D) == co.hit_tokens[r]
        if not split_reads:
            model += pulp.lpSum(a[r, p] for p in P) == co.hit_tokens[r] * z[r]

    # SNIC per node
    for n in N:
        reads = [a[r, p] for r in R for p in P if pb.pe_node[p] == n]
        reads += [b[r, d] for r in R for d in D if pb.de_node[d] == n]
        model += co.snic_backlog_s[n] + co.token_snic_s[n] * pulp.lpSum(reads) <= T

    # PE compute, CNIC in and CNIC out per engine
    for p in P:
        model += co.compute_backlog_s[p] + pulp.lpSum(co.compute_s[r] * x[r, p] for r in R) <= T
        model += pulp.lpSum(co.hit_cnic_s[r] * x[r, p] for r in R) <= T
        model += pulp.lpSum(co.new_cnic_s[r] * x[r, p] + co.token_cnic_s * a[r, p] for r in R) <= T

    # DE CNIC out and CNIC in per engine
    for d in D:
        model += pulp.lpSum(co.prompt_cnic_s[r] * y[r, d] + co.token_cnic_s * b[r, d] for r in R) <= T
        model += pulp.lpSum(co.prompt_cnic_s[r] * y[r, d] - co.token_cnic_s * b[r, d] for r in R) <= T

    # DE HBM
    for d in D:
        model += pulp.lpSum(pb.context_bytes[r] * y[r, d] for r in R) <= pb.hbm_capacity_bytes[d]

    # Symmetry breaking: interchangeable engines open in order of their first request
    for role, var in ((Role.PREFILL, x), (Role.DECODE, y)):
        for group in engine_classes(pb, role):
            for j in range(1, len(group)):
                for r in R:
                    model += var[r, group[j]] <= pulp.lpSum(var[s, group[j - 1]] for s in range(r))

    if hint is not None:
        _set_hint(pb, hint, x, y, a, b, z)
    solver = _solver(pulp, backend, time_limit_s - (time.perf_counter() - start), threads)
    try:
        model.solve(solver)
    except pulp.PulpSolverError:
        # CBC's binary occasionally dies (seen with 2 threads); the planner keeps its other plans.
        return ExactResult(None, "crashed", 0.0, time.perf_counter() - start, f"pulp-{backend}")

    # Status check
    has_values = T.varValue is not None and all(x[r, p].varValue is not None for r in R for p in P)
    if model.status == pulp.LpStatusInfeasible:
        return ExactResult(None, "infeasible", 0.0, time.perf_counter() - start, f"pulp-{backend}")
    if not has_values:
        return ExactResult(None, "unknown", 0.0, time.perf_counter() - start, f"pulp-{backend}")
    proved = model.status == pulp.LpStatusOptimal and pulp.LpSolutionOptimal == model.sol_status
    # Extraction
    solution = Solution(
        pe=[max(P, key=lambda p: x[r, p].varValue or 0.0) for r in R],
        de=[max(D, key=lambda d: y[r, d].varValue or 0.0) for r in R],
        pe_read_bytes=[kv * round(sum(a[r, p].varValue or 0.0 for p in P)) for r in R],
    )
    # The MIP gap tolerance is 1e-9: an optimal status certifies T within it.
    bound_s = T.varValue * (1 - 2e-9) if proved else 0.0
    return ExactResult(solution, "optimal" if proved else "feasible", bound_s, time.perf_counter() - start,
                       f"pulp-{backend}")


def _set_hint(pb: Problem, hint: Solution, x, y, a, b, z) -> None:
    kv = pb.kv_bytes_per_token
    for r in range(pb.num_requests):
        pe_tokens = hint.pe_read_bytes[r] // kv
        for p in range(pb.num_pe):
            x[r, p].setInitialValue(int(p == hint.pe[r]))
            a[r, p].setInitialValue(pe_tokens if p == hint.pe[r] else 0)
        for d in range(pb.num_de):
            y[r, d].setInitialValue(int(d == hint.de[r]))
            b[r, d].setInitialValue(pb.requests[r].hit_tokens - pe_tokens if d == hint.de[r] else 0)
        if z:
            z[r].setInitialValue(int(pe_tokens > 0))


# ---- the LP relaxation over node classes --------------------------------------------------------
def solve_relaxation(relax: Relaxation, time_limit_s: float, backend: str = "highs") -> RelaxationSolution | None:
    pulp = require("pulp", "solver")
    pb = relax.problem
    # Index sets: requests, classes of PE nodes, classes of DE nodes
    R, PC, DC = range(pb.num_requests), range(len(relax.pe_classes)), range(len(relax.de_classes))
    gb = 1e-9  # bytes in GB keep the coefficients within a few orders of magnitude
    cn = pb.cnic_bytes_per_s * gb
    hit = [h * gb for h in pb.hit_bytes]
    new = [n * gb for n in pb.new_bytes]
    prompt = [p * gb for p in pb.prompt_bytes]
    context = [k * gb for k in pb.context_bytes]
    model = pulp.LpProblem("dualpath_relaxation", pulp.LpMinimize)

    # Variables (fractions of request r on class i / j; GB read there)
    x = {(r, i): model.add_variable(f"x_{r}_{i}", 0, 1) for r in R for i in PC}
    y = {(r, j): model.add_variable(f"y_{r}_{j}", 0, 1) for r in R for j in DC}
    a = {(r, i): model.add_variable(f"a_{r}_{i}", 0) for r in R for i in PC}
    b = {(r, j): model.add_variable(f"b_{r}_{j}", 0) for r in R for j in DC}
    T = model.add_variable("T", relax.constant_s)

    # Objective
    model += T

    # Assignment and read linking
    for r in R:
        model += pulp.lpSum(x[r, i] for i in PC) == 1
        model += pulp.lpSum(y[r, j] for j in DC) == 1
        for i in PC:
            model += a[r, i] <= pb.pe_read_cap_bytes(r) * gb * x[r, i]
        for j in DC:
            model += b[r, j] <= hit[r] * y[r, j]
        model += pulp.lpSum(a[r, i] for i in PC) + pulp.lpSum(b[r, j] for j in DC) == hit[r]

    # SNIC per class, then engine resources pooled per class
    for i, c in enumerate(relax.pe_classes):
        model += (c.read_queue_bytes * gb + pulp.lpSum(a[r, i] for r in R) <= c.snic_bytes_per_s * gb * T,
                  f"snic_pe_{i}")
        model += (c.compute_backlog_s + pulp.lpSum(pb.compute_s[r] * x[r, i] for r in R) <= c.num_engines * T,
                  f"pe_compute_{i}")
        model += (pulp.lpSum(hit[r] * x[r, i] for r in R) <= c.num_engines * cn * T, f"pe_cnic_in_{i}")
        model += (pulp.lpSum(new[r] * x[r, i] + a[r, i] for r in R) <= c.num_engines * cn * T,
                  f"pe_cnic_out_{i}")
    for j, c in enumerate(relax.de_classes):
        model += (c.read_queue_bytes * gb + pulp.lpSum(b[r, j] for r in R) <= c.snic_bytes_per_s * gb * T,
                  f"snic_de_{j}")
        model += (pulp.lpSum(prompt[r] * y[r, j] + b[r, j] for r in R) <= c.num_engines * cn * T,
                  f"de_cnic_out_{j}")
        model += (pulp.lpSum(prompt[r] * y[r, j] - b[r, j] for r in R) <= c.num_engines * cn * T,
                  f"de_cnic_in_{j}")
        model += pulp.lpSum(context[r] * y[r, j] for r in R) <= c.hbm_capacity_bytes * gb

    model.solve(_solver(pulp, backend, time_limit_s, 1))
    if model.status != pulp.LpStatusOptimal or T.varValue is None:
        return RelaxationSolution(0.0, "unknown")
    named = [c for c in model.constraints() if (c.name or "").startswith(("snic", "pe_", "de_"))]
    duals = {c.name: abs(c.pi or 0.0) for c in named}
    binding = max(duals, key=lambda name: duals[name]) if duals and max(duals.values()) > 1e-12 else "constant"
    family = "snic" if binding.startswith("snic") else binding.rsplit("_", 1)[0]
    return RelaxationSolution(
        value_s=T.varValue * (1 - 1e-7), status="optimal",
        pe_read_bytes={i: sum(a[r, i].varValue or 0.0 for r in R) / gb for i in PC}, binding=family,
    )
