"""The optimisation problem: index sets, coefficients and backlogs, and THE plan's fluid bottleneck time.

Built once from specs, requests and backlogs; backend-free (no solver, no numpy). Every backend, the
greedy and `check_plan` are judged by the same fluid bottleneck time (the heaviest single-resource load):

    T = max over resources of (backlog + assigned load) / capacity

over: each node's SNIC (PE-read bytes of requests on its PEs, DE-read bytes of requests on its DEs);
per PE engine, compute seconds, CNIC in (all hit KV enters PE HBM through the CNIC on both paths) and
CNIC out (new KV plus the PE-read hit KV forwarded to the DE); per DE engine, CNIC out (DE-read KV
sent to the PE plus the prompt's H2D copy at decode start) and CNIC in (the prompt KV the PE sends:
prompt minus the DE-read part). CNIC capacities are the KV lane's share. DE HBM (context KV) and the
DRAM buffers (DE buffer holds the prompt, PE buffer the PE-read part) are hard constraints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dualpath.cluster import ClusterSpec, Role
from dualpath.errors import InfeasibleError, SpecError
from dualpath.llm import LLMSpec
from dualpath.policy import ClusterState
from dualpath.request import Request
from dualpath.solver.hbm import default_free_hbm_bytes, hbm_waves

# Time resources, in the order reports list them; "snic" is per node, the others per engine.
FAMILIES = ("snic", "pe_compute", "pe_cnic_in", "pe_cnic_out", "de_cnic_in", "de_cnic_out")
FAMILY_TITLES = {
    "snic": "storage NIC", "pe_compute": "PE compute", "pe_cnic_in": "PE CNIC in",
    "pe_cnic_out": "PE CNIC out", "de_cnic_in": "DE CNIC in", "de_cnic_out": "DE CNIC out",
}
TIME_SCALE = 10**13  # integer coefficients in 0.1 ps: one token's bytes on a 400G NIC is ~1 ns


def compute_rate_flops(llm: LLMSpec) -> float:
    """The simulator's prefill rate: the same `LLMSpec` cost model, so plans predict what runs."""
    return llm.prefill_flops_per_s


def request_compute_s(llm: LLMSpec, hit_tokens: int, new_tokens: int) -> float:
    """Prefill seconds of one request; the per-batch overhead is left out (batches amortise it)."""
    costs = llm.step_costs  # `llm.prefill_flops(...) / compute_rate_flops(llm)`, without the two wrappers
    return costs.prefill_flops(hit_tokens, new_tokens) / costs.prefill_flops_per_s


@dataclass(frozen=True)
class Backlog:
    """Work already queued when the plan starts; empty mappings mean an idle cluster."""

    read_queue_bytes: Mapping[str, float] = field(default_factory=dict)  # node -> bytes
    pe_compute_s: Mapping[str, float] = field(default_factory=dict)  # PE engine -> seconds
    pe_tokens: Mapping[str, int] = field(default_factory=dict)  # PE engine -> tok_e
    de_tokens: Mapping[str, int] = field(default_factory=dict)  # DE engine -> tok_e
    free_hbm_bytes: Mapping[str, int] = field(default_factory=dict)  # DE engine -> bytes

    @classmethod
    def from_state(cls, state: ClusterState, compute_s_per_token: float) -> Backlog:
        """What the group leaders report, with PE tokens turned into seconds at the given rate."""
        pe, de = state.of_role(Role.PREFILL), state.of_role(Role.DECODE)
        return cls(
            read_queue_bytes=dict(state.read_queue_bytes),
            pe_compute_s={e.name: e.num_tokens * compute_s_per_token for e in pe},
            pe_tokens={e.name: e.num_tokens for e in pe},
            de_tokens={e.name: e.num_tokens for e in de},
            free_hbm_bytes={e.name: e.free_hbm_bytes for e in de},
        )


@dataclass(frozen=True)
class Problem:
    """Index sets and coefficients. Requests r, PE engines p, DE engines d, nodes n (PE nodes first)."""

    cluster: ClusterSpec
    llm: LLMSpec
    requests: tuple[Request, ...]
    hit_bytes: tuple[int, ...]
    new_bytes: tuple[int, ...]
    prompt_bytes: tuple[int, ...]
    context_bytes: tuple[int, ...]
    compute_s: tuple[float, ...]
    pe_names: tuple[str, ...]
    pe_node: tuple[int, ...]
    de_names: tuple[str, ...]
    de_node: tuple[int, ...]
    node_names: tuple[str, ...]
    snic_bytes_per_s: tuple[float, ...]
    cnic_bytes_per_s: float  # the KV lane's share of one engine's CNIC
    pe_buffer_bytes: int
    de_buffer_bytes: int
    read_queue_bytes: tuple[float, ...]  # per node
    pe_backlog_s: tuple[float, ...]
    pe_tokens: tuple[int, ...]  # tok_e as reported (the paper's rules read it)
    de_tokens: tuple[int, ...]
    hbm_capacity_bytes: tuple[int, ...]  # per DE: free HBM x waves
    hbm_waves: int  # >1 when the batch's context KV exceeds free HBM: DEs recycle HBM between waves
    block_tokens: int = 64

    # ---- sizes ---------------------------------------------------------------------------------
    @property
    def num_requests(self) -> int:
        return len(self.requests)

    @property
    def num_pe(self) -> int:
        return len(self.pe_names)

    @property
    def num_de(self) -> int:
        return len(self.de_names)

    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.llm.kv_bytes_per_token

    def pe_read_cap_bytes(self, r: int) -> int:
        """Most hit bytes request r may read on the PE side (the PE buffer holds them)."""
        return min(self.hit_bytes[r], self.pe_buffer_bytes)

    # ---- capacities per resource ----------------------------------------------------------------
    def capacity(self, family: str, index: int) -> float:
        """Units per second: bytes/s for NICs, 1 for compute (load is in seconds)."""
        if family == "snic":
            return self.snic_bytes_per_s[index]
        if family == "pe_compute":
            return 1.0
        return self.cnic_bytes_per_s

    def backlog(self, family: str, index: int) -> float:
        if family == "snic":
            return self.read_queue_bytes[index]
        if family == "pe_compute":
            return self.pe_backlog_s[index]
        return 0.0

    def resource_count(self, family: str) -> int:
        if family == "snic":
            return self.num_nodes
        return self.num_pe if family.startswith("pe_") else self.num_de

    def resource_name(self, family: str, index: int) -> str:
        if family == "snic":
            return f"{self.node_names[index]}.snic"
        names = self.pe_names if family.startswith("pe_") else self.de_names
        return f"{names[index]}.{family.split('_', 1)[1]}"

    # ---- integer-scaled coefficients (CP-SAT and exact cross-checks) ----------------------------
    def scaled(self, family: str, amount: float, index: int = 0) -> int:
        """`amount` of load on resource (family, index) in integer units of 1 / TIME_SCALE seconds."""
        return round(amount * TIME_SCALE / self.capacity(family, index))


# ---- the solution and THE fluid bottleneck time -------------------------------------------------------------
@dataclass
class Solution:
    """Engine indices per request and the hit bytes read on the PE side (the rest on the DE side)."""

    pe: list[int]
    de: list[int]
    pe_read_bytes: list[int]

    def copy(self) -> Solution:
        return Solution(list(self.pe), list(self.de), list(self.pe_read_bytes))


class Loads:
    """Per-resource loads (backlog included) of a solution, updated incrementally."""

    def __init__(self, problem: Problem, solution: Solution | None = None):
        pb = problem
        self.problem = pb
        self.snic = list(pb.read_queue_bytes)
        self.pe_compute = list(pb.pe_backlog_s)
        self.pe_cnic_in = [0.0] * pb.num_pe
        self.pe_cnic_out = [0.0] * pb.num_pe
        self.de_cnic_in = [0.0] * pb.num_de
        self.de_cnic_out = [0.0] * pb.num_de
        self.de_hbm = [0] * pb.num_de
        if solution is not None:
            for r in range(pb.num_requests):
                self.add(r, solution.pe[r], solution.de[r], solution.pe_read_bytes[r])

    def add(self, r: int, p: int, d: int, pe_read: float, sign: int = 1) -> None:
        pb = self.problem
        de_read = pb.hit_bytes[r] - pe_read
        self.snic[pb.pe_node[p]] += sign * pe_read
        self.snic[pb.de_node[d]] += sign * de_read
        self.pe_compute[p] += sign * pb.compute_s[r]
        self.pe_cnic_in[p] += sign * pb.hit_bytes[r]
        self.pe_cnic_out[p] += sign * (pb.new_bytes[r] + pe_read)
        self.de_cnic_out[d] += sign * (de_read + pb.prompt_bytes[r])
        self.de_cnic_in[d] += sign * (pb.prompt_bytes[r] - de_read)
        self.de_hbm[d] += sign * pb.context_bytes[r]

    def family(self, family: str) -> list[float]:
        return getattr(self, family)

    def time_s(self, family: str, index: int) -> float:
        return self.family(family)[index] / self.problem.capacity(family, index)

    def family_max(self, family: str) -> tuple[float, int]:
        values = self.family(family)
        if family == "snic":
            caps = self.problem.snic_bytes_per_s
            best = max(range(len(values)), key=lambda i: (values[i] / caps[i], -i)) if values else 0
            return (values[best] / caps[best] if values else 0.0), best
        if not values:
            return 0.0, 0
        best = max(range(len(values)), key=lambda i: (values[i], -i))
        return values[best] / self.problem.capacity(family, best), best

    def fluid_bottleneck_s(self) -> float:
        return max(self.family_max(f)[0] for f in FAMILIES)

    def binding(self) -> tuple[str, int, float]:
        """(family, index, seconds) of the resource that sets the fluid bottleneck time; first family wins ties."""
        best = ("snic", 0, -1.0)
        for f in FAMILIES:
            t, i = self.family_max(f)
            if t > best[2] * (1 + 1e-12):
                best = (f, i, t)
        return best

    def hbm_overflow(self) -> list[int]:
        caps = self.problem.hbm_capacity_bytes
        return [d for d, used in enumerate(self.de_hbm) if used > caps[d]]


def fluid_bottleneck_s(problem: Problem, solution: Solution) -> float:
    return Loads(problem, solution).fluid_bottleneck_s()


# ---- construction ------------------------------------------------------------------------------
def build_problem(cluster: ClusterSpec, llm: LLMSpec, requests: Sequence[Request],
                  backlog: Backlog | None = None, block_tokens: int = 64) -> Problem:
    """Coefficients for `requests` on `cluster`; raises `InfeasibleError` naming a request no plan fits."""
    backlog = backlog or Backlog()
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SpecError("requests", "id", dup, "unique request ids")
    node = cluster.node
    kv = llm.kv_bytes_per_token
    pes, des = cluster.engines(Role.PREFILL), cluster.engines(Role.DECODE)
    node_names = tuple(cluster.all_nodes())
    node_index = {n: i for i, n in enumerate(node_names)}
    for name in backlog.read_queue_bytes:
        if name not in node_index:
            raise SpecError("backlog", "read_queue_bytes", name, "a node of " + cluster.shorthand)
    default_free = default_free_hbm_bytes(cluster, llm)
    free = [int(backlog.free_hbm_bytes.get(e.name, default_free)) for e in des]
    hit = tuple(r.hit_tokens * kv for r in requests)
    new = tuple(r.new_tokens * kv for r in requests)
    prompt = tuple(r.prompt_tokens * kv for r in requests)
    context = tuple(r.context_tokens * kv for r in requests)
    most_free = max(free, default=0)  # once: 20,000 requests x 768 DEs was a visible share of the build
    for i, r in enumerate(requests):
        if prompt[i] > node.dram_buffer_bytes:
            raise InfeasibleError(r.id, "DE DRAM buffer",
                                  f"prompt KV {prompt[i]:,} B exceeds every DE node's buffer "
                                  f"({node.dram_buffer_bytes:,} B)")
        if context[i] > most_free:
            raise InfeasibleError(r.id, "DE HBM",
                                  f"context KV {context[i]:,} B exceeds every DE's free HBM ({most_free:,} B)")
    waves = hbm_waves(context, free)
    return Problem(
        cluster=cluster, llm=llm, requests=tuple(requests),
        hit_bytes=hit, new_bytes=new, prompt_bytes=prompt, context_bytes=context,
        compute_s=tuple(request_compute_s(llm, r.hit_tokens, r.new_tokens) for r in requests),
        pe_names=tuple(e.name for e in pes), pe_node=tuple(node_index[e.node] for e in pes),
        de_names=tuple(e.name for e in des), de_node=tuple(node_index[e.node] for e in des),
        node_names=node_names,
        snic_bytes_per_s=tuple(node.snic_bytes_per_s for _ in node_names),
        cnic_bytes_per_s=node.cnic_bytes_per_s * node.cnic_kv_share,
        pe_buffer_bytes=node.dram_buffer_bytes, de_buffer_bytes=node.dram_buffer_bytes,
        read_queue_bytes=tuple(float(backlog.read_queue_bytes.get(n, 0.0)) for n in node_names),
        pe_backlog_s=tuple(float(backlog.pe_compute_s.get(e.name, 0.0)) for e in pes),
        pe_tokens=tuple(int(backlog.pe_tokens.get(e.name, 0)) for e in pes),
        de_tokens=tuple(int(backlog.de_tokens.get(e.name, 0)) for e in des),
        hbm_capacity_bytes=tuple(f * waves for f in free), hbm_waves=waves, block_tokens=block_tokens,
    )


def solution_from_plan(problem: Problem, assignments) -> Solution:
    """Engine indices and PE-read bytes from `Assignment`s (in any order; every request once)."""
    pe_index = {n: i for i, n in enumerate(problem.pe_names)}
    de_index = {n: i for i, n in enumerate(problem.de_names)}
    by_id = {a.request: a for a in assignments}
    rows = [by_id[r.id] for r in problem.requests]
    return Solution([pe_index[a.pe] for a in rows], [de_index[a.de] for a in rows],
                    [a.pe_read_bytes for a in rows])
