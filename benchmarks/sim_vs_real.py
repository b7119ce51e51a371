"""Simulator vs real runtime: does the simulator predict what the engines measure?

The workload and cluster of `benchmarks/runtime_dualpath.py`: a 1P1D cluster whose SNICs are far
slower than its CNICs (I/O bound), agents with a long context already in storage (an untimed
warm-up turn) that then run a few turns of appended tokens and short generations. Both executors
get the same `ClusterSpec` (the cluster file, with the benchmark's emulated bandwidths) and the same
timed requests; the simulator's constants are calibrated once from a profile of the engines running
the `tiny` model (`cli_run_profile.profile_engines`: prefill seconds per FLOP, decode seconds per token and
the cost of moving a Layer Block in or out of a PE). For
each policy it prints measured and predicted JCT; the target is every prediction within 15% and the
same order of policies.

    .venv/bin/python benchmarks/sim_vs_real.py [--agents 8] [--turns 3] [--policies layerwise,dualpath,optimized]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

from dualpath.cli_run import _policy
from dualpath.cli_run_profile import profile_engines
from dualpath.jsonio import versioned, write_json_atomic
from dualpath.models.cluster_file import load_cluster
from dualpath.models.llms import llm_preset
from dualpath.request import Trajectory, Turn, Workload, requests_of
from dualpath.runtime.scheduling.agents import timed_workload
from dualpath.runtime.scheduling.realrun import run_real, runtime_for
from dualpath.runtime.sim.simulator import simulate

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000


def benchmark_workload(agents: int, context_tokens: int, turns: int, append_tokens: int, new_tokens: int,
                       block_tokens: int) -> Workload:
    """runtime_dualpath's shape: a warm-up turn of `context_tokens`, then `turns` turns of appends."""
    trajectories = tuple(
        Trajectory(a, (Turn(context_tokens + 16 * a, new_tokens),) + (Turn(append_tokens, new_tokens),) * turns)
        for a in range(agents))
    requests = tuple(r for t in trajectories for r in requests_of(t, block_tokens))
    return Workload(f"runtime-bench-{agents}x{turns}", requests, trajectories)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default=str(ROOT / "examples" / "clusters" / "local-1p1d.toml"))
    p.add_argument("--snic-mb-s", type=float, default=25.0, help="emulated SNIC per node (runtime_dualpath's 25)")
    p.add_argument("--cnic-mb-s", type=float, default=2000.0, help="emulated CNIC per GPU (runtime_dualpath's 2000)")
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--context-tokens", type=int, default=1024)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--append-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=4)
    p.add_argument("--block-tokens", type=int, default=64, help="runtime_dualpath's (the paper's) block")
    p.add_argument("--policies", default="layerwise,dualpath,optimized")
    p.add_argument("--interval-s", type=float, default=0.05, help="scheduler tick, in both executors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="write the table as JSON here")
    p.add_argument("--save", default="", help="write each run's measured and simulated Trace into this folder")
    p.add_argument("--repeats", type=int, default=3, help="real runs per policy; the median JCT counts")
    args = p.parse_args(argv)
    base = load_cluster(args.cluster)
    node = dataclasses.replace(base.node, snic_gbps=args.snic_mb_s * 8e-3, cnic_gbps=args.cnic_mb_s * 8e-3,
                               name=f"{base.node.name}@{args.snic_mb_s:g}/{args.cnic_mb_s:g}MBps")
    cluster = dataclasses.replace(base, node=node)
    llm, bt = llm_preset("tiny"), args.block_tokens
    workload = benchmark_workload(args.agents, args.context_tokens, args.turns, args.append_tokens,
                                  args.new_tokens, bt)
    timed = timed_workload(workload, 1, bt)
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    print(f"{cluster.name} {cluster.shorthand}: SNIC {args.snic_mb_s:g} MB/s, CNIC {args.cnic_mb_s:g} MB/s; "
          f"tiny model; {args.agents} agents, {args.context_tokens}-token context, {args.turns} timed turns of "
          f"+{args.append_tokens}/{args.new_tokens} tokens")
    rows = []
    with runtime_for(cluster, llm, workload, bt, seed=args.seed) as runtime:
        profile = profile_engines(runtime, llm, interval_s=args.interval_s)
        fitted = dataclasses.replace(llm, cost=profile.cost)
        print(profile.describe(llm), flush=True)
        for name in names:
            runs = [run_real(cluster, fitted, workload, _policy(name, cluster, fitted, bt), runtime=runtime,
                             seed=args.seed, warm_turns=1, interval_s=args.interval_s)
                    for _ in range(max(1, args.repeats))]
            runs.sort(key=lambda t: t.metrics().jct_s)
            trace = runs[len(runs) // 2]  # the median run
            sim = simulate(cluster, fitted, timed, _policy(name, cluster, fitted, bt),
                           calibration=profile.calibration(), progress=False, seed=args.seed)
            real_jct, sim_jct = trace.metrics().jct_s, sim.metrics().jct_s
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                trace.save(str(Path(args.save) / f"real_{name}.json"))
                sim.save(str(Path(args.save) / f"sim_{name}.json"))
            rows.append({"policy": name, "real_jct_s": real_jct, "sim_jct_s": sim_jct,
                         "real_jct_runs_s": [t.metrics().jct_s for t in runs],
                         "error": sim_jct / real_jct - 1,
                         "real_read_mb": {k: v / MB for k, v in trace.meta["snic_read_bytes"].items()},
                         "sim_read_mb": {k: v / MB for k, v in sim.meta["snic_read_bytes"].items()}})
            r = rows[-1]
            print(f"{name:>10}: measured JCT {real_jct:6.2f} s (median of {len(runs)}: "
                  f"{', '.join(f'{t.metrics().jct_s:.2f}' for t in runs)}), "
                  f"simulated {sim_jct:6.2f} s ({r['error']:+.1%}); "
                  f"MB read P/D measured {r['real_read_mb'].get('P0', 0):.0f}/{r['real_read_mb'].get('D0', 0):.0f}, "
                  f"simulated {r['sim_read_mb'].get('P0', 0):.0f}/{r['sim_read_mb'].get('D0', 0):.0f}", flush=True)
    real_order = [r["policy"] for r in sorted(rows, key=lambda r: r["real_jct_s"])]
    sim_order = [r["policy"] for r in sorted(rows, key=lambda r: r["sim_jct_s"])]
    worst = max(abs(r["error"]) for r in rows)
    # Every pair the measurement separates (the slower policy's fastest run is slower than the faster
    # policy's slowest run) must be ordered the same way by the simulator; pairs whose runs overlap
    # are ties the measurement itself cannot order.
    ties, flipped = [], []
    for a, b in itertools.combinations(rows, 2):
        lo, hi = sorted((a, b), key=lambda r: r["real_jct_s"])
        if min(hi["real_jct_runs_s"]) <= max(lo["real_jct_runs_s"]):
            ties.append(f"{lo['policy']}~{hi['policy']}")
        elif not lo["sim_jct_s"] < hi["sim_jct_s"]:
            flipped.append(f"{lo['policy']}<{hi['policy']}")
    print(f"order by JCT measured {real_order}, simulated {sim_order}: "
          f"{'same' if not flipped else 'DIFFERENT ' + ', '.join(flipped)}"
          f"{' (ties, runs overlap: ' + ', '.join(ties) + ')' if ties else ''}; "
          f"worst error {worst:.1%} (target <= 15%)")
    if args.json:
        payload = {"rows": rows, "real_order": real_order, "sim_order": sim_order, "ties": ties, "flipped": flipped,
                   "profile": {"rows": profile.rows, "rdma_submit_s": profile.rdma_submit_s,
                               "cost": dataclasses.asdict(profile.cost)}}
        write_json_atomic(args.json, versioned("benchmark.sim_vs_real", payload))
    return 0 if worst <= 0.15 and not flipped else 1


if __name__ == "__main__":
    raise SystemExit(main())
