"""Per-library SL settings (NCCL_IB_SL, UCX_IB_SL, MC_IB_SL, NVSHMEM_IB_SL for DeepEP, 3FS's sl) must
put each library's traffic on the SL of the classes it carries; an unset knob means SL 0.
"""

from __future__ import annotations

from dualpath.proofs import smt
from dualpath.proofs.result import PropertyResult, proved, unknown, violated
from dualpath.proofs.traffic import LIBRARY_DEFAULT_SL, LibrarySetting, TrafficPlan

NAME, FAMILY = "library_settings", "library_settings"
QUESTION = ("Do the libraries' SL settings (NCCL_IB_SL, UCX_IB_SL, MC_IB_SL, NVSHMEM_IB_SL, 3FS sl) put "
            "each library's traffic on its classes' SL?")


def effective(lib: LibrarySetting) -> tuple[int, str]:
    """The SL the library will use, and where that comes from."""
    if lib.env_value is not None:
        return lib.env_value, f"{lib.setting}={lib.env_value} ({lib.env_where})"
    if lib.plan_value is not None:
        return lib.plan_value, f"{lib.setting} = {lib.plan_value} ({lib.plan_where})"
    return LIBRARY_DEFAULT_SL, f"{lib.setting} is not set (library default SL {LIBRARY_DEFAULT_SL})"


def _fix(lib: LibrarySetting, plan: TrafficPlan, sl: int) -> str:
    if lib.env_where is not None:
        return f"{lib.env_where}: {lib.setting}={sl}"
    if lib.plan_value is not None:
        return f"{lib.plan_where.file}:{lib.plan_where.line}: value = {sl}  # [libraries.{lib.name}]"
    target = plan.env_path or plan.path
    return f"{target} (add the line): {lib.setting}={sl}" if plan.env_path else \
        f"{target}: add value = {sl} to [libraries.{lib.name}]"


def check_library_settings(plan: TrafficPlan) -> PropertyResult:
    if not plan.libraries:
        return proved(NAME, FAMILY, QUESTION, "the plan lists no library settings")
    for lib in plan.libraries:
        if lib.env_value is not None and lib.plan_value is not None and lib.env_value != lib.plan_value:
            return violated(NAME, FAMILY, QUESTION,
                            f"{lib.setting} is {lib.plan_value} in the plan ({lib.plan_where}) but {lib.env_value} "
                            f"in the environment ({lib.env_where})", _fix(lib, plan, lib.plan_value))
    by_name = {c.name: c for c in plan.classes}
    pairs = [(lib, by_name[c]) for lib in plan.libraries for c in lib.carries]
    used = [effective(lib)[0] for lib, _ in pairs]
    wanted = [c.sl for _, c in pairs]
    outcome, bad = smt.find_indices(len(pairs), lambda i: smt.lookup(i, used) != smt.lookup(i, wanted))
    if outcome.verdict == "unknown":
        return unknown(NAME, FAMILY, QUESTION, outcome.reason)
    if not bad:
        return proved(NAME, FAMILY, QUESTION, "; ".join(f"{lib.name}: {effective(lib)[1]}" for lib in plan.libraries))
    lib, klass = pairs[bad[0]]
    _, source = effective(lib)
    others = {c.sl for c in (by_name[n] for n in lib.carries)}
    clash = f"; it also carries classes on SLs {sorted(others)}, one setting cannot serve them all" \
        if len(others) > 1 else ""
    witness = (f"library {lib.name}: {source}, but it carries class {klass.name} ({klass.kind}) whose SL is {klass.sl} "
               f"({klass.where}){clash}")
    return violated(NAME, FAMILY, QUESTION, witness, _fix(lib, plan, klass.sl))
