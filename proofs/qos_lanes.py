"""QoS lane properties on every port table: is QoS on, does each class reach its VL, are KV and
collective classes on different VLs, does any SL in use map to VL15 or past the operational VLs.

Each question is a Z3 query "is there an index (class, pair of classes, SL) that breaks it?" over the
port's SL2VL table as OpenSM programs it (with the OperVLs mask); a model is the offending entry.
"""

from __future__ import annotations

from dualpath.proofs import smt
from dualpath.proofs.fabric import Fabric, Port, PortQoS
from dualpath.proofs.groups import Finding, Undecided, over_groups, ports_label
from dualpath.proofs.opensm import NUM_SLS, VL15, OpenSMOptions
from dualpath.proofs.result import PropertyResult, proved, violated
from dualpath.proofs.traffic import TrafficPlan

FAMILY = "qos_lanes"


def _sl2vl_text(qos: PortQoS, sl: int, vl: int) -> str:
    table = list(qos.sl2vl)
    table[sl] = vl
    return ",".join(map(str, table))


def _lands(qos: PortQoS, sl: int) -> str:
    raw, real = qos.sl2vl[sl], qos.vl_of_sl(sl)
    if raw == real:
        return f"VL {real}"
    return f"VL {real} (the table says VL {raw}; OpenSM masks it to the {qos.oper_vls} operational VLs)"


def check_qos_enabled(opensm: OpenSMOptions) -> PropertyResult:
    question = "Does OpenSM program the QoS tables at all (qos TRUE)?"
    if opensm.qos:
        return proved("qos_enabled", FAMILY, question, f"{opensm.qos_where}: TRUE")
    where = opensm.qos_where
    said = f"{where}: {where.text}" if where.line else f"qos is not set in {opensm.path} (OpenSM default FALSE)"
    return violated("qos_enabled", FAMILY, question,
                    f"{said}: OpenSM leaves every port's SL2VL and VLArb tables at their hardware defaults",
                    where.fix("TRUE"))


def _class_reaches(plan: TrafficPlan):
    classes = plan.classes

    def check(qos: PortQoS, ports: list[Port]):
        real = [qos.vl_of_sl(s) for s in range(NUM_SLS)]

        def violates(c):
            landed = smt.lookup(smt.lookup(c, [k.sl for k in classes]), real)
            return landed != smt.lookup(c, [k.vl for k in classes])

        outcome, bad = smt.find_indices(len(classes), violates)
        if outcome.verdict == "unknown":
            return Undecided(outcome.reason)
        if not bad:
            return None
        k = classes[bad[0]]
        where = ports[0].where("sl2vl")
        others = f"; also {', '.join(classes[i].name for i in bad[1:])}" if len(bad) > 1 else ""
        witness = (f"{ports_label(ports)}: class {k.name} ({k.kind}, SL {k.sl}) lands on {_lands(qos, k.sl)} "
                   f"by {where}, not on its VL {k.vl}{others}")
        return Finding(witness, where.fix(_sl2vl_text(qos, k.sl, k.vl), f"SL {k.sl} -> VL {k.vl}"))

    return check


def lanes_key(plan: TrafficPlan):
    """What the lane checks read of a table: the SL2VL entries of the SLs in use and the VL counts
    (the other SLs' entries only appear in the suggested fix, taken from the first table of a class)."""
    used = sorted({k.sl for k in plan.classes})

    def key(qos: PortQoS):
        return tuple(qos.sl2vl[s] for s in used), qos.max_vls, qos.oper_vls_code

    return key


def check_class_reaches_vl(fabric: Fabric, plan: TrafficPlan) -> PropertyResult:
    return over_groups(fabric, _class_reaches(plan), "class_reaches_vl", FAMILY,
                       "Does every traffic class reach the VL it was meant for, on every port type and port?",
                       f"all {len(plan.classes)} classes land on their VL", key=lanes_key(plan))


def _isolation(plan: TrafficPlan):
    kv, coll = plan.of_kind("kv"), plan.of_kind("collective")

    def check(qos: PortQoS, ports: list[Port]):
        z3 = smt.z3mod()
        real = [qos.vl_of_sl(s) for s in range(NUM_SLS)]
        s = smt.solver()
        a, b = z3.Int("kv"), z3.Int("collective")
        s.add(smt.in_range(a, 0, len(kv)), smt.in_range(b, 0, len(coll)))
        kv_vl = smt.lookup(smt.lookup(a, [k.sl for k in kv]), real)
        s.add(kv_vl == smt.lookup(smt.lookup(b, [c.sl for c in coll]), real))
        outcome = smt.check(s)
        if outcome.verdict == "unknown":
            return Undecided(outcome.reason)
        if not outcome.sat:
            return None
        k, c = kv[smt.value(outcome.model, a)], coll[smt.value(outcome.model, b)]
        vl = qos.vl_of_sl(k.sl)
        where = ports[0].where("sl2vl")
        collective_vls = {qos.vl_of_sl(x.sl) for x in coll}
        target = k.vl if k.vl not in collective_vls else min(set(range(qos.num_vls)) - collective_vls, default=k.vl)
        witness = (f"{ports_label(ports)}: VL {vl} carries KV class {k.name} (SL {k.sl}) and collective "
                   f"{c.name} (SL {c.sl}), by {where}")
        return Finding(witness, where.fix(_sl2vl_text(qos, k.sl, target), f"move KV SL {k.sl} to VL {target}"))

    return check


def check_kv_collective_isolation(fabric: Fabric, plan: TrafficPlan) -> PropertyResult:
    question = "Is every KV class on a VL that no collective class uses, on every port?"
    if not plan.of_kind("kv") or not plan.of_kind("collective"):
        return proved("kv_collective_isolation", FAMILY, question, "the plan has no KV/collective pair to separate")
    return over_groups(fabric, _isolation(plan), "kv_collective_isolation", FAMILY, question,
                       "KV and collective classes never share a VL", key=lanes_key(plan))


def _sl_range(plan: TrafficPlan):
    used = sorted({k.sl for k in plan.classes})
    by_sl = {k.sl: k for k in plan.classes}

    def check(qos: PortQoS, ports: list[Port]):
        z3 = smt.z3mod()

        def violates(i):
            vl = smt.lookup(smt.lookup(i, used), list(qos.sl2vl))
            return z3.Or(vl == VL15, vl >= qos.num_vls)

        outcome, bad = smt.find_indices(len(used), violates)
        if outcome.verdict == "unknown":
            return Undecided(outcome.reason)
        if not bad:
            return None
        sl = used[bad[0]]
        vl, where = qos.sl2vl[sl], ports[0].where("sl2vl")
        if vl == VL15:
            why = "VL15 is the management VL: data packets on it are dropped"
        else:
            why = (f"only VL0-{qos.num_vls - 1} run here (max_vls {qos.max_vls}, {qos.oper_vls} operational VLs); "
                   f"OpenSM masks it to VL {qos.vl_of_sl(sl)}")
        witness = f"{ports_label(ports)}: SL {sl} (class {by_sl[sl].name}) maps to VL {vl} by {where}: {why}"
        return Finding(witness, where.fix(_sl2vl_text(qos, sl, by_sl[sl].vl), f"SL {sl} -> VL {by_sl[sl].vl}"))

    return check


def check_sl_vl_range(fabric: Fabric, plan: TrafficPlan) -> PropertyResult:
    return over_groups(fabric, _sl_range(plan), "sl_vl_range", FAMILY,
                       "Does every SL in use map to a data VL below the operational VL count (never VL15)?",
                       "every SL in use maps to an operational data VL", key=lanes_key(plan))


def check_all(opensm: OpenSMOptions, fabric: Fabric, plan: TrafficPlan) -> list:
    return [
        ("qos_enabled", check_qos_enabled, (opensm,)),
        ("class_reaches_vl", check_class_reaches_vl, (fabric, plan)),
        ("kv_collective_isolation", check_kv_collective_isolation, (fabric, plan)),
        ("sl_vl_range", check_sl_vl_range, (fabric, plan)),
    ]
