"""`dualpath plan`: optimised PE/DE/path assignments for a batch, or a P:D capacity sweep."""

from __future__ import annotations

import argparse
import time

from dualpath import flags
from dualpath.cli_rollout import add_plan_arguments as add_rollout_arguments
from dualpath.errors import SpecError
from dualpath.table import format_table, human_bytes


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", type=flags.name, default="2P4D",
                        help="xPyD shorthand or cluster .toml (default 2P4D)")
    parser.add_argument("--model", type=flags.name, default="deepseek-v3.2", help="model preset or .toml")
    parser.add_argument("--workload", type=flags.name, default="agentic-64k",
                        help="generator name, .jsonl file or mooncake:FILE")
    parser.add_argument("--batch", type=flags.batch, default=1000,
                        help="requests released together: one turn per agent at a random turn (default 1000)")
    parser.add_argument("--seed", type=flags.seed, default=0, help="seed of the workload and the batch sample")
    parser.add_argument("--solver", type=flags.name, default="ortools",
                        help="ortools, pulp or greedy (default ortools)")
    parser.add_argument("--split-reads", action="store_true", help="allow one request's read on both sides")
    parser.add_argument("--time-limit", type=flags.seconds, default=10.0, metavar="S",
                        help="limit on planning, model build included, s (default 10); generating and sampling the "
                             "workload count against it (they cannot be cut: ~1.5 s at 20,000 requests); the "
                             "executed-JCT replay runs after it, outside the limit")
    parser.add_argument("--no-execute", action="store_true",
                        help="skip replaying the plan in the simulator for its executed JCT (the replay is a "
                             "simulation of the batch: seconds at 1,000 requests, a minute or more at 20,000)")
    parser.add_argument("--json", metavar="FILE", type=flags.out_file,
                        help="write the plan (or the sweep) as JSON; - is stdout")
    parser.add_argument("--out", metavar="DIR", type=flags.out_dir, help="write the load chart and explanations here")
    parser.add_argument("--sweep", choices=["pd"], help="capacity planning: rank P:D splits of a GPU budget")
    parser.add_argument("--gpus", type=flags.sweep_gpus, help="GPU budget for --sweep (default: the cluster's GPUs)")
    parser.add_argument("--simulate-agents", type=flags.agents_or_none, default=0,
                        help="with --sweep: also simulate each split with this many agents (0: bound only)")
    add_rollout_arguments(parser)  # --rollout, --agents, --clairvoyant, --samples (cli_rollout)


def run(name: str, args: argparse.Namespace) -> int:
    from dualpath.jsonio import json_owns_stdout

    with json_owns_stdout(args.json):
        if args.rollout:
            from dualpath.cli_rollout import plan_command

            return plan_command(args)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    started_s = time.perf_counter()
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.models.sampling import sample_batch
    from dualpath.request import check_context

    if args.batch <= 0:
        raise SpecError("--batch", "batch", args.batch, "a positive integer")
    if not args.time_limit > 0:
        raise SpecError("--time-limit", "time_limit", args.time_limit, "positive seconds")
    from dualpath.calibration import calibrated_llm

    # One cost model: plan with the calibrated step times the simulator executes.
    cluster, llm = resolve_cluster(args.cluster), calibrated_llm(resolve_model(args.model))
    workload = resolve_workload(args.workload, seed=args.seed)
    batch = sample_batch(workload, args.batch, seed=args.seed)
    check_context(batch, llm.max_context_tokens, llm.name)
    if args.sweep:
        return _sweep(args, cluster, llm, batch)
    from dualpath.solver.planner import plan_with_problem, write_plan_outputs

    # The limit covers the whole call: what generating and sampling the workload took comes off it.
    left_s = max(0.0, args.time_limit - (time.perf_counter() - started_s))
    plan, problem, _ = plan_with_problem(cluster, llm, list(batch.requests), solver=args.solver,
                                         split_reads=args.split_reads, time_limit_s=left_s)
    plan.meta.update({"cluster": cluster.name or cluster.shorthand, "model": llm.name,
                      "workload": args.workload, "batch": args.batch, "seed": args.seed})
    if not args.no_execute:
        from dualpath.runtime.sim.simulator import simulate

        # What the plan's fluid bottleneck leaves out (decode, read -> prefill -> transfer order,
        # batching) is what the replay measures.
        plan.executed_jct_s = simulate(cluster, llm, batch, plan, seed=args.seed, progress=False).metrics().jct_s
    paths = {"pe": 0, "de": 0, "split": 0, "none": 0}
    for a in plan.assignments:
        paths[a.path] += 1
    read = sum(a.read_bytes for a in plan.assignments)
    greedy = plan.greedy_fluid_bottleneck_s
    # Under a short limit the greedy itself is cut (the rest on the least-loaded engines): say so.
    greedy_name = "greedy, cut by the time limit," if "cut" in plan.meta.get("method", "") else "greedy"
    rows = [("solver / status", f"{plan.solver} / {plan.status}"),
            ("requests", len(plan.assignments)),
            ("fluid bottleneck (s)", plan.fluid_bottleneck_s),
            ("executed JCT (s)", plan.executed_jct_s if plan.executed_jct_s is not None else "- (--no-execute)"),
            ("fluid lower bound (s)", plan.lower_bound_s),
            ("gap to the fluid bound", f"{plan.gap:.3%}"),
            (f"{greedy_name} fluid bottleneck (s)", greedy if greedy is not None else "-"),
            (f"{greedy_name} gap to the fluid bound",
             f"{greedy / plan.lower_bound_s - 1:.3%}" if greedy and plan.lower_bound_s else "-"),
            ("solve time (s)", plan.solve_time_s),
            ("paths pe/de/split", f"{paths['pe']}/{paths['de']}/{paths['split']}"),
            ("hit bytes read", human_bytes(read))]
    print(format_table(("plan", "value"), rows))
    for note in plan.meta.get("notes", []):
        if note.startswith("time limit"):
            print(f"note: {note}")
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
    if budget < 2 * cluster.node.num_gpus:  # one prefill and one decode node at least
        raise SpecError("--gpus", "gpus", budget, f"at least {2 * cluster.node.num_gpus} (two nodes of the cluster's)")
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
