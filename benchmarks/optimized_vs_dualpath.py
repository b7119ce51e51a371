"""The `optimized` policy against the paper's `dualpath` (and `oracle`) in the simulator.

    python benchmarks/optimized_vs_dualpath.py                  # offline JCT, paper's configurations
    python benchmarks/optimized_vs_dualpath.py --online         # + SLO capacity (agents per second)
    python benchmarks/optimized_vs_dualpath.py --agents 1024 --configs ds-27b:1P1D --jobs 2
    python benchmarks/optimized_vs_dualpath.py --agents none --online --jobs 2   # capacity only

Offline: DeepSeek-V3.2 on 2P4D and DS 27B on 1P1D, 2P1D, 1P2D; agentic-64k; 1,024 and 2,048 agents
start together; JCT = time until every agent is done. Checks: `optimized` JCT <= `dualpath` JCT on
every configuration; on DS 27B 1P1D the share of the dualpath -> oracle gap it closes, next to the
share any policy *can* close: every hit byte must cross a SNIC, so total hit bytes over the summed
effective SNIC read rate is a floor no scheduler goes under (the oracle skips reads).
Online: agents arrive as a Poisson process over a warm-up plus a measurement window; capacity = the
highest rate whose steady state meets the paper's SLO (mean TTFT <= 4 s, mean TPOT <= 50 ms), found
below the fluid limit by the simulator's own search (`dualpath.runtime.sim.online`).
Check: `optimized` capacity >= `dualpath`'s.
Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from dualpath.calibration import PAPER_CALIBRATION, calibrated_llm
from dualpath.jsonio import versioned, write_json_atomic
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.runtime.sim.parallelism import expert_groups
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy

CONFIGS = ("deepseek-v3.2:2P4D", "ds-27b:1P1D", "ds-27b:2P1D", "ds-27b:1P2D")


def setup(config: str):
    model, shorthand = config.split(":")
    llm = calibrated_llm(llm_preset(model))
    return expert_groups(resolve_cluster(shorthand), llm), llm


def policy_of(name: str, cluster, llm):
    return make_policy(name, cluster, llm)


def run_offline(job: tuple[str, int, str]) -> dict:
    config, agents, name = job
    cluster, llm = setup(config)
    workload = resolve_workload("agentic-64k", agents=agents, seed=0)
    policy = policy_of(name, cluster, llm)
    started = time.perf_counter()
    trace = simulate(cluster, llm, workload, policy, progress=False)
    row = {"config": config, "agents": agents, "policy": name, "jct_s": trace.metrics().jct_s,
           "wall_s": time.perf_counter() - started}
    if name == "dualpath":
        rate = cluster.node.snic_bytes_per_s * PAPER_CALIBRATION.snic_read_efficiency
        row["io_floor_s"] = trace.meta["hit_bytes"] / (rate * len(cluster.all_nodes()))
    if name == "optimized":
        lat = sorted(policy.scheduler.tick_latencies_s)
        row["tick_p99_ms"] = 1e3 * lat[int(0.99 * (len(lat) - 1))] if lat else 0.0
    return row


def run_capacity(job: tuple[str, str, float]) -> dict:
    """The simulator's own capacity search (`dualpath.runtime.sim.online`): Poisson arrivals over the
    warm-up plus `window` seconds, probes below the fluid limit, SLO = mean TTFT <= 4 s and mean TPOT
    <= 50 ms in the steady state."""
    from dualpath.models.sampling import online_workloads
    from dualpath.runtime.capacity import PAPER_SLO, online_horizon_s
    from dualpath.runtime.sim.online import search_capacity

    config, name, window_s = job
    cluster, llm = setup(config)
    trace = resolve_workload("agentic-64k", seed=0)
    workload_at = online_workloads(trace, online_horizon_s(trace.trajectories, PAPER_SLO, window_s), seed=0)
    row = search_capacity(cluster, llm, workload_at, lambda: policy_of(name, cluster, llm), PAPER_SLO)
    return {"config": config, "policy": name, "aps": row["capacity_aps"], "fluid_limit_aps": row["fluid_limit_aps"],
            "bound_by": row["bound_by"],
            "probes": [(p["aps"], p["slo_met"], p["ttft_mean_s"], p["tpot_mean_s"]) for p in row["probes"]]}


def pool_map(fn, jobs, processes: int):
    if not jobs:
        return
    if processes <= 1:
        for job in jobs:
            yield fn(job)
        return
    with multiprocessing.get_context("fork").Pool(min(processes, len(jobs))) as pool:
        yield from pool.imap_unordered(fn, jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="model:cluster, comma separated")
    parser.add_argument("--agents", default="1024,2048", help="offline sizes, or none (online only)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--online", action="store_true", help="also measure SLO capacity (slow)")
    parser.add_argument("--online-configs", default="ds-27b:1P1D,deepseek-v3.2:2P4D")
    parser.add_argument("--online-window", type=float, default=600.0,
                        help="seconds of steady state each online probe measures after its warm-up")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    configs = args.configs.split(",")
    sizes = [int(a) for a in args.agents.split(",") if a.strip() and a.strip() != "none"]
    jobs = [(c, a, p) for a in sizes for c in configs for p in ("dualpath", "optimized", "oracle")]
    jobs.sort(key=lambda j: -j[1])
    rows = []
    for row in pool_map(run_offline, jobs, args.jobs):
        rows.append(row)
        print(f"  {row['config']:<20} {row['agents']:>5} {row['policy']:<10} JCT {row['jct_s']:>8.1f} s "
              f"({row['wall_s']:.0f} s wall)", file=sys.stderr, flush=True)
    jct = {(r["config"], r["agents"], r["policy"]): r for r in rows}
    failed = []
    print("| config | agents | dualpath JCT (s) | optimized JCT (s) | oracle JCT (s) | optimized vs dualpath | "
          "gap to oracle closed | closable by any policy | tick p99 (ms) | check |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for config in configs:
        for agents in sizes:
            d, o, x = (jct.get((config, agents, p)) for p in ("dualpath", "optimized", "oracle"))
            if not (d and o and x):
                continue
            gap = d["jct_s"] - x["jct_s"]
            closed = (d["jct_s"] - o["jct_s"]) / gap if gap > 0 else 0.0
            closable = (d["jct_s"] - max(d["io_floor_s"], x["jct_s"])) / gap if gap > 0 else 0.0
            ok = o["jct_s"] <= d["jct_s"]
            if not ok:
                failed.append(f"{config} {agents}: optimized above dualpath")
            if config == "ds-27b:1P1D" and closed < 0.5:
                ok = False
                failed.append(f"{config} {agents}: closes {closed:.0%} of the dualpath->oracle gap (< 50%); "
                              f"the I/O floor leaves {closable:.0%} closable by any policy")
            print(f"| {config} | {agents:,} | {d['jct_s']:,.1f} | {o['jct_s']:,.1f} | {x['jct_s']:,.1f} | "
                  f"{o['jct_s'] / d['jct_s'] - 1:+.1%} | {closed:.0%} | {closable:.0%} "
                  f"(I/O floor {d['io_floor_s']:,.0f} s) | {o['tick_p99_ms']:.1f} | {'ok' if ok else 'FAIL'} |")
    capacity = []
    if args.online:
        cap_jobs = [(c, p, args.online_window) for c in args.online_configs.split(",")
                    for p in ("dualpath", "optimized")]
        capacity = list(pool_map(run_capacity, cap_jobs, args.jobs))
        print("\n| config | policy | SLO capacity (agents/s) | fluid limit (agents/s), bound by | "
              "probes (APS: met, mean TTFT s, mean TPOT ms) |")
        print("|---|---|---:|---|---|")
        for r in sorted(capacity, key=lambda r: (r["config"], r["policy"])):
            probes = ", ".join(f"{a:.3g}: {'yes' if ok else 'no'} {t:.1f}/{1e3 * p:.0f}" for a, ok, t, p in r["probes"])
            print(f"| {r['config']} | {r['policy']} | {r['aps']:.3f} | {r['fluid_limit_aps']:.3f}, {r['bound_by']} | "
                  f"{probes} |")
        caps = {(r["config"], r["policy"]): r["aps"] for r in capacity}
        for c in args.online_configs.split(","):
            if caps.get((c, "optimized"), 0.0) < caps.get((c, "dualpath"), 0.0):
                failed.append(f"{c}: optimized SLO capacity below dualpath")
    if args.json:
        payload = {"offline": rows, "capacity": capacity, "failed": failed}
        write_json_atomic(args.json, versioned("benchmark.optimized_vs_dualpath", payload))
    print("\nall checks passed" if not failed else f"\nFAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
