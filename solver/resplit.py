"""Re-split: the best PE/DE split of every request's hit bytes for a fixed engine assignment (an LP).

With engines fixed, compute and PE CNIC-in loads are constants and every other time resource is
linear in the PE-side bytes a[r], so the best split is one small LP (GLOP). The planner applies it to
its best split-read candidates: the descent moves one request at a time and stops at local optima a
whole-read plan can beat, whereas a plan re-split here is never worse than the plan it starts from.
"""

from __future__ import annotations

from dualpath.errors import require
from dualpath.solver.problem import Loads, Problem, Solution

GB = 1e-9  # bytes in GB keep the LP's coefficients within a few orders of magnitude


def resplit(problem: Problem, solution: Solution, time_limit_s: float = 1.0) -> Solution | None:
    """`solution` with each request's PE-side bytes re-chosen to minimise the makespan (whole tokens);
    None when the LP does not solve in time or the rounded result is not better."""
    pywraplp = require("ortools.linear_solver.pywraplp", "solver")
    pb = problem
    R = range(pb.num_requests)
    kv, cn = pb.kv_bytes_per_token, pb.cnic_bytes_per_s * GB
    solver = pywraplp.Solver.CreateSolver("GLOP")
    solver.SetTimeLimit(max(1, int(time_limit_s * 1000)))
    fixed = Loads(pb, solution)
    floor_s = max(max(fixed.time_s("pe_compute", p), fixed.time_s("pe_cnic_in", p)) for p in range(pb.num_pe))

    # Variables: PE-side GB per request, and the makespan
    a = [solver.NumVar(0.0, pb.pe_read_cap_bytes(r) * GB, f"a[{r}]") for r in R]
    T = solver.NumVar(floor_s, solver.infinity(), "T")

    # SNIC per node: PE-side reads of requests on its PEs, DE-side reads of requests on its DEs
    snic_terms: list[list] = [[] for _ in range(pb.num_nodes)]
    snic_const = list(pb.read_queue_bytes)
    for r in R:
        n_pe, n_de = pb.pe_node[solution.pe[r]], pb.de_node[solution.de[r]]
        snic_terms[n_pe].append(a[r])
        snic_terms[n_de].append(-a[r])
        snic_const[n_de] += pb.hit_bytes[r]
    for n in range(pb.num_nodes):
        solver.Add(snic_const[n] * GB + sum(snic_terms[n]) <= pb.snic_bytes_per_s[n] * GB * T)

    # PE CNIC out: new KV plus the PE-side hit forwarded to the DE
    for p in range(pb.num_pe):
        mine = [r for r in R if solution.pe[r] == p]
        if mine:
            solver.Add(sum(pb.new_bytes[r] * GB + a[r] for r in mine) <= cn * T)

    # DE CNIC out (DE-side hit to the PE, prompt at decode start) and in (prompt less the DE-side hit)
    for d in range(pb.num_de):
        mine = [r for r in R if solution.de[r] == d]
        if mine:
            solver.Add(sum((pb.hit_bytes[r] + pb.prompt_bytes[r]) * GB - a[r] for r in mine) <= cn * T)
            solver.Add(sum((pb.prompt_bytes[r] - pb.hit_bytes[r]) * GB + a[r] for r in mine) <= cn * T)

    # Objective
    solver.Minimize(T)

    # Status check and extraction (whole tokens, within the PE buffer)
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    pe_read = [min(pb.pe_read_cap_bytes(r) // kv, round(a[r].solution_value() / GB / kv)) * kv for r in R]
    out = Solution(list(solution.pe), list(solution.de), pe_read)
    return out if Loads(pb, out).makespan_s() < fixed.makespan_s() else None
