"""A port's VL arbiter (IBA 7.6.9) as a fluid model over which VLs have packets waiting.

Each table entry (VL, weight) lets that VL send whole packets while weight x 64 bytes remain, so it
sends ceil(weight x 64 / MTU) MTU-sized packets per round of its table. The high-priority table is
served first; after `high_limit` x 4 KB of high-priority bytes (at least one packet) one low-priority
packet goes if any is waiting; 255 means no limit. Over a long busy period a VL's share of the link is

    x * high_v / high_all + (1 - x) * low_v / low_all,   x = H / (H + MTU)

with H the high-priority bytes between two low-priority packets; x = 1 when nothing low-priority waits
or the limit is 255, x = 0 when nothing high-priority waits. Z3 searches the backlog sets (one Bool per
VL) for one that pushes a share below a bound; the products of sums are expanded over VL pairs, so the
query stays linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import product

from dualpath.proofs import smt
from dualpath.proofs.fabric import PortQoS
from dualpath.proofs.opensm import UNLIMITED_HIGH_LIMIT

HIGH_LIMIT_UNIT_BYTES = 4096
WEIGHT_UNIT_BYTES = 64


def packets_per_round(entries, vl: int, mtu_bytes: int) -> int:
    return sum(-(-w * WEIGHT_UNIT_BYTES // mtu_bytes) for v, w in entries if v == vl and w > 0)


@dataclass(frozen=True)
class Arbiter:
    mtu_bytes: int
    limited: bool
    high_window_bytes: int
    high: dict  # VL -> packets per high-table round
    low: dict  # VL -> packets per low-table round

    @classmethod
    def of(cls, qos: PortQoS, mtu_bytes: int, vls) -> Arbiter:
        packets = -(-qos.high_limit * HIGH_LIMIT_UNIT_BYTES // mtu_bytes)
        return cls(mtu_bytes, qos.high_limit < UNLIMITED_HIGH_LIMIT, max(1, packets) * mtu_bytes,
                   {v: packets_per_round(qos.vlarb_high, v, mtu_bytes) for v in vls},
                   {v: packets_per_round(qos.vlarb_low, v, mtu_bytes) for v in vls})

    def share(self, target, backlog) -> Fraction:
        """Exact long-run share of the link that the VLs in `target` get while `backlog` VLs are busy."""
        ha = sum(self.high[v] for v in backlog)
        la = sum(self.low[v] for v in backlog)
        hs = sum(self.high[v] for v in backlog if v in target)
        ls = sum(self.low[v] for v in backlog if v in target)
        h, m = self.high_window_bytes, self.mtu_bytes
        if ha and la and self.limited:
            return Fraction(h * hs * la + m * ls * ha, (h + m) * ha * la)
        if ha:
            return Fraction(hs, ha)
        if la:
            return Fraction(ls, la)
        return Fraction(0)

    def share_below(self, busy: dict, target, bound: Fraction, or_equal: bool = False):
        """Z3 formula: with the VLs whose Bool in `busy` is true waiting, `target`'s share < bound."""
        z3 = smt.z3mod()
        vls = sorted(busy)

        def form(table, only=None):
            return {v: table[v] for v in vls if table[v] and (only is None or v in only)}

        def linear(f):
            return z3.Sum([z3.If(busy[v], c, 0) for v, c in f.items()]) if f else z3.IntVal(0)

        def bilinear(f, g):
            terms = [z3.If(busy[v] if v == w else z3.And(busy[v], busy[w]), a * b, 0)
                     for (v, a), (w, b) in product(f.items(), g.items())]
            return z3.Sum(terms) if terms else z3.IntVal(0)

        ha, la, hs, ls = form(self.high), form(self.low), form(self.high, target), form(self.low, target)
        p, q = bound.numerator, bound.denominator
        h, m = self.high_window_bytes, self.mtu_bytes

        def less(lhs, rhs):
            return lhs <= rhs if or_equal else lhs < rhs

        any_high, any_low = linear(ha) > 0, linear(la) > 0
        both = less(q * (h * bilinear(hs, la) + m * bilinear(ls, ha)), p * (h + m) * bilinear(ha, la))
        return z3.Or(
            z3.And(any_high, any_low, z3.BoolVal(self.limited), both),
            z3.And(any_high, z3.Or(z3.Not(any_low), z3.BoolVal(not self.limited)),
                   less(q * linear(hs), p * linear(ha))),
            z3.And(z3.Not(any_high), any_low, less(q * linear(ls), p * linear(la))),
            z3.And(z3.Not(any_high), z3.Not(any_low)),
        )

    def kv_packets_ahead(self, vl: int, kv_vls) -> float:
        """KV packets that can leave before a packet at the head of model VL `vl` (inf: unbounded)."""
        kv_high = sum(self.high[k] for k in kv_vls)
        kv_low = sum(self.low[k] for k in kv_vls)
        if self.high.get(vl):
            return 1 + kv_high + (1 if self.limited and kv_low else 0)
        if self.low.get(vl):
            if kv_high and not self.limited:
                return float("inf")
            window = self.high_window_bytes // self.mtu_bytes if kv_high else 0
            return 1 + kv_low + (kv_low + 1) * window
        return float("inf")


def worst_backlog(arbiter: Arbiter, target, domain, must: frozenset) -> tuple[frozenset, Fraction]:
    """Exhaustive check used for fixes and tests: the backlog (containing `must`) minimising the share."""
    domain = sorted(domain)
    best = None
    for bits in range(1 << len(domain)):
        backlog = frozenset(v for i, v in enumerate(domain) if bits >> i & 1)
        if not must <= backlog or not backlog & set(target):
            continue
        share = arbiter.share(target, backlog)
        if best is None or share < best[1]:
            best = (backlog, share)
    return best if best else (frozenset(), Fraction(0))
