"""Real runtime, online: agents arrive as a Poisson process; TTFT, TPOT and SLO attainment per rate,
and the highest rate each policy sustains within the SLO (PE-only reading vs dual path).

The cluster and agents are `sim_vs_real.py`'s (1P1D, SNICs far slower than CNICs, a long context
already in storage, turns of appended tokens); the agents' arrival times come from the workload
generator's Poisson process at each probed rate. A probe is one real run on the same engines; the
steady state and the SLO check are the simulator's (`runtime.capacity`), and the capacity is found
by doubling then bisecting the rate.

    .venv/bin/python benchmarks/runtime_online.py [--agents 24] [--aps 2] [--policies layerwise,dualpath]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from sim_vs_real import ROOT, benchmark_workload

from dualpath.cli_run import _policy
from dualpath.jsonio import write_text_atomic
from dualpath.models.cluster_file import load_cluster
from dualpath.models.llms import llm_preset
from dualpath.models.sampling import poisson_arrivals
from dualpath.models.workloads import from_trajectories
from dualpath.runtime.capacity import SLO, find_capacity, online_summary
from dualpath.runtime.scheduling.realrun import run_real, runtime_for


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default=str(ROOT / "examples" / "clusters" / "local-1p1d.toml"))
    p.add_argument("--snic-mb-s", type=float, default=25.0)
    p.add_argument("--cnic-mb-s", type=float, default=2000.0)
    p.add_argument("--agents", type=int, default=24)
    p.add_argument("--context-tokens", type=int, default=1024)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--append-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--block-tokens", type=int, default=64, help="runtime_dualpath's (the paper's) block")
    p.add_argument("--aps", type=float, default=2.0, help="the fixed rate reported in full (agents per second)")
    p.add_argument("--slo-ttft-s", type=float, default=1.0, help="TTFT SLO (the paper's 4 s, scaled to this setup)")
    p.add_argument("--slo-tpot-s", type=float, default=0.05, help="TPOT SLO (the paper's 50 ms)")
    p.add_argument("--policies", default="layerwise,dualpath")
    p.add_argument("--max-probes", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    base = load_cluster(args.cluster)
    node = dataclasses.replace(base.node, snic_gbps=args.snic_mb_s * 8e-3, cnic_gbps=args.cnic_mb_s * 8e-3)
    cluster = dataclasses.replace(base, node=node)
    llm, bt, slo = llm_preset("tiny"), args.block_tokens, SLO(args.slo_ttft_s, args.slo_tpot_s)
    offline = benchmark_workload(args.agents, args.context_tokens, args.turns, args.append_tokens, args.new_tokens, bt)

    def workload_at(aps: float):
        return from_trajectories(f"{offline.name}@{aps:g}aps", poisson_arrivals(list(offline.trajectories), aps,
                                                                                 args.seed), bt)

    print(f"{cluster.shorthand}, SNIC {args.snic_mb_s:g} MB/s, CNIC {args.cnic_mb_s:g} MB/s; {args.agents} agents x "
          f"{args.turns} turns (+{args.append_tokens}/{args.new_tokens} tokens on a {args.context_tokens}-token "
          f"context); SLO TTFT <= {slo.ttft_s:g} s, TPOT <= {slo.tpot_s * 1e3:g} ms ({slo.statistic})")
    report = {}
    with runtime_for(cluster, llm, offline, bt, seed=args.seed) as runtime:
        for name in [n.strip() for n in args.policies.split(",") if n.strip()]:
            def run_at(aps: float, name: str = name):
                trace = run_real(cluster, llm, workload_at(aps), _policy(name, cluster, llm, bt), runtime=runtime,
                                 online=True, warm_turns=1, seed=args.seed)
                s = online_summary(trace, slo)
                print(f"  {name:>10} at {aps:6.2f} agents/s: TTFT mean {s['ttft_mean_s']:.3f} s p99 "
                      f"{s['ttft_p99_s']:.3f} s, TPOT mean {s['tpot_mean_s'] * 1e3:.1f} ms, SLO attainment "
                      f"{s['slo_attainment']:.0%} over {s['steady_requests']} steady-state turns: "
                      f"{'met' if s['slo_met'] else 'missed'}", flush=True)
                return trace

            fixed = online_summary(run_at(args.aps), slo)
            capacity = find_capacity(run_at, slo, start_aps=args.aps, rel_tol=0.1, max_probes=args.max_probes)
            report[name] = {"fixed_aps": args.aps, "fixed": fixed, "capacity_aps": capacity.capacity_aps,
                            "probes": capacity.probes}
            print(f"{name}: capacity {capacity.capacity_aps:.2f} agents/s within the SLO", flush=True)
    names = list(report)
    if len(names) >= 2:
        base_name, best = names[0], names[-1]
        base_aps = report[base_name]["capacity_aps"]
        ratio = report[best]["capacity_aps"] / base_aps if base_aps else float("inf")
        print(f"{best} / {base_name} SLO-compliant rate: {ratio:.2f}x")
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
