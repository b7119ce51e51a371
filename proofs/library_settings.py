"""Per-library SL settings (NCCL_IB_SL, UCX_IB_SL, MC_IB_SL, NVSHMEM_IB_SL for DeepEP, 3FS's sl) must
put each library's traffic on the SL of the classes it carries, in every process environment (each env
file, each container of each pod spec); an unset knob means SL 0. A library that resolves its paths
through the SA (`path_query`) and sets no knob takes the SL of OpenSM's QoS policy: `qos_policy_sl`.
"""

from __future__ import annotations

from dualpath.proofs import smt
from dualpath.proofs.envfile import EnvSource
from dualpath.proofs.result import PropertyResult, proved, unknown, violated
from dualpath.proofs.traffic import LIBRARY_DEFAULT_SL, LibrarySetting, TrafficPlan, env_int

NAME, FAMILY = "library_settings", "library_settings"
QUESTION = ("Do the libraries' SL settings (NCCL_IB_SL, UCX_IB_SL, MC_IB_SL, NVSHMEM_IB_SL, 3FS sl) put "
            "each library's traffic on its classes' SL, in every process environment?")


def sources(plan: TrafficPlan) -> list[EnvSource | None]:
    """Every environment to check; None stands for "no environment given" (plan values and defaults)."""
    return list(plan.envs) or [None]


def knob(lib: LibrarySetting, source: EnvSource | None, setting: str, plan_value, default: int, high: int):
    """(value, where it comes from, set?) of one knob in one environment; value None = not knowable."""
    entry = source.values.get(setting) if source is not None else None
    if entry is not None:
        value = env_int(entry, setting, high)
        if value is None:
            return None, f"{setting} ({entry}) is set from a ConfigMap/Secret (valueFrom) we cannot read", True
        return value, f"{setting}={value} ({entry})", True
    if plan_value is not None:
        return plan_value, f"{setting} = {plan_value} ({lib.plan_where if setting == lib.setting else lib.name})", True
    where = f" in {source.label}" if source is not None else ""
    return default, f"{setting} is not set (library default {default}){where}", False


def effective(lib: LibrarySetting, source: EnvSource | None = None) -> tuple[int | None, str]:
    """The SL the library will use in `source`, and where that comes from."""
    value, text, _ = knob(lib, source, lib.setting, lib.plan_value, LIBRARY_DEFAULT_SL, 15)
    if text.startswith(f"{lib.setting} is not set"):
        text = text.replace("library default", "library default SL")
    return value, text


def from_policy(lib: LibrarySetting, source: EnvSource | None) -> bool:
    """The library asks the SA for its path and no knob overrides the SL the SA answers."""
    return lib.path_query is not None and not knob(lib, source, lib.setting, lib.plan_value, 0, 15)[2]


def _fix(lib: LibrarySetting, plan: TrafficPlan, sl: int, source: EnvSource | None) -> str:
    entry = source.values.get(lib.setting) if source is not None else None
    if entry is not None and source is not None:
        return f"{entry}: {source.assignment(lib.setting, sl)}"
    if lib.plan_value is not None:
        return f"{lib.plan_where.file}:{lib.plan_where.line}: value = {sl}  # [libraries.{lib.name}]"
    if source is not None:
        return f"{source.file} (add): {source.assignment(lib.setting, sl)}"
    return f"{plan.path}: add value = {sl} to [libraries.{lib.name}]"


def check_library_settings(plan: TrafficPlan) -> PropertyResult:
    if not plan.libraries:
        return proved(NAME, FAMILY, QUESTION, "the plan lists no library settings")
    for lib in plan.libraries:
        if lib.env_value is not None and lib.plan_value is not None and lib.env_value != lib.plan_value:
            return violated(NAME, FAMILY, QUESTION,
                            f"{lib.setting} is {lib.plan_value} in the plan ({lib.plan_where}) but {lib.env_value} "
                            f"in the environment ({lib.env_where})", _fix(lib, plan, lib.plan_value, plan.envs[0]
                                                                          if plan.envs else None))
    by_name = {c.name: c for c in plan.classes}
    rows = [(lib, by_name[c], src) for src in sources(plan) for lib in plan.libraries for c in lib.carries
            if not from_policy(lib, src)]
    used = [effective(lib, src)[0] for lib, _, src in rows]
    opaque = [i for i, u in enumerate(used) if u is None]
    wanted = [c.sl for _, c, _ in rows]
    known = [-1 if u is None else u for u in used]
    outcome, bad = smt.find_indices(len(rows), lambda i: smt.lookup(i, known) != smt.lookup(i, wanted))
    bad = [i for i in bad if i not in opaque]
    if outcome.verdict == "unknown":
        return unknown(NAME, FAMILY, QUESTION, outcome.reason)
    if not bad:
        if opaque:
            lib, _, src = rows[opaque[0]]
            return unknown(NAME, FAMILY, QUESTION, effective(lib, src)[1])
        shown = {f"{lib.name}: {effective(lib, src)[1]}" for lib, _, src in rows}
        return proved(NAME, FAMILY, QUESTION, "; ".join(sorted(shown)) or "every library takes its SL from the SA")
    lib, klass, src = rows[bad[0]]
    _, text = effective(lib, src)
    others = {c.sl for c in (by_name[n] for n in lib.carries)}
    clash = f"; it also carries classes on SLs {sorted(others)}, one setting cannot serve them all" \
        if len(others) > 1 else ""
    witness = (f"library {lib.name}: {text}, but it carries class {klass.name} ({klass.kind}) whose SL is {klass.sl} "
               f"({klass.where}){clash}")
    return violated(NAME, FAMILY, QUESTION, witness, _fix(lib, plan, klass.sl, src))
