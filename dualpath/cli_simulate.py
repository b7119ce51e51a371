"""`dualpath simulate`: the discrete-event simulator under one or more policies, offline or online.

Offline (no `--aps`) every agent starts at 0, as in the paper, unless the workload file carries its
own arrival times (a trace's timestamps, trajectories' `start_s`): those are always replayed, and the
JCT runs from the first arrival to the last finish.
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import partial
from typing import Any

from dualpath import flags
from dualpath.cli_help import add_slo_arguments
from dualpath.errors import SpecError
from dualpath.table import format_table

SCHEMA_VERSION = 1  # of the `simulate` JSON document


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", type=flags.name, default="2P4D", help="xPyD shorthand or cluster .toml")
    parser.add_argument("--model", type=flags.name, default="deepseek-v3.2", help="model preset or .toml")
    parser.add_argument("--workload", type=flags.name, default="agentic-64k",
                        help="generator name, .jsonl file or mooncake:FILE")
    parser.add_argument("--agents", type=flags.agents, default=None,
                        help="agents (default: 500 for generators, all for files)")
    parser.add_argument("--policy", type=flags.names, default="basic,dualpath,oracle",
                        help="comma-separated policy names")
    parser.add_argument("--seed", type=flags.seed, default=0, help="seed of the workload and the simulator")
    parser.add_argument("--aps", type=flags.aps, help="online: Poisson agent arrivals per second")
    parser.add_argument("--find-capacity", action="store_true", help="online: search the highest APS within SLO")
    add_slo_arguments(parser)
    parser.add_argument("--plan", metavar="FILE", type=flags.in_file,
                        help="replay a plan.json instead of an online policy")
    parser.add_argument("--json", metavar="FILE", type=flags.out_file,
                        help="write results (and traces with --traces) as JSON; - is stdout")
    parser.add_argument("--traces", action="store_true", help="embed each policy's full Trace in --json")
    parser.add_argument("--out", metavar="DIR", type=flags.out_dir, help="write PNG plots and a Chrome trace here")
    parser.add_argument("--chrome-window", default="0:60", metavar="A:B", help="seconds of spans to export")
    parser.add_argument("--jobs", type=flags.jobs, default=1, metavar="N",
                        help="simulate up to N policies at once, one process each")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal and --jobs is 1)")


def _window(text: str) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError:
        raise SpecError("--chrome-window", "window", text, "A:B in seconds, e.g. 0:60") from None
    if not 0 <= start < end:
        raise SpecError("--chrome-window", "window", text, "0 <= A < B")
    return start, end


def run(name: str, args: argparse.Namespace) -> int:
    from dualpath.jsonio import json_owns_stdout

    with json_owns_stdout(args.json):
        from dualpath.cli_rollout import is_rollout_plan, replay_command

        if args.plan and is_rollout_plan(args.plan):
            return replay_command(args)  # a rollout plan records its own rollout: no other flag applies
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from dualpath.calibration import calibrated_llm
    from dualpath.jsonio import versioned, write_json_atomic
    from dualpath.models.registry import resolve_cluster, resolve_model
    from dualpath.runtime.capacity import SLO
    from dualpath.solver.policies import make_policy

    if args.agents is not None and args.agents <= 0:
        raise SpecError("--agents", "agents", args.agents, "a positive integer")
    if args.aps is not None and not args.aps > 0:
        raise SpecError("--aps", "aps", args.aps, "a positive rate (agents per second)")
    if args.jobs < 1:
        raise SpecError("--jobs", "jobs", args.jobs, "a positive integer")
    # Policies size their quotas from the cost model the simulator runs with: the calibrated one.
    cluster, llm = resolve_cluster(args.cluster), calibrated_llm(resolve_model(args.model))
    names = [p.strip() for p in args.policy.split(",") if p.strip()]
    for policy_name in names:
        make_policy(policy_name, cluster, llm)  # unknown names fail before any long run
    slo = SLO(ttft_s=args.slo_ttft_s, tpot_s=args.slo_tpot_s)
    window = _window(args.chrome_window) if args.out else None
    jobs = min(args.jobs, len(names))
    progress = sys.stderr.isatty() and jobs == 1 if args.progress is None else args.progress
    plan = None
    if args.plan:
        from dualpath.plan import Plan

        plan = Plan.load(args.plan)
        names, jobs = [f"plan:{plan.solver}"], 1
    job = partial(_simulate_one, cluster=cluster, llm=llm, args=args, slo=slo, plan=plan, window=window,
                  progress=progress)
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:  # one policy per process: the simulator is CPU-bound
            done = list(pool.map(job, names))
    else:
        done = [job(n) for n in names]
    results = [row for row, _ in done]
    traces = [trace for _, trace in done if trace is not None]

    online = args.aps is not None or args.find_capacity
    _print(results, online, args.find_capacity)
    if args.json:
        payload = {"cluster": cluster.name or cluster.shorthand, "model": llm.name, "workload": args.workload,
                   "seed": args.seed, "slo_ttft_s": slo.ttft_s, "slo_tpot_s": slo.tpot_s, "results": results}
        if args.traces:
            payload["traces"] = [t.to_json() for t in traces]
        write_json_atomic(args.json, versioned("simulate", payload, SCHEMA_VERSION))
    if args.out and traces:
        from dualpath.runtime.plots import write_plots

        for path in write_plots(traces, args.out, chrome_window=window):
            print(f"wrote {path}")
    return 0


def _simulate_one(policy_name: str, *, cluster, llm, args: argparse.Namespace, slo, plan, window,
                  progress: bool) -> tuple[dict[str, Any], Any]:
    """One policy's result row and Trace (no Trace for a capacity search); module level so a pool can run it."""
    from dualpath.models.registry import resolve_workload
    from dualpath.request import check_context
    from dualpath.runtime.capacity import capacity_runner, find_capacity
    from dualpath.runtime.sim.results import capacity_row, offline_row, online_row
    from dualpath.runtime.sim.simulator import simulate
    from dualpath.solver.policies import make_policy

    def workload_at(aps: float | None):
        return resolve_workload(args.workload, agents=args.agents, seed=args.seed, aps=aps)

    if args.find_capacity:
        run_at = capacity_runner(simulate, workload_at, partial(make_policy, policy_name, cluster, llm),
                                 cluster=cluster, llm=llm, seed=args.seed)
        return capacity_row(find_capacity(run_at, slo), policy_name), None
    online = args.aps is not None
    workload = workload_at(args.aps)
    check_context(workload, llm.max_context_tokens, llm.name)
    policy = plan if plan is not None else make_policy(policy_name, cluster, llm)
    # A workload file's own arrival times are replayed (`Workload.timed`); only an untimed workload
    # runs the paper's offline batch, every agent at 0.
    trace = simulate(cluster, llm, workload, policy, online=online or workload.timed, progress=progress,
                     chrome_window=window, seed=args.seed)
    row = online_row(trace, args.aps, slo) if online else offline_row(trace, slo)
    row["policy"] = policy_name
    return row, trace


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
