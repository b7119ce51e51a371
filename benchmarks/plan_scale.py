"""Scale: a plan for 48P96D (1,152 GPUs) with 20,000 requests within 60 s, its gap to the fluid bound,
its executed JCT, and the time limit honoured at a tiny limit.

    python benchmarks/plan_scale.py [--requests 20000] [--time-limit 40] [--short-limit 0.1] [--split-reads]

The planner decomposes (nodes first, engines inside, then bottleneck descent); the bound is the
fluid / integral-read bound, certified for the fluid bottleneck time (the heaviest resource load, not
a completion time). Costs are the calibrated ones the simulator executes. Wall time includes building
the problem and the paper's greedy; the time limit bounds all of it (within 10% + 1 s), which the
`--short-limit` run checks: cut short, the plan falls back to the greedy's (status "fallback").
The executed JCT replays the plan in the simulator (outside the limit; `--no-execute` skips it).
Exit code 1 when a plan misses its time, the 60 s, or fails `check_plan`.
"""

from __future__ import annotations

import argparse
import sys
import time

from dualpath.calibration import calibrated_llm
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.models.sampling import sample_batch
from dualpath.solver.planner import plan_with_problem
from dualpath.solver.validate import check_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--time-limit", type=float, default=40.0, help="optimizer budget (the planner's limit)")
    parser.add_argument("--short-limit", type=float, default=0.1, help="a limit far below the greedy's time")
    parser.add_argument("--split-reads", action="store_true")
    parser.add_argument("--no-execute", action="store_true", help="skip the executed-JCT replay")
    parser.add_argument("--cluster", default="48P96D")
    parser.add_argument("--model", default="deepseek-v3.2")
    args = parser.parse_args(argv)
    cluster, llm = resolve_cluster(args.cluster), calibrated_llm(llm_preset(args.model))
    t0 = time.perf_counter()
    batch = sample_batch(resolve_workload("agentic-64k", seed=0), args.requests, seed=0)
    requests = list(batch.requests)
    print(f"{cluster.shorthand}: {cluster.num_pe} PE + {cluster.num_de} DE engines, {len(requests):,} requests "
          f"(sampled in {time.perf_counter() - t0:.1f} s), split reads {args.split_reads}")
    ok = True
    plans = []
    for limit in (args.time_limit, args.short_limit):
        t1 = time.perf_counter()
        plan, problem, _ = plan_with_problem(cluster, llm, requests, "ortools", args.split_reads, limit)
        wall = time.perf_counter() - t1
        violations = check_plan(problem, plan)
        plans.append((limit, plan))
        print(f"\n--time-limit {limit:g}: status {plan.status}, method {plan.meta['method']}, "
              f"fluid bottleneck {plan.fluid_bottleneck_s:.3f} s, fluid lower bound {plan.lower_bound_s:.3f} s "
              f"({plan.meta['bound_kind']}, {plan.meta['bound_family']}), gap to the fluid bound {plan.gap:.4%}")
        assert plan.greedy_fluid_bottleneck_s is not None  # make_plan always sets it
        greedy = "greedy cut by the limit" if "cut" in plan.meta["method"] else "greedy (paper rules)"
        print(f"{greedy}: fluid bottleneck {plan.greedy_fluid_bottleneck_s:.3f} s, gap to the fluid bound "
              f"{plan.greedy_fluid_bottleneck_s / plan.lower_bound_s - 1:.3%}")
        within = wall <= 1.1 * limit + 1.0 and (limit != args.time_limit or wall <= 60.0)
        print(f"plan wall time {wall:.2f} s (limit {limit:g} s: allowed {1.1 * limit + 1.0:.2f} s: "
              f"{'ok' if within else 'OVER'}); check_plan: {len(violations)} violations; "
              f"binding {plan.meta['binding_resource']}; notes {plan.meta['notes']}")
        ok = ok and within and not violations and plan.gap >= 0
    if not args.no_execute:
        from dualpath.runtime.sim.simulator import simulate

        print()
        for limit, plan in plans:
            t2 = time.perf_counter()
            jct = simulate(cluster, llm, batch, plan, progress=False).metrics().jct_s
            print(f"executed JCT of the --time-limit {limit:g} plan: {jct:.1f} s (fluid bottleneck "
                  f"{plan.fluid_bottleneck_s:.1f} s; replay {time.perf_counter() - t2:.1f} s)")
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
