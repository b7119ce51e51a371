"""`dualpath verify --synthesize`: an opensm.conf QoS section (SL2VL, VLArb tables, high limit) and the
matching library settings for a traffic plan, maximising the KV lanes' guaranteed share, or the named
requirements that cannot all hold.

Why this shape is optimal: on the busy set {collectives, KV} the two shares sum to 1, so no table can
give KV more than 1 - collective_share_min. Serving every non-KV VL from the high table and KV only
from the low table gives KV exactly 1 - x in every backlog, x = H / (H + MTU) the high-priority window
fraction; x grows with qos_high_limit, so the smallest limit whose x meets the collective bound is the
best table of this shape, within one 4 KB step of that ceiling (the report states both numbers). Every
other property (wait bound, weights in whole packets, no starvation) is then checked by the same Arbiter
the verifier uses, and the CLI re-verifies the files it writes with the full checker.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from dualpath.proofs.fabric import PortQoS
from dualpath.proofs.opensm import NUM_SLS, OPER_VLS_DATA, UNLIMITED_HIGH_LIMIT, Where
from dualpath.proofs.roce_spec import RoceConfig
from dualpath.proofs.traffic import TrafficPlan
from dualpath.proofs.vlarb_model import WEIGHT_UNIT_BYTES, Arbiter, worst_backlog


@dataclass(frozen=True)
class Conflict:
    """Two (or more) requirements of the inputs that no configuration satisfies together."""

    requirements: tuple[str, ...]  # each "file:line what"
    why: str
    exact: bool = True  # False: only the searched family fails, no proof that every table does

    def __str__(self) -> str:
        kind = "conflict" if self.exact else "not found (not proved impossible)"
        return f"{kind}: {' vs '.join(self.requirements)}: {self.why}"


@dataclass(frozen=True)
class Synthesis:
    opensm_text: str
    env_text: str
    high_limit: int
    kv_share: Fraction  # guaranteed to every KV VL, in every backlog
    kv_ceiling: Fraction  # no configuration gives more: 1 - collective_share_min
    collective_share: Fraction


def _at(where) -> str:
    return f"{where.file}:{where.line}" if isinstance(where, Where) else str(where)


def _structural(plan: TrafficPlan, roce: RoceConfig | None) -> list[Conflict]:
    out: list[Conflict] = []
    by_sl: dict[int, list] = {}
    for k in plan.classes:
        by_sl.setdefault(k.sl, []).append(k)
    for sl, ks in by_sl.items():
        other = next((b for b in ks if b.vl != ks[0].vl), None)
        if other is not None:
            out.append(Conflict((f"{_at(ks[0].where)} class {ks[0].name} (SL {sl} -> VL {ks[0].vl})",
                                 f"{_at(other.where)} class {other.name} (SL {sl} -> VL {other.vl})"),
                                f"SL2VL maps SL {sl} to one VL"))
    for a in plan.of_kind("kv"):
        b = next((c for c in plan.of_kind("collective") if c.vl == a.vl), None)
        if b is not None:
            out.append(Conflict((f"{_at(a.where)} KV class {a.name} on VL {a.vl}",
                                 f"{_at(b.where)} collective {b.name} on VL {a.vl}"),
                                "KV and collective classes must not share a VL"))
    by_name = {k.name: k for k in plan.classes}
    for lib in plan.libraries:
        carried = [by_name[c] for c in lib.carries]
        sls = sorted({k.sl for k in carried})
        if len(sls) > 1:
            out.append(Conflict(tuple(f"{_at(k.where)} {k.name} on SL {k.sl}" for k in carried if k.sl in sls[:2]),
                                f"library {lib.name} has one {lib.setting}, its classes need SLs {sls}"))
        elif lib.plan_value is not None and lib.plan_value != sls[0]:
            out.append(Conflict((f"{_at(lib.plan_where)} {lib.setting} = {lib.plan_value}",
                                 f"{_at(carried[0].where)} {carried[0].name} on SL {sls[0]}"),
                                f"library {lib.name}'s fixed setting is not its classes' SL"))
        if roce is not None:
            dscps = sorted({roce.classes[c].dscp for c in lib.carries})
            if len(dscps) > 1:
                out.append(Conflict(tuple(f"{_at(roce.classes[c].where)} {c} DSCP {roce.classes[c].dscp}"
                                          for c in lib.carries)[:2],
                                    f"library {lib.name} has one traffic-class knob, its classes need DSCPs {dscps}"))
    return out


def _weights(unit: int) -> list[int]:
    """Whole-packet weights to try: every multiple of `unit` up to 255, thinned to at most 16 values."""
    top = 255 - 255 % unit
    every = list(range(unit, top + 1, unit))
    step = max(1, len(every) // 15)
    return sorted(set(every[::step]) | {unit, top})


def _tables(plan: TrafficPlan, limit: int, model_low: int, kv_low: int) -> tuple[PortQoS, int]:
    """Model VLs in the high table at full weight (and `model_low` for collectives in the low table), KV VLs
    only in the low table with `kv_low`."""
    unit = plan.fabric.mtu_bytes // WEIGHT_UNIT_BYTES
    top = 255 - 255 % unit  # largest whole-packet weight
    vls = sorted({k.vl for k in plan.classes})
    kv = {k.vl for k in plan.of_kind("kv")}
    coll = {k.vl for k in plan.of_kind("collective")}
    max_vls = max(vls) + 1
    code = min(c for c, n in OPER_VLS_DATA.items() if n >= max_vls)
    high = tuple((v, 0 if v in kv or v not in vls else top) for v in range(max_vls))
    low = tuple((v, kv_low if v in kv else model_low if v in coll else 0) for v in range(max_vls))
    default_vl = next((k.vl for k in plan.classes if k.sl == 0), vls[0])
    sl_vl = {k.sl: k.vl for k in plan.classes}
    sl2vl = tuple(sl_vl.get(s, default_vl) for s in range(NUM_SLS))
    return PortQoS(max_vls, code, limit, high, low, sl2vl), code


def _search(plan: TrafficPlan, c_min: Fraction):
    """Best (kv share, limit, tables, code, collective share, wait) over the family; None if no member
    gives collectives c_min. For fixed weights the collective share grows with the limit: bisect it."""
    best = None
    weights = _weights(plan.fabric.mtu_bytes // WEIGHT_UNIT_BYTES)
    for model_low in [0, *weights]:
        for kv_low in weights:
            def at(limit, model_low=model_low, kv_low=kv_low):
                qos, code = _tables(plan, limit, model_low, kv_low)
                return (qos, code, *_shares(plan, qos))

            if at(UNLIMITED_HIGH_LIMIT - 1)[2] < c_min:
                continue
            lo, hi = 0, UNLIMITED_HIGH_LIMIT - 1  # 255 would starve the low table: KV must keep a share
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if at(mid)[2] >= c_min else (mid + 1, hi)
            qos, code, coll_share, kv_share, wait_ns = at(lo)
            if best is None or (kv_share, -lo) > (best[0], -best[1]):
                best = (kv_share, lo, qos, code, coll_share, wait_ns)
    return best


def _shares(plan: TrafficPlan, qos: PortQoS) -> tuple[Fraction, Fraction, float]:
    vls = sorted({qos.vl_of_sl(k.sl) for k in plan.classes})
    kv = sorted({k.vl for k in plan.of_kind("kv")})
    coll = sorted({k.vl for k in plan.of_kind("collective")} - set(kv))
    mtu = plan.fabric.mtu_bytes
    arb = Arbiter.of(qos, mtu, sorted(set(coll) | set(kv)))
    coll_share = worst_backlog(arb, set(coll), set(coll) | set(kv), frozenset())[1] if coll else Fraction(1)
    full = Arbiter.of(qos, mtu, vls)
    kv_share = min((worst_backlog(full, {k}, vls, frozenset({k}))[1] for k in kv), default=Fraction(1))
    wait = max((full.kv_packets_ahead(c, kv) for c in coll), default=0.0)
    return coll_share, kv_share, wait * mtu * 8 / plan.fabric.link_gbps


def synthesize(plan: TrafficPlan, roce: RoceConfig | None = None) -> Synthesis | list[Conflict]:
    conflicts = _structural(plan, roce)
    if conflicts:
        return conflicts
    f, w = plan.fabric, plan.fabric.where
    c_min, k_min = Fraction(str(f.collective_share_min)), Fraction(str(f.kv_share_min))
    best = _search(plan, c_min)
    if best is None:
        unit = plan.fabric.mtu_bytes // WEIGHT_UNIT_BYTES
        most = _shares(plan, _tables(plan, UNLIMITED_HIGH_LIMIT - 1, 255 - 255 % unit, unit)[0])[0]
        return [Conflict((f"{_at(w['collective_share_min'])} collective_share_min = {f.collective_share_min}",
                          "kv_no_starvation (qos_high_limit < 255, KV weight > 0)"),
                         f"collectives reach at most {float(most):.6g} of the link while KV keeps a share "
                         "(qos_high_limit 254, collectives at full weight in both tables, KV at one packet)")]
    kv_share, limit, qos, code, coll_share, wait_ns = best
    out = []
    if kv_share < k_min:
        both = (f"{_at(w['collective_share_min'])} collective_share_min = {f.collective_share_min}",
                f"{_at(w['kv_share_min'])} kv_share_min = {f.kv_share_min}")
        if k_min > 1 - c_min:  # exact: with both busy the two shares sum to 1
            out.append(Conflict(both, f"while collectives and KV are both busy their shares sum to 1, so KV can keep "
                                      f"at most {float(1 - c_min):.6g} (best table: {float(kv_share):.6g})"))
        else:
            out.append(Conflict(both, f"the best table found gives KV {float(kv_share):.6g} with collectives at "
                                      f">= {float(c_min):.6g}; the ceiling is {float(1 - c_min):.6g}", exact=False))
    if wait_ns > f.model_wait_max_ns and plan.of_kind("kv"):
        out.append(Conflict((f"{_at(w['model_wait_max_ns'])} model_wait_max_ns = {f.model_wait_max_ns:g}",
                             "kv_no_starvation (a KV packet must go once per high-priority window)"),
                            f"a model packet can wait {wait_ns:.1f} ns behind the packet on the wire and one KV "
                            f"packet ({f.mtu_bytes} B at {f.link_gbps:g} Gb/s)"))
    if out:
        return out
    return Synthesis(_opensm_text(plan, qos, code, kv_share, coll_share), _env_text(plan, roce), limit, kv_share,
                     1 - c_min, coll_share)


def _opensm_text(plan: TrafficPlan, qos: PortQoS, code: int, kv_share: Fraction, coll_share: Fraction) -> str:
    def table(entries) -> str:
        return ",".join(f"{v}:{x}" for v, x in entries)

    return "\n".join([
        f"# Synthesized by `dualpath verify --synthesize` from {plan.path}.",
        f"# Guaranteed shares in every backlog: collectives >= {float(coll_share):.6g}, "
        f"each KV VL >= {float(kv_share):.6g} (ceiling {1 - float(plan.fabric.collective_share_min):.6g}).",
        "# Model VLs are served from the high table, KV VLs only from the low table (with collectives, if the",
        "# collective bound needs more than the high-priority window gives).",
        "qos TRUE",
        f"max_op_vls {code}",
        f"qos_max_vls {qos.max_vls}",
        f"qos_high_limit {qos.high_limit}",
        f"qos_vlarb_high {table(qos.vlarb_high)}",
        f"qos_vlarb_low {table(qos.vlarb_low)}",
        f"qos_sl2vl {','.join(map(str, qos.sl2vl))}",
        "",
    ])


def _env_text(plan: TrafficPlan, roce: RoceConfig | None) -> str:
    by_name = {k.name: k for k in plan.classes}
    lines = [f"# Library settings synthesized with the opensm.conf next to this file, from {plan.path}."]
    for lib in plan.libraries:
        lines.append(f"{lib.setting}={by_name[lib.carries[0]].sl}")
        if roce is not None and lib.tc_setting:
            lines.append(f"{lib.tc_setting}={roce.classes[lib.carries[0]].dscp << 2}")
    return "\n".join(lines) + "\n"
