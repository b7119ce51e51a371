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

`--sweep` runs the same cluster online instead: agents arrive as a Poisson process at three rates, from
light load to the saturation of PE-side reading (fractions `--loads` of the fluid limit of the PE's SNIC:
the agents' hit bytes per second it can read), and each row gives the real (median of `--repeats` runs)
and simulated JCT, TTFT p50/p99 and TPOT; the target is JCT and TTFT p50 within 10% at every rate.

    .venv/bin/python benchmarks/sim_vs_real.py --sweep [--agents 16] [--loads 0.3,0.6,1.0] [--json F]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import statistics
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
from dualpath.trace import Metrics

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


def poisson_workload(workload: Workload, rate_per_s: float, seed: int, block_tokens: int) -> Workload:
    """`workload` with agents arriving as a Poisson process of `rate_per_s` (the first at 0 s)."""
    rng = random.Random(seed)
    start_s, trajectories = 0.0, []
    for index, traj in enumerate(workload.trajectories):
        if index:
            start_s += rng.expovariate(rate_per_s)
        trajectories.append(dataclasses.replace(traj, start_s=start_s))
    requests = tuple(r for t in trajectories for r in requests_of(t, block_tokens))
    return Workload(f"{workload.name}@{rate_per_s:.3g}aps", requests, tuple(trajectories))


def sweep(args, cluster, llm, workload: Workload, names: list[str]) -> list[dict]:
    """Online runs at `--loads` of PE-side reading's fluid limit; real (median of repeats) and simulated."""
    bt = args.block_tokens
    timed_bytes = sum(r.hit_tokens for r in timed_workload(workload, 1, bt).requests) * llm.kv_bytes_per_token
    limit_aps = cluster.node.snic_bytes_per_s / (timed_bytes / len(workload.trajectories))
    loads = [float(x) for x in args.loads.split(",")]
    print(f"PE-side reading saturates at {limit_aps:.3g} agents/s ({timed_bytes / MB / len(workload.trajectories):.1f} "
          f"MB of hits per agent); loads {loads}", flush=True)
    rows: list[dict] = []
    with runtime_for(cluster, llm, workload, bt, seed=args.seed) as runtime:
        profile = profile_engines(runtime, llm, interval_s=args.interval_s)
        fitted = dataclasses.replace(llm, cost=profile.cost)
        print(profile.describe(llm), flush=True)
        for load in loads:
            online = poisson_workload(workload, load * limit_aps, args.seed, bt)
            timed = timed_workload(online, 1, bt)
            for name in names:
                runs = [run_real(cluster, fitted, online, _policy(name, cluster, fitted, bt), runtime=runtime,
                                 seed=args.seed, warm_turns=1, interval_s=args.interval_s, online=True)
                        for _ in range(max(1, args.repeats))]
                runs.sort(key=lambda t: t.metrics().jct_s)
                real_trace = runs[len(runs) // 2]
                sim_trace = simulate(cluster, fitted, timed, _policy(name, cluster, fitted, bt), online=True,
                                     calibration=profile.calibration(), progress=False, seed=args.seed,
                                     chrome_window=(0.0, 1e9) if args.save else None)
                if args.save:
                    Path(args.save).mkdir(parents=True, exist_ok=True)
                    real_trace.save(str(Path(args.save) / f"real_{name}_{load:g}.json"))
                    sim_trace.save(str(Path(args.save) / f"sim_{name}_{load:g}.json"))
                # real = the median of the runs, figure by figure
                real = Metrics(*(statistics.median(getattr(t.metrics(), f.name) for t in runs)
                                 for f in dataclasses.fields(Metrics)))
                sim = sim_trace.metrics()
                row = {"policy": name, "load": load, "rate": load * limit_aps,
                       "real_jct_s": real.jct_s, "sim_jct_s": sim.jct_s,
                       "real_jct_runs_s": [t.metrics().jct_s for t in runs],
                       "real_ttft_p50_s": real.ttft_p50_s, "sim_ttft_p50_s": sim.ttft_p50_s,
                       "real_ttft_p99_s": real.ttft_p99_s, "sim_ttft_p99_s": sim.ttft_p99_s,
                       "real_tpot_s": real.tpot_mean_s, "sim_tpot_s": sim.tpot_mean_s}
                rows.append(row)
                print(f"{load:4.2f} x limit ({row['rate']:.3g} agents/s) {name:>10}: JCT real {real.jct_s:6.2f} s, sim "
                      f"{sim.jct_s:6.2f} s ({sim.jct_s / real.jct_s - 1:+.1%}); TTFT p50 real {real.ttft_p50_s:.3f} s, "
                      f"sim {sim.ttft_p50_s:.3f} s ({sim.ttft_p50_s / real.ttft_p50_s - 1:+.1%}); TTFT p99 real "
                      f"{real.ttft_p99_s:.3f} s, sim {sim.ttft_p99_s:.3f} s; TPOT real "
                      f"{real.tpot_mean_s * 1e3:.1f} ms, sim {sim.tpot_mean_s * 1e3:.1f} ms", flush=True)
    return rows


def sweep_verdict(rows: list[dict]) -> bool:
    """Print the worst JCT and TTFT p50 errors and the order check per rate; True when all hold."""
    worst_jct = max(abs(r["sim_jct_s"] / r["real_jct_s"] - 1) for r in rows)
    worst_ttft = max(abs(r["sim_ttft_p50_s"] / r["real_ttft_p50_s"] - 1) for r in rows)
    flipped, ties = [], []
    for load in sorted({r["load"] for r in rows}):
        load_ties, load_flips = _flips([r for r in rows if r["load"] == load])
        flipped += [f"{f}@{load:g}" for f in load_flips]
        ties += [f"{t}@{load:g}" for t in load_ties]
    print(f"worst error JCT {worst_jct:.1%}, TTFT p50 {worst_ttft:.1%} (target <= 10%); order "
          f"{'the same wherever real runs separate' if not flipped else 'DIFFERENT: ' + ', '.join(flipped)}"
          f"{'; ties: ' + ', '.join(ties) if ties else ''}")
    return worst_jct <= 0.10 and worst_ttft <= 0.10 and not flipped


def _flips(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(ties, flips): pairs the measurement cannot order (their real runs overlap) or the simulator does not
    (equal simulated JCTs: it predicts a tie, not the other order), and separated pairs it orders the other way."""
    ties, flipped = [], []
    for a, b in itertools.combinations(rows, 2):
        lo, hi = sorted((a, b), key=lambda r: r["real_jct_s"])
        if min(hi["real_jct_runs_s"]) <= max(lo["real_jct_runs_s"]):
            ties.append(f"{lo['policy']}~{hi['policy']} (runs overlap)")
        elif lo["sim_jct_s"] == hi["sim_jct_s"]:
            ties.append(f"{lo['policy']}~{hi['policy']} (simulated tie)")
        elif lo["sim_jct_s"] > hi["sim_jct_s"]:
            flipped.append(f"{lo['policy']}<{hi['policy']}")
    return ties, flipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default=str(ROOT / "examples" / "clusters" / "local-1p1d.toml"))
    p.add_argument("--snic-mb-s", type=float, default=25.0, help="emulated SNIC per node (runtime_dualpath's 25)")
    p.add_argument("--cnic-mb-s", type=float, default=200.0, help="emulated CNIC per GPU (8:1, as runtime_dualpath)")
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
    p.add_argument("--sweep", action="store_true", help="online: Poisson arrivals at --loads (see the docstring)")
    p.add_argument("--loads", default="0.3,0.6,1.0", help="--sweep: arrival rates as fractions of the PE SNIC limit")
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
    if args.sweep:
        rows = sweep(args, cluster, llm, workload, names)
        ok = sweep_verdict(rows)
        if args.json:
            write_json_atomic(args.json, versioned("benchmark.sim_vs_real.sweep", {"rows": rows}))
        return 0 if ok else 1
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
    ties, flipped = _flips(rows)
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
