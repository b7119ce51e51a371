"""Why a plan looks the way it does: per request and per constraint family.

Per request: the resources its placement touches end at some time; the highest one is its *binding*
resource. The runner-up is the best other placement (another PE, another DE, the other read side),
with the time its touched resources would end at. Per plan: each family's peak and mean utilisation
against the bottleneck, and the family that binds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dualpath.solver.problem import FAMILIES, FAMILY_TITLES, Loads, Problem, Solution


@dataclass(frozen=True)
class RequestWhy:
    request: str
    pe: str
    de: str
    path: str  # "pe", "de", "split", "none"
    finish_s: float  # when the most loaded resource this placement touches finishes
    binding: str  # that resource
    runner_up: str  # the best alternative placement
    runner_up_finish_s: float

    @property
    def margin_s(self) -> float:
        return self.runner_up_finish_s - self.finish_s


@dataclass(frozen=True)
class FamilyUse:
    family: str
    peak_s: float  # the most loaded resource of the family
    peak_resource: str
    mean_utilisation: float  # mean load / (capacity x bottleneck) over the family's resources


@dataclass(frozen=True)
class Explanation:
    fluid_bottleneck_s: float
    lower_bound_s: float
    binding_family: str
    binding_resource: str
    families: tuple[FamilyUse, ...]
    requests: tuple[RequestWhy, ...]
    num_requests_total: int

    def to_json(self) -> dict:
        return {
            "binding_family": self.binding_family, "binding_resource": self.binding_resource,
            "families": [asdict(f) for f in self.families],
            "requests": [asdict(r) for r in self.requests],
            "num_requests_explained": len(self.requests), "num_requests_total": self.num_requests_total,
        }


def _touched(pb: Problem, ld: Loads, p: int, d: int, pe_read: float, de_read: float) -> tuple[float, str]:
    cn = pb.cnic_bytes_per_s
    cands = [(ld.pe_compute[p], pb.resource_name("pe_compute", p)),
             (ld.pe_cnic_in[p] / cn, pb.resource_name("pe_cnic_in", p)),
             (ld.pe_cnic_out[p] / cn, pb.resource_name("pe_cnic_out", p)),
             (ld.de_cnic_in[d] / cn, pb.resource_name("de_cnic_in", d)),
             (ld.de_cnic_out[d] / cn, pb.resource_name("de_cnic_out", d))]
    if pe_read:
        n = pb.pe_node[p]
        cands.append((ld.snic[n] / pb.snic_bytes_per_s[n], pb.resource_name("snic", n)))
    if de_read:
        n = pb.de_node[d]
        cands.append((ld.snic[n] / pb.snic_bytes_per_s[n], pb.resource_name("snic", n)))
    return max(cands)


def _placement_time(pb: Problem, ld: Loads, r: int, p: int, d: int, a: float) -> tuple[float, str]:
    ld.add(r, p, d, a)
    out = _touched(pb, ld, p, d, a, pb.hit_bytes[r] - a)
    ld.add(r, p, d, a, -1)
    return out


def _path(pb: Problem, r: int, a: float) -> str:
    h = pb.hit_bytes[r]
    return "none" if not h else "pe" if a == h else "de" if a == 0 else "split"


def explain(problem: Problem, solution: Solution, lower_bound_s: float, max_requests: int = 2000,
            candidates: int = 6) -> Explanation:
    pb = problem
    ld = Loads(pb, solution)
    family, index, bottleneck = ld.binding()
    uses = []
    for f in FAMILIES:
        peak, i = ld.family_max(f)
        count = pb.resource_count(f)
        total = sum(ld.family(f)[j] / pb.capacity(f, j) for j in range(count))
        mean = total / (count * bottleneck) if count and bottleneck > 0 else 0.0
        uses.append(FamilyUse(f, peak, pb.resource_name(f, i) if count else "-", mean))
    # Alternatives are drawn from the least-loaded engines so that explaining stays O(R x candidates).
    pe_rank = sorted(range(pb.num_pe), key=lambda p: (ld.pe_compute[p], p))[:candidates]
    de_rank = sorted(range(pb.num_de), key=lambda d: (max(ld.de_cnic_in[d], ld.de_cnic_out[d]), d))[:candidates]
    whys = []
    for r in range(min(pb.num_requests, max_requests)):
        p, d, a = solution.pe[r], solution.de[r], solution.pe_read_bytes[r]
        h = pb.hit_bytes[r]
        ld.add(r, p, d, a, -1)
        finish, binding = _placement_time(pb, ld, r, p, d, a)
        alts = []
        if h and a < h and pb.pe_read_cap_bytes(r) == h:
            alts.append((p, d, h))
        if h and a > 0:
            alts.append((p, d, 0))
        alts += [(q, d, a) for q in pe_rank if q != p] + [(p, e, a) for e in de_rank if e != d]
        best = None
        for q, e, b in alts:
            if ld.de_hbm[e] + pb.context_bytes[r] > pb.hbm_capacity_bytes[e]:
                continue
            t, _ = _placement_time(pb, ld, r, q, e, b)
            label = f"{pb.pe_names[q]}/{pb.de_names[e]} {_path(pb, r, b)}-read"
            if best is None or t < best[0]:
                best = (t, label)
        ld.add(r, p, d, a)
        best = best or (finish, "none")
        whys.append(RequestWhy(pb.requests[r].id, pb.pe_names[p], pb.de_names[d], _path(pb, r, a), finish,
                               binding, best[1], best[0]))
    return Explanation(bottleneck, lower_bound_s, family, pb.resource_name(family, index), tuple(uses),
                       tuple(whys), pb.num_requests)


def to_markdown(ex: Explanation, title: str = "Plan explanation") -> str:
    gap = ex.fluid_bottleneck_s / ex.lower_bound_s - 1 if ex.lower_bound_s > 0 else 0.0
    lines = [f"# {title}", "",
             (f"Fluid bottleneck time {ex.fluid_bottleneck_s:.4f} s, fluid lower bound {ex.lower_bound_s:.4f} s, "
              f"gap to the fluid bound {gap:.3%}. "
              f"Binding: **{FAMILY_TITLES.get(ex.binding_family, ex.binding_family)}** "
              f"({ex.binding_resource})."), "",
             "| constraint family | peak resource | peak (s) | peak / bottleneck | mean utilisation |",
             "|---|---|---|---|---|"]
    for f in ex.families:
        share = f.peak_s / ex.fluid_bottleneck_s if ex.fluid_bottleneck_s else 0.0
        lines.append(f"| {FAMILY_TITLES.get(f.family, f.family)} | {f.peak_resource} | {f.peak_s:.4f} | "
                     f"{share:.1%} | {f.mean_utilisation:.1%} |")
    lines += ["", f"## Requests ({len(ex.requests)} of {ex.num_requests_total} explained)", "",
              "| request | PE | DE | read | finish (s) | binding resource | runner-up | runner-up finish (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for w in ex.requests:
        lines.append(f"| {w.request} | {w.pe} | {w.de} | {w.path} | {w.finish_s:.4f} | {w.binding} | "
                     f"{w.runner_up} | {w.runner_up_finish_s:.4f} (+{w.margin_s:.4f}) |")
    return "\n".join(lines) + "\n"
