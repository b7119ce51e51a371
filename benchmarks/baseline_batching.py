"""How the paper's ablation depends on the round-robin baselines' batch rule (DualPath, arXiv 2602.21548).

The paper's ablation (DeepSeek-V3.2, 2P4D, agentic-64k, mean JCT against Basic, cumulative):
+ layerwise prefill -17.2%, + dual-path loading -38.2%, + scheduling -45.6%. It does not say how its
baselines form a PE's forward batch. `basic`, `layerwise` and `dualpath-rr` take everything ready
(the policies' default: the attention quota belongs to the "+ scheduling" step). This script runs
the three baselines under three batch rules, everything else unchanged, to measure how much of the
reproduced ablation rests on that reading:

- `ready`: everything ready (the library's baselines);
- `tokens:N`: at most N new tokens per PE rank per step, the overflowing request chunked (a serving
  engine's chunked-prefill budget, `Calibration.max_batch_new_tokens`; swept because the paper gives
  none);
- `quota`: the paper's own rule, FIFO while predicted attention stays within 300 ms.

`dualpath` (the paper's scheduler, its own rule) and `oracle` (zero I/O: the ceiling of any
reduction) are run once per size. Online, Basic's SLO capacity under each rule beside DualPath's, on
the paper's two online setups (`dualpath simulate --find-capacity`'s search, each below the fluid
limit it names). Every figure is a prediction from the constants of
`dualpath.calibration` (one fitted: `prefill_mfu`); nothing is fitted here.

    python benchmarks/baseline_batching.py                          # 1,024 and 2,048 agents
    python benchmarks/baseline_batching.py --agents 1024 --caps 8192 --json out.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import cache, partial

from reproduce_paper import (
    CAPACITY_SETUPS,
    PAPER_ABLATION,
    PAPER_CAPACITY_RATIO,
    PAPER_JCT_S,
    PAPER_RATIO,
    online_workload_at,
)

from dualpath.calibration import PAPER_CALIBRATION, Calibration, calibrated_llm
from dualpath.cluster import ClusterSpec
from dualpath.errors import InputError
from dualpath.jsonio import read_versioned, versioned, write_json_atomic
from dualpath.llm import LLMSpec
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.policy import BatchItem, Policy
from dualpath.runtime.capacity import PAPER_SLO
from dualpath.runtime.sim.online import search_capacity
from dualpath.runtime.sim.parallelism import expert_groups
from dualpath.runtime.sim.results import offline_row
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.baselines import BasicPolicy, DualPathRRPolicy, LayerwisePolicy
from dualpath.solver.paper_rules import DualPathPolicy
from dualpath.solver.policies import make_policy

BASELINES = {"basic": BasicPolicy, "layerwise": LayerwisePolicy, "dualpath-rr": DualPathRRPolicy}


@cache  # one class per baseline: a capacity search builds a policy per probe
def with_quota(cls: type[Policy]) -> type[Policy]:
    """`cls` with its PE batches formed by the paper's 300 ms attention quota."""
    class Quota(cls):  # type: ignore[valid-type, misc]
        def __init__(self, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64):
            super().__init__(cluster, llm, block_tokens)
            self._rules = DualPathPolicy(cluster, llm, block_tokens)

        def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
            return self._rules.form_batch(queue)
    return Quota


def run(agents: int, policy_name: str, rule: str) -> dict:
    """One offline run on the paper's setup: `dualpath simulate --json`'s offline row, and the rule."""
    cal = calibration_for(rule)
    llm = calibrated_llm(llm_preset("deepseek-v3.2"), cal)
    cluster = expert_groups(resolve_cluster("2P4D"), llm, cal)
    policy = build_policy(policy_name, rule, cluster, llm)
    started = time.perf_counter()
    trace = simulate(cluster, llm, resolve_workload("agentic-64k", agents=agents), policy, calibration=cal,
                     progress=False)
    return {**offline_row(trace), "policy": policy_name, "rule": rule, "wall_s": time.perf_counter() - started}


def calibration_for(rule: str) -> Calibration:
    """A token budget is the engines' own: the executor chunks what the policy's batch has past it."""
    if rule.startswith("tokens:"):
        return replace(PAPER_CALIBRATION, max_batch_new_tokens=int(rule.removeprefix("tokens:")))
    return PAPER_CALIBRATION


def build_policy(name: str, rule: str, cluster: ClusterSpec, llm: LLMSpec) -> Policy:
    if name not in BASELINES:
        return make_policy(name, cluster, llm)
    return (with_quota(BASELINES[name]) if rule == "quota" else BASELINES[name])(cluster, llm)


def capacity(setup: tuple[str, str], name: str, rule: str) -> dict:
    """The SLO capacity (`dualpath simulate --find-capacity`'s search) and the fluid limit it stays under."""
    cal = calibration_for(rule)
    llm = calibrated_llm(llm_preset(setup[1]), cal)
    cluster = resolve_cluster(setup[0])
    make = partial(build_policy, name, rule, cluster, llm)
    row = search_capacity(cluster, llm, online_workload_at(), make, PAPER_SLO, calibration=cal)
    return {"setup": f"{setup[1]} {setup[0]}", "policy": name, "rule": rule, "capacity_aps": row["capacity_aps"],
            "fluid_limit_aps": row["fluid_limit_aps"], "bound_by": row["bound_by"]}


def capacity_table(rows: list[dict]) -> list[str]:
    """Basic's SLO capacity per rule beside DualPath's (paper: DualPath / Basic 1.96 on average)."""
    out = [f"SLO capacity (agents/s, fluid limit in brackets); paper: DualPath / Basic = {PAPER_CAPACITY_RATIO} on "
           "average",
           f"{'setup':<22}{'batch rule':<14}{'basic':>26}{'dualpath':>26}{'ratio':>8}"]
    for setup in dict.fromkeys(r["setup"] for r in rows):
        own = next(r for r in rows if r["setup"] == setup and r["policy"] == "dualpath")
        for r in rows:
            if r["setup"] == setup and r["policy"] == "basic":
                ratio = own["capacity_aps"] / r["capacity_aps"] if r["capacity_aps"] else float("inf")
                out.append(f"{setup:<22}{r['rule']:<14}{r['capacity_aps']:>11.3f} (< {r['fluid_limit_aps']:.3f})"
                           f"{'':>3}{own['capacity_aps']:>11.3f} (< {own['fluid_limit_aps']:.3f}){'':>3}{ratio:>8.2f}")
    return out


def table(rows: list[dict], agents: int) -> list[str]:
    """One line per rule: each step's JCT change against that rule's Basic (reproduce_paper.py's measure)."""
    at = {(r["policy"], r["rule"]): r["jct_s"] for r in rows if r["agents"] == agents}
    head = (f"{agents:,} agents, JCT (s) and its change against the same rule's Basic; paper: layerwise "
            f"{PAPER_ABLATION['layerwise']:+.1f}%, dual-path {PAPER_ABLATION['dualpath-rr']:+.1f}%, "
            f"scheduling {PAPER_ABLATION['dualpath']:+.1f}%; oracle (zero I/O) is the ceiling")
    out = [head, f"{'batch rule':<14}{'basic':>9}{'layerwise':>18}{'dualpath-rr':>18}{'dualpath':>18}{'oracle':>18}"]
    for rule in rules_of(rows):
        basic = at[("basic", rule)]
        cells = [f"{basic:>9,.0f}"]
        for name in ("layerwise", "dualpath-rr", "dualpath", "oracle"):
            value = at.get((name, rule)) or at[(name, "own")]
            cells.append(f"{value:>9,.0f} ({100 * (value / basic - 1):+5.1f}%)")
        out.append(f"{rule:<14}" + "".join(cells))
    return out


def scorecard(rows: list[dict], capacities: list[dict]) -> list[str]:
    """Per rule, the paper's figures that depend on the baselines, by reproduce_paper.py's tolerances."""
    jct = {(r["agents"], r["policy"], r["rule"]): r["jct_s"] for r in rows}
    sizes = sorted({r["agents"] for r in rows})
    rules = rules_of(rows)
    out = ["Figures that move with the baselines' batch rule (tolerances as in reproduce_paper.py; * = outside)",
           f"{'figure':<34}{'paper':>8}" + "".join(f"{rule:>14}" for rule in rules)]

    def line(name: str, paper: float, values: list[float], tolerance: float, fmt: str) -> None:
        cells = [f"{v:{fmt}}{'*' if abs(v / paper - 1) > tolerance else ' '}" for v in values]
        out.append(f"{name:<34}{paper:>8{fmt}}" + "".join(f"{c:>14}" for c in cells))

    for step, paper in PAPER_ABLATION.items():  # the JCT ratio's mean over the sizes, as reproduce_paper.py
        ratios = [sum((jct.get((n, step, rule)) or jct[n, step, "own"]) / jct[n, "basic", rule] for n in sizes)
                  / len(sizes) for rule in rules]
        line(f"JCT ratio + {step} vs basic", 1 + paper / 100, ratios, 0.10, ".3f")
    if 2048 in sizes:
        line("basic JCT, 2,048 agents (s)", PAPER_JCT_S[2048]["basic"],
             [jct[2048, "basic", rule] for rule in rules], 0.25, ",.0f")
        line("basic / dualpath, 2,048 agents", PAPER_RATIO,
             [jct[2048, "basic", rule] / jct[2048, "dualpath", "own"] for rule in rules], 0.10, ".2f")
    if capacities:
        aps = {(c["setup"], c["policy"], c["rule"]): c["capacity_aps"] for c in capacities}
        setups = sorted({c["setup"] for c in capacities})
        means = [sum(aps[s, "dualpath", "own"] / aps[s, "basic", rule] for s in setups) / len(setups)
                 for rule in rules]
        line("dualpath / basic SLO capacity", PAPER_CAPACITY_RATIO, means, 0.15, ".2f")
    return out


def rules_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["rule"] for r in rows if r["policy"] == "basic"))


def measure(sizes: list[int], rules: list[str], with_capacity: bool) -> tuple[list[dict], list[dict]]:
    """Every offline run and capacity search, with progress on stderr."""
    jobs = [(n, p, rule) for n in sizes for rule in rules for p in BASELINES]
    jobs += [(n, p, "own") for n in sizes for p in ("dualpath", "oracle")]
    rows = []
    for i, (n, p, rule) in enumerate(jobs, 1):
        rows.append(run(n, p, rule))
        print(f"[{i}/{len(jobs)}] {n} agents {p} ({rule}): JCT {rows[-1]['jct_s']:,.1f} s "
              f"in {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    searches = [(setup, "basic", rule) for setup in CAPACITY_SETUPS for rule in rules] + [
        (setup, "dualpath", "own") for setup in CAPACITY_SETUPS] if with_capacity else []
    capacities = []
    for i, (setup, p, rule) in enumerate(searches, 1):
        capacities.append(capacity(setup, p, rule))
        print(f"[{i}/{len(searches)}] capacity {setup[1]} {setup[0]} {p} ({rule}): "
              f"{capacities[-1]['capacity_aps']:.3f} agents/s", file=sys.stderr, flush=True)
    return rows, capacities


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="1024,2048", help="comma-separated agent counts (default 1024,2048)")
    ap.add_argument("--caps", default="4096,8192,16384",
                    help="token budgets per PE rank per step to try (default 4096,8192,16384; '' for none)")
    ap.add_argument("--no-capacity", action="store_true",
                    help="skip the online SLO capacity of basic (each rule) and dualpath on V3.2 2P4D and DS 27B 1P1D")
    ap.add_argument("--json", help="write every run's figures to this file")
    ap.add_argument("--from-json", metavar="FILE", help="print the tables of an earlier --json instead of running")
    args = ap.parse_args(argv)
    if args.from_json:
        try:
            saved = read_versioned(args.from_json, "benchmark.baseline_batching", 1)
        except InputError as e:
            ap.error(str(e))
        rows, capacities = saved["runs"], saved["capacities"]
    else:
        try:
            sizes = [int(a) for a in args.agents.split(",")]
            caps = [int(c) for c in args.caps.split(",") if c]
        except ValueError:
            ap.error("--agents and --caps take comma-separated integers")
        if any(n < 1 for n in sizes) or any(c < 1 for c in caps):
            ap.error("--agents and --caps must be positive")
        rows, capacities = measure(sizes, ["ready", *(f"tokens:{c}" for c in caps), "quota"], not args.no_capacity)
        if args.json:
            payload = {"runs": rows, "capacities": capacities}
            write_json_atomic(args.json, versioned("benchmark.baseline_batching", payload))
    for n in sorted({r["agents"] for r in rows}):
        print("\n".join(table(rows, n)) + "\n")
    if capacities:
        print("\n".join(capacity_table(capacities)) + "\n")
    print("\n".join(scorecard(rows, capacities)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
