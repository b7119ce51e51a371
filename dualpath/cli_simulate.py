"""`dualpath simulate`: the discrete-event simulator under one or more policies, offline or online."""

from __future__ import annotations

import argparse
import math
import sys
from functools import partial

from dualpath.errors import SpecError
from dualpath.table import format_table


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", default="2P4D", help="xPyD shorthand or cluster .toml (default 2P4D)")
    parser.add_argument("--model", default="deepseek-v3.2", help="model preset or .toml")
    parser.add_argument("--workload", default="agentic-64k", help="generator name, .jsonl file or mooncake:FILE")
    parser.add_argument("--agents", type=int, default=None, help="agents (default 500 for generators)")
    parser.add_argument("--policy", default="basic,dualpath,oracle", help="comma-separated policy names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aps", type=float, help="online: Poisson agent arrivals per second")
    parser.add_argument("--find-capacity", action="store_true", help="online: search the highest APS within SLO")
    parser.add_argument("--ttft-slo", type=float, default=4.0, help="SLO on time to first token, s (default 4)")
    parser.add_argument("--tpot-slo", type=float, default=0.05, help="SLO on time per output token, s (default 0.05)")
    parser.add_argument("--plan", metavar="FILE", help="replay a plan.json instead of an online policy")
    parser.add_argument("--json", metavar="FILE", help="write results (and traces with --traces) as JSON")
    parser.add_argument("--traces", action="store_true", help="embed each policy's full Trace in --json")
    parser.add_argument("--out", metavar="DIR", help="write PNG plots and a Chrome trace here")
    parser.add_argument("--chrome-window", default="0:60", metavar="A:B", help="seconds of spans to export (0:60)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")


def _window(text: str) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError:
        raise SpecError("--chrome-window", "window", text, "A:B in seconds, e.g. 0:60") from None
    if not 0 <= start < end:
        raise SpecError("--chrome-window", "window", text, "0 <= A < B")
    return start, end


def run(name: str, args: argparse.Namespace) -> int:
    from dualpath.jsonio import write_json_atomic
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.runtime.capacity import SLO, capacity_runner, find_capacity
    from dualpath.runtime.sim.calibration import calibrated_llm
    from dualpath.runtime.sim.results import capacity_row, offline_row, online_row
    from dualpath.runtime.sim.simulator import simulate
    from dualpath.solver.policies import make_policy

    if args.agents is not None and args.agents <= 0:
        raise SpecError("--agents", "agents", args.agents, "a positive integer")
    if args.aps is not None and not args.aps > 0:
        raise SpecError("--aps", "aps", args.aps, "a positive rate (agents per second)")
    # Policies size their quotas from the cost model the simulator runs with: the calibrated one.
    cluster, llm = resolve_cluster(args.cluster), calibrated_llm(resolve_model(args.model))
    names = [p.strip() for p in args.policy.split(",") if p.strip()]
    for policy_name in names:
        make_policy(policy_name, cluster, llm)  # unknown names fail before any long run
    slo = SLO(ttft_s=args.ttft_slo, tpot_s=args.tpot_slo)
    window = _window(args.chrome_window) if args.out else None
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    online = args.aps is not None or args.find_capacity

    def workload_at(aps: float | None):
        return resolve_workload(args.workload, agents=args.agents, seed=args.seed, aps=aps)

    results, traces = [], []
    base = workload_at(args.aps) if not args.find_capacity else None
    plan = None
    if args.plan:
        from dualpath.plan import Plan

        plan = Plan.load(args.plan)
        names = [f"plan:{plan.solver}"]
    for policy_name in names:
        if args.find_capacity:
            run_at = capacity_runner(simulate, workload_at, partial(make_policy, policy_name, cluster, llm),
                                     cluster=cluster, llm=llm, seed=args.seed)
            found = find_capacity(run_at, slo)
            results.append(capacity_row(found, policy_name))
            continue
        assert base is not None  # built above whenever no capacity search runs
        policy = plan if plan is not None else make_policy(policy_name, cluster, llm)
        trace = simulate(cluster, llm, base, policy, online=online, progress=progress,
                         chrome_window=window, seed=args.seed)
        traces.append(trace)
        row = online_row(trace, args.aps, slo) if online else offline_row(trace)
        row["policy"] = policy_name
        results.append(row)

    _print(results, online, args.find_capacity)
    if args.json:
        payload = {"cluster": cluster.name or cluster.shorthand, "model": llm.name, "workload": args.workload,
                   "seed": args.seed, "results": results}
        if args.traces:
            payload["traces"] = [t.to_json() for t in traces]
        write_json_atomic(args.json, payload)
    if args.out and traces:
        from dualpath.runtime.plots import write_plots

        for path in write_plots(traces, args.out, chrome_window=window):
            print(f"wrote {path}")
    return 0


def _print(results: list[dict], online: bool, capacity: bool) -> None:
    if capacity:
        print(format_table(("policy", "capacity (agents/s)", "probes"),
                           [(r["policy"], r["capacity_aps"], len(r["probes"])) for r in results]))
        return
    base = results[0]["jct_s"]
    headers = ["policy", "agents", "JCT (s)", "vs first", "tokens/s", "SNIC max/avg"]
    rows = [[r["policy"], r["agents"], r["jct_s"], f"{base / r['jct_s']:.2f}x" if r["jct_s"] else "-",
             r["tokens_per_s"], r.get("snic_balance_max_over_avg") or math.nan] for r in results]
    if online:
        headers += ["TTFT p50 (s)", "TTFT p99 (s)", "TPOT mean (s)", "SLO met"]
        for row, r in zip(rows, results):
            row += [r["ttft_p50_s"], r["ttft_p99_s"], r["tpot_mean_s"], "yes" if r["slo_met"] else "no"]
    print(format_table(headers, rows))
