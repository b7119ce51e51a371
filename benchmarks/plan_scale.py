"""Scale: a plan for 48P96D (1,152 GPUs) with 20,000 requests within 60 s, with its gap.

    python benchmarks/plan_scale.py [--requests 20000] [--time-limit 40] [--split-reads]

The planner decomposes (nodes first, engines inside, then bottleneck descent); the bound is the
fluid / integral-read bound, certified. Wall time includes building the problem and the paper's
greedy. Exit code 1 when the plan misses 60 s or fails `check_plan`.
"""

from __future__ import annotations

import argparse
import sys
import time

from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.models.sampling import sample_batch
from dualpath.solver.planner import plan_with_problem
from dualpath.solver.validate import check_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--time-limit", type=float, default=40.0, help="optimizer budget (the planner's limit)")
    parser.add_argument("--split-reads", action="store_true")
    parser.add_argument("--cluster", default="48P96D")
    parser.add_argument("--model", default="deepseek-v3.2")
    args = parser.parse_args(argv)
    cluster, llm = resolve_cluster(args.cluster), llm_preset(args.model)
    t0 = time.perf_counter()
    requests = list(sample_batch(resolve_workload("agentic-64k", seed=0), args.requests, seed=0).requests)
    t1 = time.perf_counter()
    plan, problem, _ = plan_with_problem(cluster, llm, requests, "ortools", args.split_reads, args.time_limit)
    t2 = time.perf_counter()
    violations = check_plan(problem, plan)
    wall = t2 - t1
    print(f"{cluster.shorthand}: {cluster.num_pe} PE + {cluster.num_de} DE engines, {len(requests):,} requests "
          f"(sampled in {t1 - t0:.1f} s), split reads {args.split_reads}")
    print(f"status {plan.status}, method {plan.meta['method']}, makespan {plan.makespan_s:.3f} s, "
          f"lower bound {plan.lower_bound_s:.3f} s ({plan.meta['bound_kind']}, {plan.meta['bound_family']}), "
          f"gap {plan.gap:.4%}")
    assert plan.lower_bound_s is not None and plan.greedy_makespan_s is not None  # make_plan always sets both
    print(f"greedy (paper rules) makespan {plan.greedy_makespan_s:.3f} s, gap "
          f"{plan.greedy_makespan_s / plan.lower_bound_s - 1:.3%}")
    print(f"plan wall time {wall:.1f} s (solve_time_s {plan.solve_time_s:.1f}); check_plan: "
          f"{len(violations)} violations; binding {plan.meta['binding_resource']}")
    ok = wall <= 60.0 and not violations and plan.gap >= 0
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
