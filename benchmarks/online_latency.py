"""Online decision latency: per tick (up to 64 new requests, 2P4D = 48 engines), including the
incremental LP's model updates. Acceptance: p99 <= 20 ms.

    python benchmarks/online_latency.py [--ticks 2000] [--cluster 2P4D] [--model deepseek-v3.2]

Each tick gets a fresh cluster report (engine tokens and free HBM, per-node read queues drawn at
random around a busy cluster) and the next 1-64 waiting requests of agentic-64k.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys

from dualpath.cluster import Role
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.policy import ClusterState, EngineState
from dualpath.solver.hbm import default_free_hbm_bytes
from dualpath.solver.online import OnlineOptions, OnlineScheduler


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--cluster", default="2P4D")
    parser.add_argument("--model", default="deepseek-v3.2")
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args(argv)
    cluster, llm = resolve_cluster(args.cluster), llm_preset(args.model)
    requests = list(resolve_workload("agentic-64k", agents=512, seed=0).requests)
    rng = random.Random(0)
    free = default_free_hbm_bytes(cluster, llm)
    engines = {e.name: e for role in (Role.PREFILL, Role.DECODE) for e in cluster.engines(role)}
    results = {}
    for split in (True, False):
        sched = OnlineScheduler(cluster, llm, options=OnlineOptions(window=args.window, split_reads=split))
        cursor, decided = 0, 0
        for tick in range(args.ticks):
            states = {name: EngineState(name, e.role, e.node, e.group, rng.randint(0, 40),
                                        rng.randint(0, 400_000), rng.randint(free // 2, free))
                      for name, e in engines.items()}
            queues = {n: rng.uniform(0, 60e9) for n in cluster.all_nodes()}
            state = ClusterState(tick * 0.005, states, {n: int(q // llm.kv_bytes_per_token) for n, q in queues.items()},
                                 queues)
            count = rng.randint(1, args.window)
            window = [dataclasses.replace(r, id=f"{r.id}#{tick}") for r in requests[cursor:cursor + count]]
            cursor = (cursor + count) % (len(requests) - args.window)
            sched.submit(window)
            sched.update(state)
            decided += len(sched.tick())
            for group in range(cluster.num_pe // cluster.pe_group_gpus):
                sched.fetch(group)
            sched.pending.clear()  # what a tick leaves is re-submitted by the serving stack
        lat = [t * 1e3 for t in sched.tick_latencies_s]
        results[split] = lat
        print(f"split reads {split}: {len(lat)} ticks, {decided:,} requests decided; latency ms: "
              f"p50 {percentile(lat, 50):.2f}, p90 {percentile(lat, 90):.2f}, p99 {percentile(lat, 99):.2f}, "
              f"max {max(lat):.2f}; over-budget ticks (greedy fallback) {sched.num_fallbacks}")
    ok = all(percentile(lat, 99) <= 20.0 for lat in results.values())
    print("p99 <= 20 ms: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
