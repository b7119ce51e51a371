"""The sweep behind `dualpath.calibration`: the paper's figures over a grid of constants.

    python benchmarks/calibrate_sim.py --grid snic_read_efficiency=0.7,0.8,0.9 \
        --grid cuda_copy_submit_s=4e-6,5e-6,6e-6 --agents 1024,2048 --jobs 16 --json sweep.json

Each grid point runs the ablation's policies (`reproduce_paper.run_one`), skipping runs a field cannot
change (the oracle has no I/O; only `basic` copies with cudaMemcpy), and prints the acceptance checks
per point, fewest misses first. One calibration is then chosen
and written into `dualpath/calibration.py` by hand, with its reasons.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import sys
from typing import Any

from reproduce_paper import POLICIES, checks, run_one

from dualpath.jsonio import versioned, write_json_atomic

# Fields a policy's run does not depend on (so one run serves every value).
IRRELEVANT = {
    "oracle": {"snic_read_efficiency", "snic_write_efficiency", "cuda_copy_submit_s", "rdma_submit_s"},
    "layerwise": {"cuda_copy_submit_s"}, "dualpath-rr": {"cuda_copy_submit_s"}, "dualpath": {"cuda_copy_submit_s"},
    "round-robin": {"cuda_copy_submit_s"}, "basic": set(),
}


def _key(policy: str, agents: int, point: dict[str, str]) -> tuple:
    kept = tuple(sorted((k, v) for k, v in point.items() if k not in IRRELEVANT.get(policy, set())))
    return policy, agents, kept


def _misses(rows) -> int:
    return sum(0 if ok else 1 for *_, ok in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...")
    parser.add_argument("--agents", default="1024,2048")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    axes = [(k, v.split(",")) for k, _, v in (g.partition("=") for g in args.grid)]
    points = [dict(zip([k for k, _ in axes], values)) for values in itertools.product(*[v for _, v in axes])]
    sizes = [int(a) for a in args.agents.split(",")]
    policies = args.policies.split(",")
    jobs: dict[tuple, tuple] = {}
    for point in points:
        for agents in sizes:
            for policy in policies:
                key = _key(policy, agents, point)
                jobs.setdefault(key, (policy, agents, 0, tuple(f"{k}={v}" for k, v in key[2])))
    print(f"{len(points)} grid points, {len(jobs)} distinct runs", file=sys.stderr, flush=True)
    ordered = sorted(jobs.items(), key=lambda kv: -kv[0][1])
    with multiprocessing.get_context("fork").Pool(min(args.jobs, len(ordered))) as pool:
        results = dict(zip([k for k, _ in ordered], pool.map(run_one, [j for _, j in ordered])))
    report: list[dict[str, Any]] = []
    for point in points:
        rows = checks([results[_key(p, a, point)] for a in sizes for p in policies])
        jct = {f"{p}@{a}": round(results[_key(p, a, point)]["jct_s"]) for a in sizes for p in policies}
        report.append({"point": point, "misses": _misses(rows), "jct_s": jct,
                       "checks": [(n, paper, ours, ok) for n, paper, ours, ok in rows]})
    report.sort(key=lambda r: r["misses"])
    for r in report:
        print(f"\n{r['point']}  misses={r['misses']}")
        for name, paper, ours, ok in r["checks"]:
            print(f"  {'ok ' if ok else 'MISS'} {name}: paper {paper}, ours {ours}")
        print("  JCT:", r["jct_s"])
    if args.json:
        write_json_atomic(args.json, versioned("benchmark.calibrate_sim", {"runs": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
