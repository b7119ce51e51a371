"""How tight the rollout lower bound is on real configurations: bound vs executed JCT.

    python benchmarks/rollout_bound.py [--agents 64,256] [--policies dualpath,optimized]

`rollout_lower_bound` (solver/rollout_bound.py) bounds the JCT of any execution of a whole rollout
by the simulator; here it is set beside the executed JCT of the online policies on the same rollout
(agentic-64k, seed 0, offline), with the term that binds. Exit code 1 if any policy beats the bound
(the bound would be wrong).
"""

from __future__ import annotations

import argparse
import sys
import time

from dualpath.calibration import PAPER_CALIBRATION, calibrated_llm
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy
from dualpath.solver.rollout_bound import rollout_lower_bound

CONFIGS = (("2P4D", "deepseek-v3.2"), ("1P1D", "ds-27b"), ("2P1D", "ds-27b"), ("1P2D", "ds-27b"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="64,256")
    parser.add_argument("--policies", default="dualpath,optimized")
    args = parser.parse_args(argv)
    policies = args.policies.split(",")
    print("| config | agents | requests | bound (s) | binding | longest chain (s) | "
          + " | ".join(f"{p} JCT (s)" for p in policies) + " | bound / best | bound time (s) |")
    print("|---|---:|---:|---:|---|---:|" + "---:|" * len(policies) + "---:|---:|")
    failed = []
    for agents in (int(a) for a in args.agents.split(",")):
        for shorthand, model in CONFIGS:
            cluster, llm = resolve_cluster(shorthand), calibrated_llm(llm_preset(model))
            workload = resolve_workload("agentic-64k", agents=agents, seed=0)
            started = time.perf_counter()
            bound = rollout_lower_bound(cluster, llm, workload.requests, PAPER_CALIBRATION)
            bound_wall = time.perf_counter() - started
            jcts = [simulate(cluster, llm, workload, make_policy(p, cluster, llm), progress=False).metrics().jct_s
                    for p in policies]
            best = min(jcts)
            if best < bound.value_s * (1 - 1e-9):
                failed.append(f"{shorthand} {model} {agents}")
            print(f"| {model} {shorthand} | {agents:,} | {len(workload.requests):,} | {bound.value_s:.1f} | "
                  f"{bound.binding} | {bound.terms_s['longest_chain']:.1f} | "
                  + " | ".join(f"{j:.1f}" for j in jcts) + f" | {bound.value_s / best:.1%} | {bound_wall:.2f} |",
                  flush=True)
    print("\nall executions at or above the bound" if not failed else f"\nBOUND BEATEN: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
