"""Reproduce the paper's offline results with the simulator and compare (DualPath, arXiv 2602.21548).

DeepSeek-V3.2 on 2P4D, agentic-64k, all agents start together; JCT = time until every agent is done.
Paper: Basic ~10,100 s and DualPath ~5,400 s at 2,048 agents (1.87x), Oracle a few percent below
DualPath; ablation at 1,024 and 2,048 agents, mean JCT reduction against Basic, cumulative:
+ layerwise prefill -17.2%, + dual-path loading -38.2%, + scheduling -45.6%.

    python benchmarks/reproduce_paper.py                       # 1,024 and 2,048 agents, all cores
    python benchmarks/reproduce_paper.py --agents 2048 --jobs 1 --json out.json --markdown table.md

Every number comes from one calibration (`dualpath.calibration`); `--set key=value` overrides
a calibration field for sensitivity studies only (`--set snic_read_efficiency=0.7`,
`--set cost.prefill_mfu=0.3`). Exit code 1 when an acceptance check fails.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from dataclasses import replace
from typing import Any

from dualpath.calibration import PAPER_CALIBRATION, Calibration, calibrated_llm
from dualpath.jsonio import versioned, write_json_atomic
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.runtime.sim.parallelism import expert_groups
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy

POLICIES = ("basic", "layerwise", "dualpath-rr", "dualpath", "oracle")
PAPER_JCT_S = {2048: {"basic": 10_100.0, "dualpath": 5_400.0}}
PAPER_RATIO = 1.87
PAPER_ABLATION = {"layerwise": -17.2, "dualpath-rr": -38.2, "dualpath": -45.6}


def calibration_with(overrides: list[str]) -> Calibration:
    cal = PAPER_CALIBRATION
    cost: dict[str, float] = {}
    fields: dict[str, Any] = {}
    for item in overrides:
        key, _, text = item.partition("=")
        name = key.removeprefix("cost.")
        current = getattr(cal.cost_model if key.startswith("cost.") else cal, name)
        is_int = (isinstance(current, int) and not isinstance(current, bool)) or name == "max_batch_new_tokens"
        value = int(float(text)) if is_int else float(text)
        (cost if key.startswith("cost.") else fields)[name] = value
    if cost:
        assert cal.cost_model is not None  # getattr above already read the overridden cost fields from it
        fields["cost_model"] = replace(cal.cost_model, **cost)
    return replace(cal, **fields)


def workload_of(agents: int, seed: int, fresh: bool):
    """The paper's setup (500 trajectories, resampled past 500 with a random first turn), or, with
    `fresh`, as many independently generated trajectories as agents (a sensitivity check)."""
    if not fresh:
        return resolve_workload("agentic-64k", agents=agents, seed=seed)
    from dualpath.models.generators import agentic_trajectories
    from dualpath.models.workloads import from_trajectories

    return from_trajectories("agentic-64k-fresh", agentic_trajectories("agentic-64k", agents, seed), 64)


def run_one(job: tuple) -> dict:
    policy_name, agents, seed, overrides, *rest = job
    cal = calibration_with(list(overrides))
    llm = calibrated_llm(llm_preset("deepseek-v3.2"), cal)
    cluster = expert_groups(resolve_cluster("2P4D"), llm, cal)
    workload = workload_of(agents, seed, bool(rest and rest[0]))
    started = time.perf_counter()
    trace = simulate(cluster, llm, workload, make_policy(policy_name, cluster, llm), calibration=cal,
                     progress=False, seed=seed)
    wall_s = time.perf_counter() - started
    m = trace.metrics()
    done_at: dict[int, float] = {}
    for r in trace.records:
        done_at[r.agent] = max(done_at.get(r.agent, 0.0), r.finish_s)
    return {"policy": policy_name, "agents": agents, "requests": m.num_requests, "jct_s": m.jct_s,
            "mean_agent_jct_s": sum(done_at.values()) / len(done_at), "ttft_mean_s": m.ttft_mean_s,
            "tpot_mean_s": m.tpot_mean_s, "wall_s": wall_s, "requests_per_wall_s": m.num_requests / wall_s,
            "snic_balance": trace.meta["snic_balance_max_over_avg"]}


def checks(results: list[dict]) -> list[tuple[str, str, str, bool]]:
    """(criterion, paper, ours, pass) for the issue's acceptance figures that the results cover."""
    jct = {(r["agents"], r["policy"]): r["jct_s"] for r in results}
    out = []
    if (2048, "basic") in jct and (2048, "dualpath") in jct:
        ratio = jct[2048, "basic"] / jct[2048, "dualpath"]
        out.append(("basic/dualpath JCT, 2,048 agents", f"{PAPER_RATIO:.2f}", f"{ratio:.2f}",
                    abs(ratio / PAPER_RATIO - 1) <= 0.10))
        for policy, paper in PAPER_JCT_S[2048].items():
            ours = jct[2048, policy]
            out.append((f"{policy} JCT, 2,048 agents", f"{paper:,.0f} s", f"{ours:,.0f} s",
                        abs(ours / paper - 1) <= 0.25))
    for agents in sorted({a for a, _ in jct}):
        if (agents, "oracle") in jct and (agents, "dualpath") in jct:
            gap = jct[agents, "dualpath"] / jct[agents, "oracle"] - 1
            out.append((f"dualpath above oracle, {agents:,} agents", "a few %", f"{gap:+.1%}", abs(gap) <= 0.10))
    sizes = sorted({a for a, p in jct if p == "basic"})
    for policy, paper in PAPER_ABLATION.items():
        cuts = [100 * (jct[a, policy] / jct[a, "basic"] - 1) for a in sizes if (a, policy) in jct]
        if cuts:
            mean = sum(cuts) / len(cuts)
            each = ", ".join(f"{c:+.1f}" for c in cuts)
            out.append((f"ablation {policy} vs basic (mean of {'/'.join(map(str, sizes))})", f"{paper:+.1f}%",
                        f"{mean:+.1f}% ({each})", abs(mean - paper) <= 5.0))
    return out


def markdown(results: list[dict], rows: list[tuple[str, str, str, bool]]) -> str:
    lines = ["| agents | policy | requests | JCT (s) | mean agent JCT (s) | TTFT mean (s) | TPOT mean (ms) |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r["agents"], POLICIES.index(r["policy"]))):
        lines.append(f"| {r['agents']:,} | {r['policy']} | {r['requests']:,} | {r['jct_s']:,.0f} | "
                     f"{r['mean_agent_jct_s']:,.0f} | {r['ttft_mean_s']:.2f} | {r['tpot_mean_s'] * 1000:.1f} |")
    lines += ["", "| figure | paper | ours | within tolerance |", "|---|---:|---:|:---:|"]
    lines += [f"| {name} | {paper} | {ours} | {'yes' if ok else 'no'} |" for name, paper, ours, ok in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1024,2048")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write the paper-vs-ours table here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a calibration field (sensitivity studies only)")
    parser.add_argument("--fresh", action="store_true",
                        help="generate every agent's trajectory instead of resampling the 500-trajectory trace")
    args = parser.parse_args(argv)
    jobs = [(p, int(a), args.seed, tuple(args.set), args.fresh)
            for a in args.agents.split(",") for p in args.policies.split(",")]
    jobs.sort(key=lambda j: -j[1])  # big runs first, so the pool finishes together
    results = []
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(min(args.jobs, len(jobs))) as pool:
            for r in pool.imap_unordered(run_one, jobs):
                results.append(r)
                print(f"{r['agents']:>6,} {r['policy']:<12} JCT {r['jct_s']:>9,.0f} s  ({r['wall_s']:.0f} s wall)",
                      file=sys.stderr, flush=True)
    else:
        for job in jobs:
            results.append(run_one(job))
    rows = checks(results)
    table = markdown(results, rows)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    if args.json:
        write_json_atomic(args.json, versioned("benchmark.reproduce_paper", {"results": results, "overrides": args.set,
                                      "checks": [dict(zip(("figure", "paper", "ours", "ok"), r)) for r in rows]}))
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
