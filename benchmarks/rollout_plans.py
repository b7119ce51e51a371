"""Rollout plans judged by executed JCT, against the online policies, the certified bound, and clairvoyance.

    python benchmarks/rollout_plans.py                          # the acceptance table (8 rollouts)
    python benchmarks/rollout_plans.py --agents 1024 --jobs 2   # 1,024 agents only, two at a time
    python benchmarks/rollout_plans.py --ablation --agents 1024 # which component buys what
    python benchmarks/rollout_plans.py --ablation --configs ds-27b:examples/clusters/slow-snic-2p4d.toml
    python benchmarks/rollout_plans.py --solve-only --agents 1024 --configs deepseek-v3.2:2P4D  # planning time

Main table: DeepSeek-V3.2 on 2P4D and DS 27B on 1P1D, 2P1D, 1P2D; agentic-64k, 1,024 and 2,048 agents,
seed 0. Per rollout: the online `dualpath` and `optimized` policies, the default-mode rollout plan (the
planner sees the agents' first turns and one independent sample of the workload, seed 1000, and judges
its candidates by executing them there), its executed JCT on the true rollout, the gain over the better
online policy, the gap to the certified bound (`solver.rollout_bound`), the planning time
(`solve_time_s`), and the clairvoyant plan (candidates judged on the true rollout) beside it. Check (exit
code 1 when it fails): the default-mode plan's executed JCT is never above the better online policy's.

Ablation (`--ablation`): executed JCT on the same rollouts with the paper's rules and with `optimized`'s
components switched on one at a time over its core (its PE/read-side placement with the paper's FIFO
admission, FIFO batches, whole reads), then all of them, then the rollout plan.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from typing import Any

from dualpath.cli_rollout import make_rollout_plan, rollout_simulator
from dualpath.jsonio import versioned, write_json_atomic

CONFIGS = ("deepseek-v3.2:2P4D", "ds-27b:1P1D", "ds-27b:2P1D", "ds-27b:1P2D")
CORE = {"skip_blocked": False, "short_compute_s": 0.0, "batch_order": "fifo", "split_reads": False, "lp": False}
ABLATION: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("paper rules (dualpath)", "dualpath", {}),
    ("paper rules + batch order (dualpath-srpt)", "dualpath-srpt", {}),
    ("optimized core: placement only", "optimized", CORE),
    ("core + admission", "optimized", CORE | {"skip_blocked": True, "short_compute_s": 0.5}),
    ("core + batch order", "optimized", CORE | {"batch_order": "srpt"}),
    ("core + split reads", "optimized", CORE | {"split_reads": True}),
    ("core + split reads + LP", "optimized", CORE | {"split_reads": True, "lp": True}),
    ("optimized without split reads / LP", "optimized", {"split_reads": False, "lp": False}),
    ("optimized (all on)", "optimized", {}),
)


class Memo:
    """The simulator callback, remembering each (rollout, plan) execution: the clairvoyant planner executes
    on the true rollout the same plans the default-mode result needs there (baselines, its chosen plan)."""

    def __init__(self, cluster, llm, seed: int) -> None:
        self.run = rollout_simulator(cluster, llm, seed)
        self.jct: dict[tuple, float] = {}

    def __call__(self, workload, plan) -> float:
        key = (workload.name, len(workload.requests), workload.requests[0].id, workload.requests[-1].hit_tokens,
               sum(r.new_tokens for r in workload.requests), repr((plan.rules, sorted(plan.options.items()),
                                                                    plan.turn_priority, plan.agents)))
        if key not in self.jct:
            self.jct[key] = self.run(workload, plan)
        return self.jct[key]


def split(config: str) -> tuple[str, str]:
    model, cluster = config.split(":", 1)
    return model, cluster


def main_row(job: tuple[str, int, int, str]) -> dict:
    from dualpath.calibration import calibrated_llm
    from dualpath.models.registry import resolve_cluster, resolve_model

    config, agents, samples, rows_dir = job
    model, cluster_name = split(config)
    memo = Memo(resolve_cluster(cluster_name), calibrated_llm(resolve_model(model)), 0)
    started = time.perf_counter()
    # Clairvoyant first: its executions on the truth are then reused by the default mode's baselines and
    # replay, while the default mode's own planning (on the samples) is timed from scratch.
    seer = make_rollout_plan(cluster_name, model, "agentic-64k", agents, 0, clairvoyant=True, simulate=memo)
    plan = make_rollout_plan(cluster_name, model, "agentic-64k", agents, 0, samples=samples, simulate=memo)
    best = min(plan.baselines.values())
    row = {"config": config, "agents": agents, "dualpath_jct_s": plan.baselines["dualpath"],
           "optimized_jct_s": plan.baselines["optimized"], "plan": plan.candidate,
           "plan_executed_jct_s": plan.executed_jct_s, "gain_vs_better_online": 1 - plan.executed_jct_s / best,
           "lower_bound_s": plan.lower_bound_s, "bound_binding": plan.meta["bound_binding"], "gap": plan.gap,
           "solve_time_s": plan.solve_time_s, "sample_jct_s": plan.meta["candidates_jct_s"],
           "clairvoyant_plan": seer.candidate, "clairvoyant_executed_jct_s": seer.executed_jct_s,
           "clairvoyant_gap": seer.gap, "clairvoyant_truth_jct_s": seer.meta["candidates_jct_s"],
           "never_above_online": plan.executed_jct_s <= best, "wall_s": time.perf_counter() - started}
    if rows_dir:  # each row as soon as it is done: a long run stopped early keeps what it measured
        write_json_atomic(f"{rows_dir}/{config.replace(':', '_').replace('/', '_')}_{agents}.json", row)
    print(f"{config} {agents}: plan {plan.candidate} {plan.executed_jct_s:.1f} s vs online {best:.1f} s "
          f"(gain {row['gain_vs_better_online']:.2%}), bound {plan.lower_bound_s:.1f} s, gap {plan.gap:.1%}, "
          f"solve {plan.solve_time_s:.1f} s; clairvoyant {seer.candidate} {seer.executed_jct_s:.1f} s",
          flush=True)
    return row


def ablation_row(job: tuple[str, int, dict]) -> dict:
    from dualpath.calibration import calibrated_llm
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.rollout_plan import RolloutPlan, RolloutSource

    config, agents, planned = job
    model, cluster_name = split(config)
    cluster, llm = resolve_cluster(cluster_name), calibrated_llm(resolve_model(model))
    truth = resolve_workload("agentic-64k", agents=agents, seed=0)
    source = RolloutSource(cluster_name, model, "agentic-64k", agents, 0)
    run = rollout_simulator(cluster, llm, 0)
    cells = {}
    for label, rules, options in ABLATION:
        cells[label] = run(truth, RolloutPlan(source, rules, options=options))
        print(f"{config} {agents} {label}: {cells[label]:.1f} s", flush=True)
    if planned:
        plan = make_rollout_plan(cluster_name, model, "agentic-64k", agents, 0)
        cells[f"rollout plan ({plan.candidate})"] = plan.executed_jct_s
        print(f"{config} {agents} rollout plan: {plan.executed_jct_s:.1f} s", flush=True)
    return {"config": config, "agents": agents, "jct_s": cells}


def solve_row(job: tuple[str, int, int]) -> dict:
    """Planning alone, in the default mode: what `solve_time_s` measures, with this process's CPU time."""
    from dualpath.calibration import calibrated_llm
    from dualpath.cli_rollout import sample_seeds
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.rollout_plan import RolloutSource
    from dualpath.solver.rollout_planner import plan_rollout

    config, agents, samples = job
    model, cluster_name = split(config)
    cluster, llm = resolve_cluster(cluster_name), calibrated_llm(resolve_model(model))
    truth = resolve_workload("agentic-64k", agents=agents, seed=0)
    wall, cpu = time.perf_counter(), time.process_time()
    evaluation = [resolve_workload("agentic-64k", agents=agents, seed=s) for s in sample_seeds(0, samples)]
    plan = plan_rollout(RolloutSource(cluster_name, model, "agentic-64k", agents, 0), truth.first_turns(), evaluation,
                        rollout_simulator(cluster, llm, 0)).plan
    row = {"config": config, "agents": agents, "plan": plan.candidate, "solve_time_s": time.perf_counter() - wall,
           "solve_cpu_s": time.process_time() - cpu, "sample_jct_s": plan.meta["candidates_jct_s"]}
    print(f"{config} {agents}: planned {plan.candidate} in {row['solve_time_s']:.1f} s wall, "
          f"{row['solve_cpu_s']:.1f} s CPU (samples generated included)", flush=True)
    return row


def markdown_main(rows: list[dict]) -> str:
    out = ["| model / cluster | agents | dualpath (s) | optimized (s) | rollout plan (s) | gain | bound (s) | gap "
           "| solve (s) | clairvoyant plan (s) |",
           "|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['config']} | {r['agents']:,} | {r['dualpath_jct_s']:,.1f} | {r['optimized_jct_s']:,.1f} "
                   f"| {r['plan_executed_jct_s']:,.1f} ({r['plan']}) | {r['gain_vs_better_online']:.2%} "
                   f"| {r['lower_bound_s']:,.1f} ({r['bound_binding']}) | {r['gap']:.1%} | {r['solve_time_s']:.0f} "
                   f"| {r['clairvoyant_executed_jct_s']:,.1f} ({r['clairvoyant_plan']}) |")
    return "\n".join(out)


def markdown_ablation(rows: list[dict]) -> str:
    labels = list(dict.fromkeys(label for r in rows for label in r["jct_s"]))
    out = ["| executed JCT (s) | " + " | ".join(f"{r['config']} {r['agents']:,}" for r in rows) + " |",
           "|---|" + "---:|" * len(rows)]
    for label in labels:
        cells = []
        for r in rows:
            v, base = r["jct_s"].get(label), r["jct_s"]["paper rules (dualpath)"]
            cells.append(f"{v:,.1f} ({v / base - 1:+.1%})" if v is not None else "-")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="model:cluster,... (cluster: xPyD or .toml)")
    parser.add_argument("--agents", default="1024,2048", help="comma-separated agent counts")
    parser.add_argument("--samples", type=int, default=1, help="independent samples the default mode judges on")
    parser.add_argument("--ablation", action="store_true", help="the ablation table instead of the main one")
    parser.add_argument("--solve-only", action="store_true", help="time the default-mode planning alone")
    parser.add_argument("--no-plan", action="store_true", help="ablation: leave out the rollout plan's row")
    parser.add_argument("--jobs", type=int, default=1, help="rollouts at once, one process each")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--rows-dir", default="", help="also write each main row here when it is done")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    agent_counts = [int(a) for a in args.agents.split(",") if a.strip()]
    if args.solve_only:
        solved = [solve_row((c, a, args.samples)) for a in agent_counts for c in configs]
        if args.json:
            write_json_atomic(args.json, versioned("rollout-plans-solve", {"rows": solved}))
        return 0
    if args.ablation:
        jobs: list[Any] = [(c, a, not args.no_plan) for a in agent_counts for c in configs]
        fn: Any = ablation_row
    else:
        jobs = [(c, a, args.samples, args.rows_dir) for a in agent_counts for c in configs]
        fn = main_row
    print("machine: 2-core / 24 GiB dev box, no GPU (shared)", flush=True)
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            rows = pool.map(fn, jobs, chunksize=1)
    else:
        rows = [fn(j) for j in jobs]
    table = markdown_ablation(rows) if args.ablation else markdown_main(rows)
    print(table)
    if args.json:
        write_json_atomic(args.json, versioned("rollout-plans-ablation" if args.ablation else "rollout-plans",
                                               {"rows": rows, "table": table}))
    if args.ablation:
        return 0
    failed = [f"{r['config']} {r['agents']}" for r in rows if not r["never_above_online"]]
    if failed:
        print("FAIL: the rollout plan executes slower than the better online policy on " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
