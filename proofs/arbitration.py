"""VL arbitration properties of every port table, from its VLArb tables and high-priority limit:
weights are whole packets, KV lanes never starve and keep their minimum share, collectives keep
their required share against KV, and model packets wait a bounded time behind KV packets.
"""

from __future__ import annotations

from fractions import Fraction

from dualpath.proofs import smt
from dualpath.proofs.fabric import Fabric, Port, PortQoS
from dualpath.proofs.groups import Finding, Holds, Undecided, over_groups, ports_label
from dualpath.proofs.qos_lanes import lanes_key
from dualpath.proofs.traffic import TrafficPlan
from dualpath.proofs.vlarb_model import WEIGHT_UNIT_BYTES, Arbiter, worst_backlog

FAMILY = "arbitration"


def _lanes(qos: PortQoS, plan: TrafficPlan) -> tuple[list[int], list[int], list[int]]:
    """(every VL a class uses, KV VLs, VLs that carry collectives and no KV) on this port."""
    vl = {k.name: qos.vl_of_sl(k.sl) for k in plan.classes}
    kv = sorted({vl[k.name] for k in plan.of_kind("kv")})
    coll = sorted({vl[k.name] for k in plan.of_kind("collective")} - set(kv))
    return sorted(set(vl.values())), kv, coll


def _busy(vls):
    z3 = smt.z3mod()
    return {v: z3.Bool(f"busy_vl{v}") for v in vls}


def _pct(x: Fraction | float) -> str:
    return f"{float(x) * 100:.4g}%"


def _entries_text(entries, vl: int, weight: int) -> str:
    out = [(v, w) for v, w in entries if v != vl] + [(vl, weight)]
    return ",".join(f"{v}:{w}" for v, w in sorted(out))


def _weights(plan: TrafficPlan):
    unit = plan.fabric.mtu_bytes // WEIGHT_UNIT_BYTES

    def check(qos: PortQoS, ports: list[Port]):
        z3 = smt.z3mod()
        rows = [("vlarb_high", v, w) for v, w in qos.vlarb_high] + [("vlarb_low", v, w) for v, w in qos.vlarb_low]
        weights = [w for _, _, w in rows]
        outcome, bad = smt.find_indices(len(rows), lambda i: z3.And(smt.lookup(i, weights) > 0,
                                                                     smt.lookup(i, weights) % unit != 0))
        if outcome.verdict == "unknown":
            return Undecided(outcome.reason)
        if not bad:
            return None
        table, vl, weight = rows[bad[0]]
        where = ports[0].where(table)
        rounded = max(unit, round(weight / unit) * unit)
        entries = qos.vlarb_high if table == "vlarb_high" else qos.vlarb_low
        witness = (f"{ports_label(ports)}: {where} entry {vl}:{weight} is {weight * WEIGHT_UNIT_BYTES} bytes, not a "
                   f"whole number of {plan.fabric.mtu_bytes}-byte packets (weights must be multiples of {unit})")
        return Finding(witness, where.fix(_entries_text(entries, vl, min(rounded, 255 - 255 % unit)),
                                          f"VL {vl} weight {weight} -> a multiple of {unit}"))

    return check


def _kv_share(plan: TrafficPlan, bound: Fraction, starvation: bool):
    def check(qos: PortQoS, ports: list[Port]):
        vls, kv, _ = _lanes(qos, plan)
        arb = Arbiter.of(qos, plan.fabric.mtu_bytes, vls)
        for k in kv:
            busy = _busy(vls)
            s = smt.solver()
            s.add(busy[k], arb.share_below(busy, {k}, bound, or_equal=starvation))
            outcome = smt.check(s)
            if outcome.verdict == "unknown":
                return Undecided(outcome.reason)
            if not outcome.sat:
                continue
            backlog = sorted(v for v in vls if outcome.model.eval(busy[v], model_completion=True))
            share = arb.share({k}, backlog)
            low_where, limit_where = ports[0].where("vlarb_low"), ports[0].where("high_limit")
            unit = plan.fabric.mtu_bytes // WEIGHT_UNIT_BYTES
            if not arb.low[k] and not arb.high[k]:
                cause = f"VL {k} has no weight in either VLArb table ({low_where})"
                fix = low_where.fix(_entries_text(qos.vlarb_low, k, unit), f"give KV VL {k} a low-table weight")
            elif not arb.limited and not arb.high[k]:
                cause = f"{limit_where} is 255, so the low table is never served while a high VL is busy"
                fix = limit_where.fix("240", "a limit < 255 guarantees the low table a packet per window")
            else:
                cause = f"VL {k}'s weight in {low_where} and {limit_where} ({qos.high_limit}) leave it {_pct(share)}"
                fix = low_where.fix(_entries_text(qos.vlarb_low, k, min(255 - 255 % unit, 4 * max(arb.low[k], 1)
                                                                           * unit)),
                                    f"raise KV VL {k}'s weight, or lower qos_high_limit")
            witness = (f"{ports_label(ports)}: while VLs {backlog} are busy, KV VL {k} gets {_pct(share)} of the link"
                       f" (required {'> 0' if starvation else '>= ' + _pct(bound)}): {cause}")
            return Finding(witness, fix)
        if not kv:
            return None
        worst = min(((*worst_backlog(arb, {k}, vls, frozenset({k})), k) for k in kv), key=lambda w: w[1])
        return Holds(f"worst case KV VL {worst[2]} gets {_pct(worst[1])} with VLs {sorted(worst[0])} busy")

    return check


def _collective_share(plan: TrafficPlan):
    bound = Fraction(str(plan.fabric.collective_share_min))

    def check(qos: PortQoS, ports: list[Port]):
        _, kv, coll = _lanes(qos, plan)
        if not coll:
            return None
        domain = sorted(set(coll) | set(kv))
        arb = Arbiter.of(qos, plan.fabric.mtu_bytes, domain)
        z3 = smt.z3mod()
        busy = _busy(domain)
        s = smt.solver()
        s.add(z3.Or([busy[c] for c in coll]), arb.share_below(busy, set(coll), bound))
        outcome = smt.check(s)
        if outcome.verdict == "unknown":
            return Undecided(outcome.reason)
        if not outcome.sat:
            worst, share = worst_backlog(arb, set(coll), domain, frozenset())
            return Holds(f"worst case collectives get {_pct(share)} with VLs {sorted(worst)} busy")
        backlog = sorted(v for v in domain if outcome.model.eval(busy[v], model_completion=True))
        share = arb.share(set(coll), backlog)
        missing = [c for c in coll if not arb.high[c]]
        if missing:
            where = ports[0].where("vlarb_high")
            unit = plan.fabric.mtu_bytes // WEIGHT_UNIT_BYTES
            fix = where.fix(_entries_text(qos.vlarb_high, missing[0], 3 * unit),
                            f"collective VL {missing[0]} needs a high-table weight")
        else:
            where = ports[0].where("high_limit")
            fix = where.fix(str(_limit_for(qos, arb, plan, coll, kv, bound)), "more high-priority bytes per window")
        witness = (f"{ports_label(ports)}: while VLs {backlog} are busy, collective VLs {coll} get {_pct(share)} "
                   f"of the link, below the required {_pct(bound)} ({where})")
        return Finding(witness, fix)

    return check


def _limit_for(qos, arb: Arbiter, plan: TrafficPlan, coll, kv, bound: Fraction) -> int:
    from dataclasses import replace

    for limit in range(max(qos.high_limit, 1), 255):
        trial = Arbiter.of(replace(qos, high_limit=limit), plan.fabric.mtu_bytes, sorted(set(coll) | set(kv)))
        if worst_backlog(trial, set(coll), set(coll) | set(kv), frozenset())[1] >= bound:
            return limit
    return 254


def _wait_bound(plan: TrafficPlan):
    fabric = plan.fabric
    packet_ns = fabric.mtu_bytes * 8 / fabric.link_gbps

    def check(qos: PortQoS, ports: list[Port]):
        vls, kv, coll = _lanes(qos, plan)
        arb = Arbiter.of(qos, fabric.mtu_bytes, vls)
        ahead = [arb.kv_packets_ahead(c, kv) for c in coll]
        never = 10**15  # stands for "unbounded" in the integer table
        waits_ps = [never if a == float("inf") else int(a * packet_ns * 1000 + 0.999) for a in ahead]
        limit_ps = int(fabric.model_wait_max_ns * 1000)
        outcome, bad = smt.find_indices(len(coll), lambda i: smt.lookup(i, waits_ps) > limit_ps)
        if outcome.verdict == "unknown":
            return Undecided(outcome.reason)
        if not bad:
            worst = max(waits_ps, default=0) / 1000
            return Holds(f"worst wait {worst:.1f} ns ({max(ahead, default=0):g} KV packets)")
        c, packets = coll[bad[0]], ahead[bad[0]]
        wait = "unbounded" if packets == float("inf") else f"{packets:g} KV packets = {packets * packet_ns:.1f} ns"
        where = ports[0].where("vlarb_high")
        unit = fabric.mtu_bytes // WEIGHT_UNIT_BYTES
        witness = (f"{ports_label(ports)}: a packet at the head of collective VL {c} can wait behind {wait} "
                   f"(limit {fabric.model_wait_max_ns:g} ns, {fabric.where['model_wait_max_ns']}); VL {c} has "
                   f"high weight {dict(qos.vlarb_high).get(c, 0)} in {where}, KV VLs {kv} take "
                   f"{sum(arb.high[k] for k in kv)} high / {sum(arb.low[k] for k in kv)} low packets per round")
        if arb.high[c]:
            fix = where.fix(_entries_text(qos.vlarb_high, kv[0], 0), f"take KV VL {kv[0]} out of the high table")
        else:
            fix = where.fix(_entries_text(qos.vlarb_high, c, 3 * unit), f"serve collective VL {c} from the high table")
        return Finding(witness, fix)

    return check


def arbitration_key(plan: TrafficPlan):
    """What the share and wait checks decide on: where each class lands, the high limit, and each used
    VL's packets per table round (Arbiter.of). Raw weights only shape the witness text and the fix,
    which come from the first table of a class."""
    lanes = lanes_key(plan)

    def key(qos: PortQoS):
        vls = _lanes(qos, plan)[0]
        arb = Arbiter.of(qos, plan.fabric.mtu_bytes, vls)
        return lanes(qos), qos.high_limit, tuple(arb.high.items()), tuple(arb.low.items())

    return key


def _weights_key(qos: PortQoS):
    return qos.vlarb_high, qos.vlarb_low  # the weights check reads every entry of both tables


def check_weights(fabric: Fabric, plan: TrafficPlan):
    unit = plan.fabric.mtu_bytes // WEIGHT_UNIT_BYTES
    return over_groups(fabric, _weights(plan), "weights_mtu_multiple", FAMILY,
                       f"Is every VLArb weight a multiple of MTU/64 = {unit} (whole packets)?",
                       "every weight is a whole number of packets", key=_weights_key)


def check_kv_no_starvation(fabric: Fabric, plan: TrafficPlan):
    return over_groups(fabric, _kv_share(plan, Fraction(0), starvation=True), "kv_no_starvation", FAMILY,
                       "Does every KV VL get a non-zero share whatever else is busy (low weight > 0, "
                       "high_limit < 255)?", "every KV VL keeps a non-zero share in every backlog",
                       key=arbitration_key(plan))


def check_kv_min_share(fabric: Fabric, plan: TrafficPlan):
    bound = Fraction(str(plan.fabric.kv_share_min))
    return over_groups(fabric, _kv_share(plan, bound, starvation=False), "kv_min_share", FAMILY,
                       f"Does every KV VL keep at least {_pct(bound)} of the link whatever else is busy?",
                       f"every KV VL keeps >= {_pct(bound)}", key=arbitration_key(plan))


def check_collective_share(fabric: Fabric, plan: TrafficPlan):
    bound = Fraction(str(plan.fabric.collective_share_min))
    return over_groups(fabric, _collective_share(plan), "collective_share", FAMILY,
                       f"Do collective VLs keep at least {_pct(bound)} of the link when KV traffic competes?",
                       f"collectives keep >= {_pct(bound)} against KV in every backlog", key=arbitration_key(plan))


def check_model_wait(fabric: Fabric, plan: TrafficPlan):
    return over_groups(fabric, _wait_bound(plan), "model_wait_bound", FAMILY,
                       f"Can a model (collective) packet wait at most {plan.fabric.model_wait_max_ns:g} ns behind "
                       "KV packets?", "model packets wait within the bound", key=arbitration_key(plan))


def check_all(fabric: Fabric, plan: TrafficPlan) -> list:
    return [
        ("weights_mtu_multiple", check_weights, (fabric, plan)),
        ("kv_no_starvation", check_kv_no_starvation, (fabric, plan)),
        ("kv_min_share", check_kv_min_share, (fabric, plan)),
        ("collective_share", check_collective_share, (fabric, plan)),
        ("model_wait_bound", check_model_wait, (fabric, plan)),
    ]
