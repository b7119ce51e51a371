"""Bottleneck-free prefill:decode node ratio from the traffic equations of the dual-path data paths.

Per second, every SNIC reads hit KV at its full rate s*B (storage can saturate them): P*s*B on PE
nodes, D*s*B on DE nodes (B = CNIC bandwidth, g GPUs and CNICs per node, M host memory bandwidth).
All hit KV enters PE HBM through PE CNICs; PE-read KV goes on to the DE; DE-read KV leaves the DE
CNICs; the prompt KV is copied DE DRAM -> DE HBM through the CNIC (loopback, both directions);
DE DRAM sees the SNIC write, the read towards PEs, the PE write and the H2D read. New-token KV is
small and left out, as in the paper. Inside s/(g-s) <= P/D <= min{(g-2s)/s, (g-s)/(2s), (M/(sB)-3)/2}
Z3 proves (exact rationals) that no link is over capacity; just outside each end it names the link
that overflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil

from dualpath.proofs import smt
from dualpath.proofs.result import PropertyResult, proved, unknown, violated
from dualpath.proofs.traffic import ClusterNumbers

NAME, FAMILY = "pd_bottleneck_free", "capacity"
EPSILON = Fraction(1, 1000)


@dataclass(frozen=True)
class Node:
    gpus: int
    cnic_gb_per_s: Fraction
    snic_gb_per_s: Fraction
    mem_gb_per_s: Fraction

    @classmethod
    def of(cls, c: ClusterNumbers) -> Node:
        return cls(c.gpus_per_node, Fraction(str(c.cnic_gbps)) / 8, Fraction(str(c.snic_gbps)) / 8,
                   Fraction(str(c.host_mem_gb_per_s)))

    def links(self, p, d):
        """(link, load, capacity) in GB/s for P prefill and D decode nodes (any numeric or Z3 terms)."""
        sb, b, g, m = self.snic_gb_per_s, self.cnic_gb_per_s, self.gpus, self.mem_gb_per_s
        return [
            ("PE CNIC in (all hit KV into PE HBM)", (p + d) * sb, p * g * b),
            ("PE CNIC out (PE-read KV to the DE)", p * sb, p * g * b),
            ("DE CNIC out (DE-read KV to the PE, prompt KV H2D)", d * sb + (p + d) * sb, d * g * b),
            ("DE CNIC in (PE-read KV from the PE, prompt KV H2D)", p * sb + (p + d) * sb, d * g * b),
            ("DE host memory (SNIC write, reads to PE and HBM, PE write)", 3 * d * sb + 2 * p * sb, d * m),
            ("PE host memory (SNIC write, H2D read)", 2 * p * sb, p * m),
        ]

    def bounds(self) -> tuple[Fraction, Fraction]:
        """The paper's closed form."""
        g, s = self.gpus, self.snic_gb_per_s / self.cnic_gb_per_s
        high = min(Fraction(g) / s - 2, (g - s) / (2 * s), (self.mem_gb_per_s / self.snic_gb_per_s - 3) / 2)
        return s / (g - s), high


def overflowing(node: Node, ratio: Fraction) -> tuple[str, list[str]]:
    """Z3 at P/D = ratio (D = 1): verdict and the links whose load exceeds capacity."""
    z3 = smt.z3mod()
    p, d = z3.Real("P"), z3.Real("D")
    names = []
    verdict = "unsat"
    for name, load, cap in node.links(p, d):
        s = smt.solver()
        s.add(d == 1, p == z3.RealVal(ratio), load > cap)
        outcome = smt.check(s)
        if outcome.verdict == "unknown":
            verdict = "unknown"
        elif outcome.sat:
            names.append(name)
            verdict = "sat"
    return verdict, names


def _frac(x: Fraction) -> str:
    return f"{x.numerator}/{x.denominator}" if x.denominator != 1 else str(x.numerator)


def check_pd_range(cluster: ClusterNumbers) -> PropertyResult:
    node = Node.of(cluster)
    low, high = node.bounds()
    ratio = Fraction(cluster.prefill_nodes, cluster.decode_nodes)
    shorthand = f"{cluster.prefill_nodes}P{cluster.decode_nodes}D"
    question = (f"Is {shorthand} inside the bottleneck-free P:D range, where no link is over capacity "
                "(and is that range exact)?")
    z3 = smt.z3mod()
    p, d = z3.Real("P"), z3.Real("D")
    s = smt.solver()
    s.add(d > 0, p >= z3.RealVal(low) * d, p <= z3.RealVal(high) * d,
          z3.Or([load > cap for _, load, cap in node.links(p, d)]))
    inside = smt.check(s)
    if inside.verdict == "unknown":
        return unknown(NAME, FAMILY, question, inside.reason)
    if low > high:
        return violated(NAME, FAMILY, question, f"no P:D ratio is bottleneck-free: lower bound {_frac(low)} > upper "
                        f"bound {_frac(high)}", f"{cluster.where}: faster CNICs or host memory per node")
    if inside.sat:
        m = inside.model
        return unknown(NAME, FAMILY, question, f"the closed form and the link equations disagree at P={m[p]}, D={m[d]}")
    _, below = overflowing(node, low * (1 - EPSILON))
    _, above = overflowing(node, high * (1 + EPSILON))
    detail = (f"range [{_frac(low)}, {_frac(high)}] = [{float(low):.4g}, {float(high):.4g}]: inside it no link is over "
              f"capacity (Z3, exact); just below, {' and '.join(below)} overflow(s); just above, "
              f"{' and '.join(above)} overflow(s)")
    if low <= ratio <= high:
        return proved(NAME, FAMILY, question, f"{shorthand} has P/D = {_frac(ratio)}; {detail}")
    _, links = overflowing(node, ratio)
    loads = {name: (float(load), float(cap)) for name, load, cap in node.links(Fraction(cluster.prefill_nodes),
                                                                                Fraction(cluster.decode_nodes))}
    over = "; ".join(f"{n}: {loads[n][0]:.0f} GB/s > {loads[n][1]:.0f} GB/s" for n in links)
    if ratio > high:
        better = f"decode_nodes = {ceil(cluster.prefill_nodes / high)}"
    else:
        better = f"prefill_nodes = {ceil(low * cluster.decode_nodes)}"
    return violated(NAME, FAMILY, question,
                    f"{shorthand} has P/D = {_frac(ratio)}, outside [{_frac(low)}, {_frac(high)}]: {over}",
                    f"{cluster.where.file}:{cluster.where.line}: [cluster] {better}", detail)
