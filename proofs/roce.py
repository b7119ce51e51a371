"""RoCE properties, on every hop (the NIC, from roce.toml or `mlnx_qos`; each SONiC switch port): each
class's DSCP reaches its traffic class through the priority map, KV and collective classes on different
TCs; PFC exactly on the priorities of lossless classes; ETS weights of the non-strict TCs sum to 100
(DWRR weights: relative) and give every used TC a share; no strict TC carries bulk KV traffic; and the
libraries' traffic-class knobs (NCCL_IB_TC, UCX_IB_TRAFFIC_CLASS, MC_IB_TC, ...) mark each library's
packets with the DSCP of the classes it carries, in every process environment.
"""

from __future__ import annotations

from dualpath.proofs import smt
from dualpath.proofs.library_settings import knob, sources
from dualpath.proofs.result import PropertyResult, proved, unknown, violated
from dualpath.proofs.roce_spec import NUM_PRIORITIES, RoceConfig, RoceHop
from dualpath.proofs.traffic import LIBRARY_DEFAULT_TC, TrafficPlan

FAMILY = "roce"


def _classes(roce: RoceConfig, plan: TrafficPlan):
    return [(k, roce.classes[k.name]) for k in plan.classes]


def _hop_class_tc(hop: RoceHop, roce: RoceConfig, plan: TrafficPlan, name: str, question: str):
    if hop.trust != "dscp":
        return violated(name, FAMILY, question,
                        f"{hop.name}: {hop.where['trust']}: trust is {hop.trust!r}, so the DSCP -> priority map is not "
                        "used and RDMA traffic marked by DSCP lands on the PCP/default priority",
                        hop.fix("trust", "dscp"))
    pairs = _classes(roce, plan)
    real = [hop.tc_of_dscp(r.dscp) for _, r in pairs]
    intended = [r.tc for _, r in pairs]
    outcome, bad = smt.find_indices(len(pairs), lambda i: smt.lookup(i, real) != smt.lookup(i, intended))
    if outcome.verdict == "unknown":
        return unknown(name, FAMILY, question, f"{hop.name}: {outcome.reason}")
    if bad:
        k, r = pairs[bad[0]]
        prio = hop.dscp_to_priority[r.dscp]
        src = hop.where.get(f"dscp:{r.dscp}", hop.where["priority_to_tc"])
        table = hop.where["priority_to_tc"]
        if hop.kind == "sonic" or hop.priority_to_tc[prio] == r.tc:
            fix = hop.fix(f"dscp:{r.dscp}", r.tc if hop.kind == "sonic" else prio)
        else:
            fix = hop.fix("priority_to_tc", [r.tc if p == prio else t for p, t in enumerate(hop.priority_to_tc)])
        return violated(name, FAMILY, question,
                        f"{hop.name}: class {k.name} (DSCP {r.dscp}, {r.where}) goes to priority {prio} ({src}) and "
                        f"TC {hop.priority_to_tc[prio]} ({table}), not its TC {r.tc}", fix)
    kv = [(k, hop.tc_of_dscp(r.dscp)) for k, r in pairs if k.kind == "kv"]
    coll = [(k, hop.tc_of_dscp(r.dscp)) for k, r in pairs if k.kind == "collective"]
    clash = [(a, b, t) for a, t in kv for b, u in coll if t == u]
    if clash:
        a, b, t = clash[0]
        return violated(name, FAMILY, question, f"{hop.name}: TC {t} carries KV class {a.name} and collective {b.name}",
                        f"{roce.classes[a.name].where}: give {a.name} a DSCP that maps to a TC no collective uses")
    return None


def _over_hops(roce: RoceConfig, name: str, question: str, check, done: str) -> PropertyResult:
    for hop in roce.hops:
        result = check(hop)
        if result is not None:
            return result
    return proved(name, FAMILY, question, f"{done} on {len(roce.hops)} hop(s): " + ", ".join(h.name for h in roce.hops))


def check_class_tc(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name = "roce_class_tc"
    question = "Does each class's DSCP map through priority to its intended TC, with KV and collectives apart?"
    return _over_hops(roce, name, question, lambda hop: _hop_class_tc(hop, roce, plan, name, question),
                      f"{len(plan.classes)} classes reach their TC")


def check_pfc(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name, question = "roce_pfc", "Is PFC enabled exactly on the priorities of the lossless classes?"

    def one(hop: RoceHop):
        lossless = {hop.dscp_to_priority[r.dscp] for _, r in _classes(roce, plan) if r.lossless}
        where = hop.where["pfc_priorities"]
        z3 = smt.z3mod()
        p = z3.Int("priority")
        s = smt.solver()
        on = smt.lookup(p, [int(q in hop.pfc_priorities) for q in range(NUM_PRIORITIES)])
        need = smt.lookup(p, [int(q in lossless) for q in range(NUM_PRIORITIES)])
        s.add(smt.in_range(p, 0, NUM_PRIORITIES), on != need)
        outcome = smt.check(s)
        if outcome.verdict == "unknown":
            return unknown(name, FAMILY, question, f"{hop.name}: {outcome.reason}")
        if not outcome.sat:
            return None
        q = smt.value(outcome.model, p)
        if q in hop.pfc_priorities:
            witness = (f"PFC is enabled on priority {q} ({where}) but no lossless class uses it: "
                       "pauses spread for nothing")
        else:
            users = [k for k, r in _classes(roce, plan) if r.lossless and hop.dscp_to_priority[r.dscp] == q]
            witness = (f"lossless class {users[0].name} runs on priority {q} without PFC ({where}): "
                       "RDMA drops under load")
        return violated(name, FAMILY, question, f"{hop.name}: {witness}", hop.fix("pfc_priorities", lossless))

    return _over_hops(roce, name, question, one, "PFC matches the lossless classes")


def check_ets(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name = "roce_ets"
    question = "Do the ETS weights of the non-strict TCs sum to 100, with a share for every TC in use?"

    def one(hop: RoceHop):
        where = hop.where["ets_percent"]
        ets_tcs = [t for t in range(NUM_PRIORITIES) if t not in hop.strict_tcs]
        total = sum(hop.ets_percent[t] for t in ets_tcs)
        if total != 100 and not hop.ets_relative:
            return violated(name, FAMILY, question,
                            f"{hop.name}: ETS weights of TCs {ets_tcs} sum to {total}, not 100 ({where})",
                            hop.fix("ets_percent", list(hop.ets_percent)) + "  # make the non-strict TCs sum to 100")
        used = sorted({hop.tc_of_dscp(r.dscp) for _, r in _classes(roce, plan)} - hop.strict_tcs)
        starved = [t for t in used if hop.ets_percent[t] == 0]
        if starved:
            return violated(name, FAMILY, question,
                            f"{hop.name}: TC {starved[0]} carries traffic but has ETS weight 0 ({where})",
                            hop.fix("ets_percent", list(hop.ets_percent)) + f"  # ets_percent[{starved[0]}] > 0")
        return None

    return _over_hops(roce, name, question, one, "ETS gives every used TC a share")


def check_strict_kv(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name, question = "roce_strict_kv", "Is no strict-priority TC carrying bulk KV traffic?"

    def one(hop: RoceHop):
        hits = [(k, hop.tc_of_dscp(r.dscp)) for k, r in _classes(roce, plan)
                if k.kind == "kv" and hop.tc_of_dscp(r.dscp) in hop.strict_tcs]
        if not hits:
            return None
        k, t = hits[0]
        return violated(name, FAMILY, question,
                        f"{hop.name}: KV class {k.name} runs on TC {t}, which is strict priority "
                        f"({hop.where['strict_tcs']}): bulk KV would starve every ETS class, collectives included",
                        hop.fix("strict_tcs", hop.strict_tcs - {t}))

    return _over_hops(roce, name, question, one, "strict TCs carry no KV class")


def check_library_tc(roce: RoceConfig, plan: TrafficPlan) -> PropertyResult:
    name = "roce_library_tc"
    question = ("Do the libraries' traffic-class knobs (NCCL_IB_TC, UCX_IB_TRAFFIC_CLASS, MC_IB_TC, "
                "NVSHMEM_IB_TRAFFIC_CLASS, 3FS traffic_class) mark each library's packets with its classes' DSCP?")
    rows = [(lib, roce.classes[c], src) for src in sources(plan) for lib in plan.libraries for c in lib.carries]
    if not rows:
        return proved(name, FAMILY, question, "the plan lists no libraries")
    got = [knob(lib, src, lib.tc_setting or f"{lib.name} traffic class", lib.tc_value, LIBRARY_DEFAULT_TC, 255)
           for lib, _, src in rows]
    dscp = [-1 if v is None else v >> 2 for v, _, _ in got]  # the TC byte is DSCP << 2 | ECN
    outcome, bad = smt.find_indices(len(rows), lambda i: smt.lookup(i, dscp) != smt.lookup(i, [r.dscp for _, r, _ in
                                                                                                rows]))
    if outcome.verdict == "unknown":
        return unknown(name, FAMILY, question, outcome.reason)
    bad = [i for i in bad if got[i][0] is not None]
    if bad:
        lib, klass, src = rows[bad[0]]
        text = got[bad[0]][1]
        setting = lib.tc_setting or f"tc_value in [libraries.{lib.name}]"
        entry = src.values.get(lib.tc_setting) if src is not None and lib.tc_setting else None
        target = str(entry) if entry is not None else (f"{src.file} (add the line)" if src is not None
                                                       else f"{plan.path} [libraries.{lib.name}]")
        return violated(name, FAMILY, question,
                        f"library {lib.name}: {text} marks DSCP {dscp[bad[0]]}, but it carries class {klass.name} "
                        f"whose DSCP is {klass.dscp} ({klass.where})",
                        f"{target}: " + (src.assignment(setting, klass.dscp << 2) if src is not None else
                                         f"{setting}={klass.dscp << 2}") + f"  # DSCP {klass.dscp} << 2")
    opaque = [g for g in got if g[0] is None]
    if opaque:
        return unknown(name, FAMILY, question, opaque[0][1])
    return proved(name, FAMILY, question, "; ".join(sorted({f"{lib.name}: {got[i][1]}" for i, (lib, _, _) in
                                                            enumerate(rows)})))


def check_all(roce: RoceConfig, plan: TrafficPlan) -> list:
    return [
        ("roce_class_tc", check_class_tc, (roce, plan)),
        ("roce_pfc", check_pfc, (roce, plan)),
        ("roce_ets", check_ets, (roce, plan)),
        ("roce_strict_kv", check_strict_kv, (roce, plan)),
        ("roce_library_tc", check_library_tc, (roce, plan)),
    ]
