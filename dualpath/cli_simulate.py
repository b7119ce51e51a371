"""`dualpath simulate`: the discrete-event simulator under one or more policies, offline or online.

Offline (no `--aps`) every agent starts at 0, as in the paper, unless the workload file carries its
own arrival times (a trace's timestamps, trajectories' `start_s`): those are always replayed, and the
JCT runs from the first arrival to the last finish, and the run reports the online figures too.

Online runs: `--aps X` (Poisson arrivals over warm-up plus `--window` seconds, the agent count
following from the rate unless `--agents` fixes it), a timestamped trace (replayed at its own times),
or `--find-capacity` (the highest rate within SLO, below the fluid limit it names). The warm-up and
drain rule is `dualpath.runtime.capacity`'s.
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
    parser.add_argument("--window", type=flags.seconds, default=600.0, metavar="S",
                        help="online: seconds of steady state the arrivals cover after the warm-up")
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
    if not args.window > 0:
        raise SpecError("--window", "window", args.window, "positive seconds")
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

    online = args.aps is not None or any("aps" in r for r in results)
    _print(results, online, args.find_capacity)
    if args.json:
        payload = {"cluster": cluster.name or cluster.shorthand, "model": llm.name, "workload": args.workload,
                   "seed": args.seed, "slo_ttft_s": slo.ttft_s, "slo_tpot_s": slo.tpot_s, "results": results}
        horizons = {r["arrival_horizon_s"] for r in results if "arrival_horizon_s" in r}
        if horizons:
            payload["arrival_horizon_s"] = horizons.pop()  # one per run: it follows from the workload
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
    from dualpath.models.sampling import online_workloads
    from dualpath.request import check_context
    from dualpath.runtime.capacity import online_horizon_s
    from dualpath.runtime.sim.online import search_capacity
    from dualpath.runtime.sim.results import offline_row, online_row
    from dualpath.runtime.sim.simulator import simulate
    from dualpath.solver.policies import make_policy

    rated = args.aps is not None or args.find_capacity
    base = resolve_workload(args.workload, agents=None if rated else args.agents, seed=args.seed)
    if rated and not base.trajectories:
        raise SpecError(f"workload {base.name}", "--aps/--find-capacity", args.aps,
                        "agent trajectories (a trace of requests replays at its own arrival times)")
    horizon_s = online_horizon_s(base.trajectories, slo, args.window) if rated else 0.0
    steady_at = online_workloads(base, horizon_s, args.seed) if rated else None

    def workload_at(aps: float):
        if args.agents is not None or steady_at is None:  # a fixed count: the user's, steady state or not
            return resolve_workload(args.workload, agents=args.agents, seed=args.seed, aps=aps)
        return steady_at(aps)

    if args.find_capacity:
        row = search_capacity(cluster, llm, workload_at, partial(make_policy, policy_name, cluster, llm), slo,
                              seed=args.seed)
        row["policy"] = policy_name
        row["arrival_horizon_s"] = horizon_s
        return row, None
    workload = workload_at(args.aps) if args.aps is not None else base
    check_context(workload, llm.max_context_tokens, llm.name)
    policy = plan if plan is not None else make_policy(policy_name, cluster, llm)
    # A workload file's own arrival times are replayed (`Workload.timed`) and reported as an online run;
    # only an untimed workload runs the paper's offline batch, every agent at 0.
    online = args.aps is not None or workload.timed
    trace = simulate(cluster, llm, workload, policy, online=online, progress=progress,
                     chrome_window=window, seed=args.seed)
    row = online_row(trace, args.aps, slo) if online else offline_row(trace, slo)
    row["policy"] = policy_name
    if args.aps is not None:
        row["arrival_horizon_s"] = horizon_s
    return row, trace


def _print_capacity(results: list[dict]) -> None:
    base = results[0]["capacity_aps"]
    rows = [(r["policy"], f"{r['capacity_aps']:.3f}", f"{r['capacity_aps'] / base:.2f}x" if base else "-",
             f"{r['fluid_limit_aps']:.3f}" if r.get("fluid_limit_aps") else "none", r.get("bound_by", "-"),
             f"{r['capacity_over_limit']:.0%}" if "capacity_over_limit" in r else "-", len(r["probes"]),
             f"{r['search_wall_s']:.0f}") for r in results]
    print(format_table(("policy", "capacity (agents/s)", "vs first", "fluid limit (agents/s)", "bound by",
                        "of limit", "probes", "wall (s)"), rows))


def _print(results: list[dict], online: bool, capacity: bool) -> None:
    if capacity:
        _print_capacity(results)
        return
    base = results[0]["jct_s"]
    headers = ["policy", "agents", "JCT (s)", "vs first", "tokens/s", "SNIC max/avg"]
    rows = [[r["policy"], r["agents"], r["jct_s"], f"{base / r['jct_s']:.2f}x" if r["jct_s"] else "-",
             r["tokens_per_s"], r.get("snic_balance_max_over_avg") or math.nan] for r in results]
    print(format_table(headers, rows))
    if not online:
        return
    # Online figures of the steady state: percentiles of each latency and the share within both SLOs.
    headers = ["policy", "aps", "steady window (s)", "requests"]
    units = (("TTFT", "s"), ("TTST", "s"), ("TPOT", "ms"))
    headers += [f"{m} {q} ({u})" for m, u in units for q in ("p50", "p90", "p99")]
    headers += ["SLO attain", "SLO met"]
    rows = []
    for r in results:
        steady = f"{r['steady_start_s']:.0f}-{r['steady_end_s']:.0f}" + ("" if r["steady_state_found"] else " (none)")
        row = [r["policy"], "trace" if r["aps"] is None else r["aps"], steady, r["steady_requests"]]
        for metric, scale in (("ttft", 1), ("ttst", 1), ("tpot", 1000)):
            row += [f"{r[f'{metric}_{q}_s'] * scale:.2f}" if r[f"{metric}_{q}_s"] is not None else "-"
                    for q in ("p50", "p90", "p99")]
        rows.append([*row, f"{r['slo_attainment']:.1%}", "yes" if r["slo_met"] else "no"])
    print(format_table(headers, rows))
