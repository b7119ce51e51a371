"""Capacity planning: rank P:D node splits of a GPU budget for a workload, and price upgrades.

For every split (P prefill + D decode nodes using the budget) the batch's certified lower bound on
the plan's fluid bottleneck time is computed (fluid + LP, no solver needed for symmetric clusters), and, when the
caller passes `simulate` (the composition root wires the simulator in; `solver` never imports
`runtime`), the simulated JCT. Splits are ranked by simulated JCT when known, else by the bound. For
the best split, what a faster SNIC or a larger DRAM buffer would buy is the same two numbers again
with the upgraded node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from dualpath.cluster import ClusterSpec, NodeSpec, bottleneck_free_pd_range
from dualpath.errors import DualpathError, SpecError
from dualpath.llm import LLMSpec
from dualpath.request import Request
from dualpath.solver.bound import lower_bound
from dualpath.solver.problem import build_problem

ClusterFactory = Callable[[int, int, NodeSpec], ClusterSpec]
Simulate = Callable[[ClusterSpec], float]  # cluster -> simulated JCT in seconds
SWEEP_SCHEMA_VERSION = 1  # of `dualpath plan --sweep pd --json`


@dataclass(frozen=True)
class SplitRow:
    prefill_nodes: int
    decode_nodes: int
    bound_s: float | None  # None: infeasible (the reason in `note`)
    binding: str
    requests_per_s: float
    simulated_jct_s: float | None
    in_paper_range: bool  # inside the bottleneck-free P/D range of design.md section 3
    note: str = ""

    @property
    def shorthand(self) -> str:
        return f"{self.prefill_nodes}P{self.decode_nodes}D"


@dataclass(frozen=True)
class Upgrade:
    what: str  # "SNIC x2", "DRAM buffer x2"
    bound_s: float | None
    bound_gain: float  # relative reduction of the bound
    simulated_jct_s: float | None
    simulated_gain: float | None


@dataclass
class SweepResult:
    gpu_budget: int
    rows: list[SplitRow]
    upgrades: list[Upgrade] = field(default_factory=list)

    @property
    def best(self) -> SplitRow | None:
        return self.rows[0] if self.rows and self.rows[0].bound_s is not None else None

    def to_json(self) -> dict:
        return {"kind": "pd_sweep", "schema_version": SWEEP_SCHEMA_VERSION, "gpu_budget": self.gpu_budget,
                "rows": [dict(asdict(r), shorthand=r.shorthand) for r in self.rows],
                "upgrades": [asdict(u) for u in self.upgrades]}

    def to_markdown(self) -> str:
        lines = [f"# P:D sweep for {self.gpu_budget} GPUs", "",
                 "| rank | split | bound (s) | binding | req/s (bound) | simulated JCT (s) | paper range | note |",
                 "|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(self.rows, 1):
            bound = f"{r.bound_s:.3f}" if r.bound_s is not None else "-"
            sim = f"{r.simulated_jct_s:.1f}" if r.simulated_jct_s is not None else "-"
            lines.append(f"| {i} | {r.shorthand} | {bound} | {r.binding} | {r.requests_per_s:.1f} | {sim} | "
                         f"{'yes' if r.in_paper_range else 'no'} | {r.note} |")
        if self.upgrades and self.best:
            lines += ["", f"## Upgrades of {self.best.shorthand}", "",
                      "| upgrade | bound (s) | bound gain | simulated JCT (s) | simulated gain |",
                      "|---|---|---|---|---|"]
            for u in self.upgrades:
                bound = f"{u.bound_s:.3f}" if u.bound_s is not None else "-"
                sim = f"{u.simulated_jct_s:.1f}" if u.simulated_jct_s is not None else "-"
                gain = f"{u.simulated_gain:.1%}" if u.simulated_gain is not None else "-"
                lines.append(f"| {u.what} | {bound} | {u.bound_gain:.1%} | {sim} | {gain} |")
        return "\n".join(lines) + "\n"


def default_cluster(p: int, d: int, node: NodeSpec) -> ClusterSpec:
    return ClusterSpec(p, d, node=node, name=f"{p}P{d}D")


def _bound(cluster: ClusterSpec, llm: LLMSpec, requests: Sequence[Request]) -> tuple[float, str]:
    problem = build_problem(cluster, llm, requests)
    best, _ = lower_bound(problem, split_reads=True, backend=None)
    return best.value_s, best.family


def sweep_pd(llm: LLMSpec, requests: Sequence[Request], gpu_budget: int, node: NodeSpec | None = None,
             cluster_factory: ClusterFactory = default_cluster, simulate: Simulate | None = None,
             snic_factors: Sequence[float] = (1.5, 2.0), buffer_factors: Sequence[float] = (2.0,)) -> SweepResult:
    """Every P:D split of `gpu_budget` GPUs (whole nodes, P, D >= 1), ranked; upgrades of the best."""
    node = node or NodeSpec()
    if not isinstance(gpu_budget, int) or isinstance(gpu_budget, bool) or gpu_budget < 2 * node.num_gpus:
        raise SpecError("sweep", "gpu_budget", gpu_budget, f"an integer >= {2 * node.num_gpus} (two nodes)")
    if not requests:
        raise SpecError("sweep", "requests", 0, "at least one request")
    nodes = gpu_budget // node.num_gpus
    pd_range = bottleneck_free_pd_range(node)
    rows = []
    for p in range(1, nodes):
        d = nodes - p
        try:
            cluster = cluster_factory(p, d, node)
            bound_s, binding = _bound(cluster, llm, requests)
        except DualpathError as err:
            rows.append(SplitRow(p, d, None, "-", 0.0, None, pd_range.contains(p / d), str(err)))
            continue
        sim = simulate(cluster) if simulate else None
        rows.append(SplitRow(p, d, bound_s, binding, len(requests) / bound_s if bound_s > 0 else 0.0, sim,
                             pd_range.contains(p / d)))

    def rank(r: SplitRow) -> tuple[int, float, int]:
        if r.bound_s is None:
            return (2, 0.0, r.prefill_nodes)
        if r.simulated_jct_s is None:
            return (1, r.bound_s, r.prefill_nodes)
        return (0, r.simulated_jct_s, r.prefill_nodes)

    rows.sort(key=rank)
    result = SweepResult(gpu_budget, rows)
    best = result.best
    if best is None:
        return result
    upgrades = [(f"SNIC x{f:g}", replace(node, snic_gbps=node.snic_gbps * f)) for f in snic_factors]
    upgrades += [(f"DRAM buffer x{f:g}", replace(node, dram_buffer_bytes=int(node.dram_buffer_bytes * f)))
                 for f in buffer_factors]
    for what, upgraded in upgrades:
        cluster = cluster_factory(best.prefill_nodes, best.decode_nodes, upgraded)
        bound_s, _ = _bound(cluster, llm, requests)
        sim = simulate(cluster) if simulate else None
        sim_gain = (1 - sim / best.simulated_jct_s) if sim is not None and best.simulated_jct_s else None
        result.upgrades.append(Upgrade(what, bound_s, 1 - bound_s / best.bound_s if best.bound_s else 0.0,
                                       sim, sim_gain))
    return result
