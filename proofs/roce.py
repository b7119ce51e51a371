"""RoCE properties: each class's DSCP reaches its traffic class through the priority map, KV and
collective classes on different TCs; PFC exactly on the priorities of lossless classes; ETS weights of
the non-strict TCs sum to 100 and give every used TC a share; no strict TC carries bulk KV traffic.
"""

from __future__ import annotations

from dualpath.proofs import smt
from dualpath.proofs.result import PropertyResult, proved, unknown, violated
from dualpath.proofs.roce_spec import NUM_PRIORITIES, RoceConfig
from dualpath.proofs.traffic import TrafficPlan

FAMILY = "roce"


def _classes(roce: RoceConfig, plan: TrafficPlan):
    return [(k, roce.classes[k.name]) for k in plan.classes]


def check_class_tc(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name = "roce_class_tc"
    question = "Does each class's DSCP map through priority to its intended TC, with KV and collectives apart?"
    if roce.trust != "dscp":
        return violated(name, FAMILY, question,
                        f"{roce.where['trust']}: trust is {roce.trust!r}, so the DSCP -> priority map is not used "
                        "and RDMA traffic marked by DSCP lands on the PCP/default priority",
                        f"{roce.where['trust'].file}:{roce.where['trust'].line or 1}: trust = \"dscp\"")
    pairs = _classes(roce, plan)
    real = [roce.tc_of_dscp(r.dscp) for _, r in pairs]
    intended = [r.tc for _, r in pairs]
    outcome, bad = smt.find_indices(len(pairs), lambda i: smt.lookup(i, real) != smt.lookup(i, intended))
    if outcome.verdict == "unknown":
        return unknown(name, FAMILY, question, outcome.reason)
    if bad:
        k, r = pairs[bad[0]]
        prio = roce.dscp_to_priority[r.dscp]
        src = roce.where.get(f"dscp:{r.dscp}", roce.where["priority_to_tc"])
        table = roce.where["priority_to_tc"]
        return violated(name, FAMILY, question,
                        f"class {k.name} (DSCP {r.dscp}, {r.where}) goes to priority {prio} ({src}) and TC "
                        f"{roce.priority_to_tc[prio]} ({table}), not its TC {r.tc}",
                        f"{table.file}:{table.line}: priority_to_tc[{prio}]"
                        f" = {r.tc}  # or map DSCP {r.dscp} to a priority of TC {r.tc}")
    kv = [(k, roce.tc_of_dscp(r.dscp)) for k, r in pairs if k.kind == "kv"]
    coll = [(k, roce.tc_of_dscp(r.dscp)) for k, r in pairs if k.kind == "collective"]
    clash = [(a, b, t) for a, t in kv for b, u in coll if t == u]
    if clash:
        a, b, t = clash[0]
        return violated(name, FAMILY, question, f"TC {t} carries KV class {a.name} and collective {b.name}",
                        f"{roce.classes[a.name].where}: give {a.name} a DSCP that maps to a TC no collective uses")
    return proved(name, FAMILY, question, f"{len(pairs)} classes reach their TC")


def check_pfc(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name, question = "roce_pfc", "Is PFC enabled exactly on the priorities of the lossless classes?"
    lossless = {roce.dscp_to_priority[r.dscp] for _, r in _classes(roce, plan) if r.lossless}
    where = roce.where["pfc_priorities"]
    want = ", ".join(map(str, sorted(lossless)))
    fix = f"{where.file}:{where.line or 1}: pfc_priorities = [{want}]"
    z3 = smt.z3mod()
    p = z3.Int("priority")
    s = smt.solver()
    on = smt.lookup(p, [int(q in roce.pfc_priorities) for q in range(NUM_PRIORITIES)])
    need = smt.lookup(p, [int(q in lossless) for q in range(NUM_PRIORITIES)])
    s.add(smt.in_range(p, 0, NUM_PRIORITIES), on != need)
    outcome = smt.check(s)
    if outcome.verdict == "unknown":
        return unknown(name, FAMILY, question, outcome.reason)
    if not outcome.sat:
        return proved(name, FAMILY, question, f"PFC on priorities [{want}]")
    q = smt.value(outcome.model, p)
    if q in roce.pfc_priorities:
        witness = f"PFC is enabled on priority {q} ({where}) but no lossless class uses it: pauses spread for nothing"
    else:
        users = [k for k, r in _classes(roce, plan) if r.lossless and roce.dscp_to_priority[r.dscp] == q]
        witness = f"lossless class {users[0].name} runs on priority {q} without PFC ({where}): RDMA drops under load"
    return violated(name, FAMILY, question, witness, fix)


def check_ets(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name = "roce_ets"
    question = "Do the ETS weights of the non-strict TCs sum to 100, with a share for every TC in use?"
    where = roce.where["ets_percent"]
    ets_tcs = [t for t in range(NUM_PRIORITIES) if t not in roce.strict_tcs]
    total = sum(roce.ets_percent[t] for t in ets_tcs)
    if total != 100:
        return violated(name, FAMILY, question, f"ETS weights of TCs {ets_tcs} sum to {total}, not 100 ({where})",
                        f"{where.file}:{where.line}: ets_percent = [...]  # make the non-strict TCs sum to 100")
    used = sorted({roce.tc_of_dscp(r.dscp) for _, r in _classes(roce, plan)} - roce.strict_tcs)
    starved = [t for t in used if roce.ets_percent[t] == 0]
    if starved:
        return violated(name, FAMILY, question, f"TC {starved[0]} carries traffic but has ETS weight 0 ({where})",
                        f"{where.file}:{where.line}: ets_percent[{starved[0]}] > 0")
    return proved(name, FAMILY, question, f"ETS sums to 100 over TCs {ets_tcs}")


def check_strict_kv(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name, question = "roce_strict_kv", "Is no strict-priority TC carrying bulk KV traffic?"
    hits = [(k, roce.tc_of_dscp(r.dscp)) for k, r in _classes(roce, plan)
            if k.kind == "kv" and roce.tc_of_dscp(r.dscp) in roce.strict_tcs]
    if not hits:
        return proved(name, FAMILY, question, f"strict TCs {sorted(roce.strict_tcs)} carry no KV class")
    k, t = hits[0]
    where = roce.where["strict_tcs"]
    rest = ", ".join(map(str, sorted(roce.strict_tcs - {t})))
    return violated(name, FAMILY, question,
                    f"KV class {k.name} runs on TC {t}, which is strict priority ({where}): bulk KV would starve "
                    "every ETS class, collectives included", f"{where.file}:{where.line}: strict_tcs = [{rest}]")


def check_all(roce: RoceConfig, plan: TrafficPlan) -> list:
    return [
        ("roce_class_tc", check_class_tc, (roce, plan)),
        ("roce_pfc", check_pfc, (roce, plan)),
        ("roce_ets", check_ets, (roce, plan)),
        ("roce_strict_kv", check_strict_kv, (roce, plan)),
    ]
