"""`dualpath plan`: optimised PE/DE/path assignments for a batch, or a P:D capacity sweep."""

from __future__ import annotations

import argparse

from dualpath.errors import SpecError
from dualpath.table import format_table, human_bytes


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", default="2P4D", help="xPyD shorthand or cluster .toml (default 2P4D)")
    parser.add_argument("--model", default="deepseek-v3.2", help="model preset or .toml")
    parser.add_argument("--workload", default="agentic-64k", help="generator name, .jsonl file or mooncake:FILE")
    parser.add_argument("--batch", type=int, default=1000,
                        help="requests released together: one turn per agent at a random turn (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the workload and the batch sample")
    parser.add_argument("--solver", default="ortools", help="ortools, pulp or greedy (default ortools)")
    parser.add_argument("--split-reads", action="store_true", help="allow one request's read on both sides")
    parser.add_argument("--time-limit", type=float, default=10.0, metavar="S", help="solver time limit, s")
    parser.add_argument("--json", metavar="FILE", help="write the plan (or the sweep) as JSON; - is stdout")
    parser.add_argument("--out", metavar="DIR", help="write the load chart and explanations here")
    parser.add_argument("--sweep", choices=["pd"], help="capacity planning: rank P:D splits of a GPU budget")
    parser.add_argument("--gpus", type=int, help="GPU budget for --sweep (default: the cluster's GPUs)")
    parser.add_argument("--simulate-agents", type=int, default=0,
                        help="with --sweep: also simulate each split with this many agents (0: bound only)")


def run(name: str, args: argparse.Namespace) -> int:
    from dualpath.jsonio import json_owns_stdout

    with json_owns_stdout(args.json):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.models.sampling import sample_batch

    if args.batch <= 0:
        raise SpecError("--batch", "batch", args.batch, "a positive integer")
    if not args.time_limit > 0:
        raise SpecError("--time-limit", "time_limit", args.time_limit, "positive seconds")
    cluster, llm = resolve_cluster(args.cluster), resolve_model(args.model)
    workload = resolve_workload(args.workload, seed=args.seed)
    batch = sample_batch(workload, args.batch, seed=args.seed)
    if args.sweep:
        return _sweep(args, cluster, llm, batch)
    from dualpath.solver.planner import plan_with_problem, write_plan_outputs

    plan, problem, _ = plan_with_problem(cluster, llm, list(batch.requests), solver=args.solver,
                                         split_reads=args.split_reads, time_limit_s=args.time_limit)
    plan.meta.update({"cluster": cluster.name or cluster.shorthand, "model": llm.name,
                      "workload": args.workload, "batch": args.batch, "seed": args.seed})
    paths = {"pe": 0, "de": 0, "split": 0, "none": 0}
    for a in plan.assignments:
        paths[a.path] += 1
    read = sum(a.read_bytes for a in plan.assignments)
    greedy = plan.greedy_makespan_s
    rows = [("solver / status", f"{plan.solver} / {plan.status}"),
            ("requests", len(plan.assignments)),
            ("makespan (s)", plan.makespan_s),
            ("lower bound (s)", plan.lower_bound_s),
            ("gap", f"{plan.gap:.3%}"),
            ("greedy makespan (s)", greedy if greedy is not None else "-"),
            ("greedy gap", f"{greedy / plan.lower_bound_s - 1:.3%}" if greedy and plan.lower_bound_s else "-"),
            ("solve time (s)", plan.solve_time_s),
            ("paths pe/de/split", f"{paths['pe']}/{paths['de']}/{paths['split']}"),
            ("hit bytes read", human_bytes(read))]
    print(format_table(("plan", "value"), rows))
    if args.json:
        plan.save(args.json)
        if args.json != "-":
            print(f"wrote {args.json}")
    if args.out:
        for path in write_plan_outputs(args.out, problem, plan):
            print(f"wrote {path}")
    return 0


def _sweep(args: argparse.Namespace, cluster, llm, batch) -> int:
    from dualpath.jsonio import write_json_atomic, write_text_atomic
    from dualpath.solver.sweep import Simulate, sweep_pd

    budget = args.gpus or (cluster.num_pe + cluster.num_de)
    simulate: Simulate | None = None
    if args.simulate_agents > 0:
        from dualpath.models.registry import resolve_workload
        from dualpath.runtime.sim.simulator import simulate as run_sim
        from dualpath.solver.policies import make_policy

        workload = resolve_workload(args.workload, agents=args.simulate_agents, seed=args.seed)

        def simulated_jct_s(c):
            return run_sim(c, llm, workload, make_policy("dualpath", c, llm), seed=args.seed).metrics().jct_s

        simulate = simulated_jct_s

    result = sweep_pd(llm, list(batch.requests), budget, node=cluster.node, simulate=simulate)
    print(result.to_markdown())
    if args.json:
        write_json_atomic(args.json, result.to_json())
    if args.out:
        write_text_atomic(f"{args.out}/sweep.md", result.to_markdown())
    return 0
