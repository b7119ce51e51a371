"""Simulator speed: simulated requests per wall-clock second, one policy at a time on one core.

    python benchmarks/sim_speed.py                                   # 2P4D, 2,048 agents, basic + dualpath
    python benchmarks/sim_speed.py --cluster 48P96D --agents 49152 --policies dualpath
    python benchmarks/sim_speed.py --beside-pure   # each policy also as pure Python: the compiled build's gain

The target (issue 6): the 2,048-agent DeepSeek-V3.2 2P4D run in at most 60 s per policy. Each row
also gives the run's CPU seconds: on a shared machine they move far less than wall time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from dualpath.calibration import calibrated_llm
from dualpath.compiled import PURE_ENV, compiled_packages
from dualpath.jsonio import versioned, write_json_atomic
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.runtime.sim.parallelism import expert_groups
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", default="2P4D")
    parser.add_argument("--model", default="deepseek-v3.2")
    parser.add_argument("--workload", default="agentic-64k")
    parser.add_argument("--agents", type=int, default=2048)
    parser.add_argument("--policies", default="basic,dualpath")
    parser.add_argument("--limit-s", type=float, default=60.0, help="the per-policy wall-clock target")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--beside-pure", action="store_true",
                        help="after each policy, run it again as pure Python in a child process (DUALPATH_PURE=1) and "
                             "print the speed ratio and whether the JCTs are identical")
    args = parser.parse_args(argv)
    llm = calibrated_llm(llm_preset(args.model))
    cluster = expert_groups(resolve_cluster(args.cluster), llm)
    started = time.perf_counter()
    workload = resolve_workload(args.workload, agents=args.agents)
    generate_s = time.perf_counter() - started
    built = compiled_packages()
    print("simulator and scheduler: " + (f"compiled with mypyc ({', '.join(sorted(built))})" if built else
                                         "pure Python (no compiled build: tools/compile.py, or DUALPATH_PURE set)"))
    print(f"{args.workload}, {args.agents:,} agents: {len(workload.requests):,} requests "
          f"(generated in {generate_s:.1f} s); {cluster.shorthand}, groups PE {cluster.pe_group_gpus} / "
          f"DE {cluster.de_group_gpus} GPUs")
    rows, ok = [], True
    for name in args.policies.split(","):
        # The previous policy's trace (millions of records at 48P96D) is gone before this one starts: a
        # run that follows another then starts from the same heap as a first one (it measured 20-25% slower).
        gc.collect()
        started, cpu_started = time.perf_counter(), time.process_time()
        trace = simulate(cluster, llm, workload, make_policy(name, cluster, llm), progress=args.progress or None)
        wall_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started  # on a shared machine, CPU time is the steadier figure
        row = {"policy": name, "requests": len(trace.records), "wall_s": wall_s,
               "requests_per_s": len(trace.records) / wall_s, "cpu_s": cpu_s,
               "requests_per_cpu_s": len(trace.records) / cpu_s if cpu_s > 0 else 0.0, "events": trace.meta["events"],
               "jct_s": trace.metrics().jct_s,
               "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        del trace
        rows.append(row)
        ok &= wall_s <= args.limit_s
        print(f"{name:<12} {wall_s:7.1f} s wall  {row['requests_per_s']:9,.0f} requests/s  "
              f"{cpu_s:7.1f} s CPU  {row['requests_per_cpu_s']:9,.0f} requests/CPU-s  "
              f"{row['events']:>10,} events  JCT {row['jct_s']:,.0f} s simulated  "
              f"{'within' if wall_s <= args.limit_s else 'OVER'} {args.limit_s:.0f} s", flush=True)
        if args.beside_pure and built:
            pure = pure_row(args, name)
            row["pure"] = pure
            print(f"{'  pure':<12} {pure['wall_s']:7.1f} s wall  {pure['requests_per_s']:9,.0f} requests/s  "
                  f"compiled / pure {row['requests_per_s'] / pure['requests_per_s']:.2f}x, JCT "
                  f"{'identical' if pure['jct_s'] == row['jct_s'] else 'DIFFERS: ' + repr(pure['jct_s'])}", flush=True)
    if args.json:
        payload = {"cluster": args.cluster, "agents": args.agents, "compiled": sorted(built), "results": rows}
        write_json_atomic(args.json, versioned("benchmark.sim_speed", payload))
    return 0 if ok else 1


def pure_row(args: argparse.Namespace, policy: str) -> dict:
    """`policy`'s row from this script run as pure Python in a child process (same flags)."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "pure.json")
        subprocess.run([sys.executable, __file__, "--cluster", args.cluster, "--model", args.model, "--workload",
                        args.workload, "--agents", str(args.agents), "--policies", policy, "--limit-s",
                        str(args.limit_s), "--json", out], env={**os.environ, PURE_ENV: "1"},
                       stdout=subprocess.DEVNULL, check=True)
        with open(out) as f:
            return json.load(f)["results"][0]


if __name__ == "__main__":
    sys.exit(main())
