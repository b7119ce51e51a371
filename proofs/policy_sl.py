"""`qos_policy_sl`: a library that resolves its paths through the SA (`path_query` in the plan) and
sets no SL knob gets the SL of OpenSM's QoS policy; that SL must be the SL of every class it carries.
Without a policy file OpenSM answers SL 0 (its default QoS level).
"""

from __future__ import annotations

from dualpath.proofs import smt
from dualpath.proofs.library_settings import from_policy, sources
from dualpath.proofs.qos_policy import QosPolicy, load_qos_policy, policy_file_of
from dualpath.proofs.result import PropertyResult, proved, unknown, violated
from dualpath.proofs.traffic import TrafficPlan

NAME, FAMILY = "qos_policy_sl", "library_settings"
QUESTION = ("Does OpenSM's QoS policy (qos-policy.conf) give every library that asks the SA for its paths the "
            "SL of the classes it carries?")


def answer(policy: QosPolicy | None, query: dict) -> tuple[int | None, str]:
    if policy is None:
        return 0, "no qos_policy_file: OpenSM answers its default QoS level, SL 0"
    return policy.sl_for(query)


def check_policy_sl(policy: QosPolicy | None, plan: TrafficPlan) -> PropertyResult:
    by_name = {c.name: c for c in plan.classes}
    libs = {lib.name: lib for src in sources(plan) for lib in plan.libraries if from_policy(lib, src)}
    rows = [(lib, by_name[c]) for lib in libs.values() for c in lib.carries]
    if not rows:
        return proved(NAME, FAMILY, QUESTION, "no library takes its SL from the SA")
    answers = [answer(policy, lib.path_query or {}) for lib, _ in rows]
    undecided = [i for i, (sl, _) in enumerate(answers) if sl is None]
    got = [-1 if sl is None else sl for sl, _ in answers]
    outcome, bad = smt.find_indices(len(rows), lambda i: smt.lookup(i, got) != smt.lookup(i, [c.sl for _, c in rows]))
    if outcome.verdict == "unknown":
        return unknown(NAME, FAMILY, QUESTION, outcome.reason)
    bad = [i for i in bad if i not in undecided]
    if bad:
        lib, klass = rows[bad[0]]
        sl, why = answers[bad[0]]
        query = ", ".join(f"{k} {v:#x}" if isinstance(v, int) and k != "qos_class" else f"{k} {v}"
                          for k, v in (lib.path_query or {}).items())
        witness = (f"library {lib.name} asks the SA for paths ({query}) and gets SL {sl} by {why}, but it carries "
                   f"class {klass.name} ({klass.kind}) whose SL is {klass.sl} ({klass.where})")
        target = policy.path if policy is not None else "opensm.conf: qos_policy_file <file>"
        fix = (f"{why.split(' ')[0]}: make this rule's SL {klass.sl}, or add a rule for {lib.name}'s query "
               f"before it" if policy is not None else f"{target} with a rule giving {lib.name} SL {klass.sl}")
        return violated(NAME, FAMILY, QUESTION, witness, fix + f"  # or set {lib.setting}={klass.sl}")
    if undecided:
        return unknown(NAME, FAMILY, QUESTION, answers[undecided[0]][1])
    shown = sorted({f"{lib.name}: SL {sl} by {why}" for (lib, _), (sl, why) in zip(rows, answers, strict=True)})
    return proved(NAME, FAMILY, QUESTION, "; ".join(shown))


def load_policy(opensm_path, policy_path=None) -> tuple[str | None, QosPolicy | None]:
    """The policy file given, else the one opensm.conf's `qos_policy_file` names, else none."""
    path = str(policy_path) if policy_path else policy_file_of(opensm_path)
    return path, load_qos_policy(path) if path else None


def asks_policy(plan: TrafficPlan, policy_path: str | None) -> bool:
    """`qos_policy_sl` is asked when there is a policy or a library that asks the SA for its SL."""
    return policy_path is not None or any(lib.path_query is not None for lib in plan.libraries)
