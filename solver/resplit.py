"""Read sides for a fixed engine assignment: the LP re-split, and SNIC balancing.

With engines fixed, compute and PE CNIC-in loads are constants and every other time resource is
linear in the PE-side bytes a[r], so the best split is one small LP (GLOP). The planner applies it to
its best split-read candidate: the descent moves one request at a time and stops at local optima a
whole-read plan can beat, whereas a plan re-split here is never worse than the plan it starts from.

When compute binds, many read sides give the same bottleneck and a solver returns any of them (often
every read on the PE side). `balance_reads` then evens out the SNICs without raising any resource
above the bottleneck: the LP with max SNIC time as its objective for split reads, and side flips,
largest first, for whole reads. Both paths then carry reads, as DualPath intends, at no cost.
"""

from __future__ import annotations

from dualpath.errors import require
from dualpath.solver.problem import Loads, Problem, Solution

GB = 1e-9  # bytes in GB keep the LP's coefficients within a few orders of magnitude


def resplit(problem: Problem, solution: Solution, time_limit_s: float = 1.0,
            cap_s: float | None = None) -> Solution | None:
    """`solution` with each request's PE-side bytes re-chosen to minimise the fluid bottleneck time (whole tokens);
    None when the LP does not solve in time or the rounded result is not better. With `cap_s`, the
    objective is the latest SNIC finish instead, every CNIC staying within `cap_s`."""
    pywraplp = require("ortools.linear_solver.pywraplp", "solver")
    pb = problem
    R = range(pb.num_requests)
    kv, cn = pb.kv_bytes_per_token, pb.cnic_bytes_per_s * GB
    solver = pywraplp.Solver.CreateSolver("GLOP")
    solver.SetTimeLimit(max(1, int(time_limit_s * 1000)))
    fixed = Loads(pb, solution)
    floor_s = max(max(fixed.time_s("pe_compute", p), fixed.time_s("pe_cnic_in", p)) for p in range(pb.num_pe))

    # Variables: PE-side GB per request, the fluid bottleneck time (or the latest SNIC finish) and the CNIC limit
    a = [solver.NumVar(0.0, pb.pe_read_cap_bytes(r) * GB, f"a[{r}]") for r in R]
    T = solver.NumVar(0.0 if cap_s is not None else floor_s, solver.infinity(), "T")
    C = T if cap_s is None else cap_s  # CNIC rows: <= T for the fluid bottleneck time, <= cap_s when balancing

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
            solver.Add(sum(pb.new_bytes[r] * GB + a[r] for r in mine) <= cn * C)

    # DE CNIC out (DE-side hit to the PE, prompt at decode start) and in (prompt less the DE-side hit)
    for d in range(pb.num_de):
        mine = [r for r in R if solution.de[r] == d]
        if mine:
            solver.Add(sum((pb.hit_bytes[r] + pb.prompt_bytes[r]) * GB - a[r] for r in mine) <= cn * C)
            solver.Add(sum((pb.prompt_bytes[r] - pb.hit_bytes[r]) * GB + a[r] for r in mine) <= cn * C)

    # Objective
    solver.Minimize(T)

    # Status check and extraction (whole tokens, within the PE buffer)
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    pe_read = [min(pb.pe_read_cap_bytes(r) // kv, round(a[r].solution_value() / GB / kv)) * kv for r in R]
    out = Solution(list(solution.pe), list(solution.de), pe_read)
    after = Loads(pb, out)
    if cap_s is not None:
        better = after.family_max("snic")[0] < fixed.family_max("snic")[0] and after.fluid_bottleneck_s() <= cap_s
    else:
        better = after.fluid_bottleneck_s() < fixed.fluid_bottleneck_s()
    return out if better else None


def balance_reads(problem: Problem, solution: Solution, split_reads: bool, time_limit_s: float = 1.0) -> Solution:
    """Read sides that lower the latest SNIC finish while no resource passes the current fluid bottleneck time."""
    bottleneck = Loads(problem, solution).fluid_bottleneck_s()
    if split_reads:
        return resplit(problem, solution, time_limit_s, cap_s=bottleneck) or solution
    pb, out = problem, solution.copy()
    loads = Loads(pb, out)
    cn = pb.cnic_bytes_per_s
    for r in sorted(range(pb.num_requests), key=lambda r: (-pb.hit_bytes[r], r)):
        p, d = out.pe[r], out.de[r]
        n_pe, n_de = pb.pe_node[p], pb.de_node[d]
        h, old = pb.hit_bytes[r], out.pe_read_bytes[r]
        new = h - old if old in (0, h) else old
        if n_pe == n_de or new == old or new > pb.pe_read_cap_bytes(r):
            continue
        before = max(loads.time_s("snic", n_pe), loads.time_s("snic", n_de))
        loads.add(r, p, d, old, sign=-1)
        loads.add(r, p, d, new)
        after = max(loads.time_s("snic", n_pe), loads.time_s("snic", n_de))
        cnic = max(loads.pe_cnic_out[p], loads.de_cnic_out[d], loads.de_cnic_in[d]) / cn
        if after < before * (1 - 1e-12) and max(after, cnic) <= bottleneck:
            out.pe_read_bytes[r] = new
        else:
            loads.add(r, p, d, new, sign=-1)
            loads.add(r, p, d, old)
    return out
