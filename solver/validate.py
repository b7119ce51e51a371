"""`check_plan(problem, plan) -> list[Violation]`: a solver-free oracle every returned plan passes.

It re-derives every load from the plan's assignments by engine and node *names* (not the indices the
solvers use), so a bug in `problem.Loads` or in a backend's extraction shows up here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from dualpath.plan import Plan
from dualpath.solver.problem import Problem

REL_TOL = 1e-9


@dataclass(frozen=True)
class Violation:
    subject: str  # a request id, an engine or node name, or "plan"
    # "assignment", "bytes", "whole_read", "pe_buffer", "de_buffer", "de_hbm", "fluid_bottleneck", "bound"
    constraint: str
    detail: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.constraint}: {self.detail}"


def recompute_fluid_bottleneck_s(problem: Problem, plan: Plan) -> tuple[float, str]:
    """The fluid bottleneck time of `plan` and the resource that sets it, from names alone."""
    pb = problem
    node_of = {n: pb.node_names[i] for n, i in zip(pb.pe_names, pb.pe_node)}
    node_of.update({n: pb.node_names[i] for n, i in zip(pb.de_names, pb.de_node)})
    req = {r.id: i for i, r in enumerate(pb.requests)}
    snic = defaultdict(float, dict(zip(pb.node_names, pb.read_queue_bytes)))
    compute = defaultdict(float, dict(zip(pb.pe_names, pb.pe_backlog_s)))
    pe_in, pe_out, de_in, de_out = (defaultdict[str, float](float) for _ in range(4))
    for a in plan.assignments:
        if a.request not in req or a.pe not in node_of or a.de not in node_of:
            continue  # reported by check_plan
        r = req[a.request]
        snic[node_of[a.pe]] += a.pe_read_bytes
        snic[node_of[a.de]] += a.de_read_bytes
        compute[a.pe] += pb.compute_s[r]
        pe_in[a.pe] += a.pe_read_bytes + a.de_read_bytes
        pe_out[a.pe] += pb.new_bytes[r] + a.pe_read_bytes
        de_out[a.de] += a.de_read_bytes + pb.prompt_bytes[r]
        de_in[a.de] += pb.prompt_bytes[r] - a.de_read_bytes
    snic_rate = dict(zip(pb.node_names, pb.snic_bytes_per_s))
    cn = pb.cnic_bytes_per_s
    times = [(q / snic_rate[n], f"{n}.snic") for n, q in snic.items()]
    times += [(t, f"{p}.compute") for p, t in compute.items()]
    for table, label in ((pe_in, "cnic_in"), (pe_out, "cnic_out"), (de_in, "cnic_in"), (de_out, "cnic_out")):
        times += [(v / cn, f"{e}.{label}") for e, v in table.items()]
    return max(times, default=(0.0, "none"))


def check_plan(problem: Problem, plan: Plan) -> list[Violation]:
    pb = problem
    out: list[Violation] = []
    pe_names, de_names = set(pb.pe_names), set(pb.de_names)
    seen: dict[str, int] = defaultdict(int)
    index = {r.id: i for i, r in enumerate(pb.requests)}
    hbm_used: dict[str, int] = defaultdict(int)
    for a in plan.assignments:
        seen[a.request] += 1
        if a.request not in index:
            out.append(Violation(a.request, "assignment", "not a request of this problem"))
            continue
        r = index[a.request]
        if a.pe not in pe_names:
            out.append(Violation(a.request, "assignment", f"PE {a.pe!r} is not a prefill engine"))
        if a.de not in de_names:
            out.append(Violation(a.request, "assignment", f"DE {a.de!r} is not a decode engine"))
        if a.pe_read_bytes < 0 or a.de_read_bytes < 0:
            out.append(Violation(a.request, "bytes", f"negative read ({a.pe_read_bytes}, {a.de_read_bytes})"))
        if a.pe_read_bytes + a.de_read_bytes != pb.hit_bytes[r]:
            out.append(Violation(a.request, "bytes", f"reads {a.pe_read_bytes} + {a.de_read_bytes} != hit "
                                                     f"{pb.hit_bytes[r]} bytes"))
        if not plan.split_reads and a.pe_read_bytes and a.de_read_bytes:
            out.append(Violation(a.request, "whole_read", "read split across both sides in a whole-read plan"))
        if a.pe_read_bytes > pb.pe_buffer_bytes:
            out.append(Violation(a.request, "pe_buffer", f"{a.pe_read_bytes} B exceeds the PE buffer "
                                                         f"({pb.pe_buffer_bytes} B)"))
        if pb.prompt_bytes[r] > pb.de_buffer_bytes:
            out.append(Violation(a.request, "de_buffer", f"prompt {pb.prompt_bytes[r]} B exceeds the DE buffer"))
        hbm_used[a.de] += pb.context_bytes[r]
    for rid in index:
        if seen.get(rid, 0) != 1:
            out.append(Violation(rid, "assignment", f"assigned {seen.get(rid, 0)} times, expected once"))
    caps = dict(zip(pb.de_names, pb.hbm_capacity_bytes))
    for de, used in sorted(hbm_used.items()):
        if de in caps and used > caps[de]:
            out.append(Violation(de, "de_hbm", f"context KV {used} B exceeds {caps[de]} B "
                                               f"({pb.hbm_waves} wave(s) of free HBM)"))
    bottleneck, where = recompute_fluid_bottleneck_s(pb, plan)
    if abs(bottleneck - plan.fluid_bottleneck_s) > REL_TOL * max(1.0, bottleneck):
        out.append(Violation("plan", "fluid_bottleneck", f"reported {plan.fluid_bottleneck_s!r} s, recomputed "
                                                         f"{bottleneck!r} s (set by {where})"))
    if plan.lower_bound_s < 0 or plan.lower_bound_s > bottleneck * (1 + REL_TOL) + 1e-12:
        out.append(Violation("plan", "bound", f"lower bound {plan.lower_bound_s!r} s is not in [0, fluid bottleneck "
                                              f"{bottleneck!r} s]"))
    return out
