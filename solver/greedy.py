"""The greedy plan: the paper's rules (the same code as the simulator's `dualpath` policy) on a batch.

`DualPathPolicy.assign_one` decides every request, in FIFO order, on a `SchedulerView` that is updated
after each decision exactly as one fetch updates it. A batch released together outgrows one fetch (PEs
over beta get nothing), so between fetches time is advanced: every PE drains new tokens at its
compute rate until the least-loaded one is eligible again, and read queues drain at their SNIC rate.
The DEs see their HBM for every wave of the batch (`Problem.hbm_capacity_bytes`). Reads are whole, on
the side with the shorter queue, as the paper does: the greedy is the baseline, the warm start and
the fallback.
"""

from __future__ import annotations

from dualpath.cluster import Role
from dualpath.policy import ClusterState, EngineState
from dualpath.solver.paper_rules import DualPathPolicy, SchedulerView
from dualpath.solver.problem import Problem, Solution


def idle_state(problem: Problem) -> ClusterState:
    """What the group leaders would report for the problem's backlogs (HBM: every wave)."""
    pb = problem
    engines = {}
    for p, name in enumerate(pb.pe_names):
        engines[name] = EngineState(name, Role.PREFILL, pb.node_names[pb.pe_node[p]], 0, 0, pb.pe_tokens[p], 0)
    groups = {e.name: e.group for e in pb.cluster.engines(Role.DECODE)}
    for d, name in enumerate(pb.de_names):
        engines[name] = EngineState(name, Role.DECODE, pb.node_names[pb.de_node[d]], groups[name], 0,
                                    pb.de_tokens[d], pb.hbm_capacity_bytes[d])
    kv = pb.kv_bytes_per_token
    return ClusterState(0.0, engines, {n: int(q // kv) for n, q in zip(pb.node_names, pb.read_queue_bytes)},
                        dict(zip(pb.node_names, pb.read_queue_bytes)))


def paper_policy(problem: Problem) -> DualPathPolicy:
    return DualPathPolicy(problem.cluster, problem.llm, problem.block_tokens)


def greedy_solution(problem: Problem, policy: DualPathPolicy | None = None) -> Solution:
    """Every request of `problem` placed by the paper's rules, fetch after fetch."""
    pb = problem
    policy = policy or paper_policy(pb)
    view = SchedulerView.of(idle_state(pb))
    pe_index = {n: i for i, n in enumerate(pb.pe_names)}
    de_index = {n: i for i, n in enumerate(pb.de_names)}
    tokens_per_s = sum(r.new_tokens for r in pb.requests) / max(sum(pb.compute_s), 1e-12)
    kv = pb.kv_bytes_per_token
    snic_tokens_per_s = {n: s / kv for n, s in zip(pb.node_names, pb.snic_bytes_per_s)}
    pending = list(pb.requests)
    sol = Solution([0] * pb.num_requests, [0] * pb.num_requests, [0] * pb.num_requests)
    i = 0
    while i < len(pending):
        r = pending[i]
        a = policy.assign_one(view, r, pending[i:])
        if a is None:
            _next_fetch(view, policy, r, tokens_per_s, snic_tokens_per_s)
            continue
        sol.pe[i], sol.de[i], sol.pe_read_bytes[i] = pe_index[a.pe], de_index[a.de], a.pe_read_bytes
        i += 1
    return sol


def _next_fetch(view: SchedulerView, policy: DualPathPolicy, r, tokens_per_s: float,
                snic_tokens_per_s: dict[str, float]) -> None:
    """Advance time until the blocked head request can be placed; start a new fetch."""
    view.z_limit.clear()
    if policy.choose_pe(view, r) is None:
        drained = min(view.pe_tokens) - policy.beta_tokens
        elapsed_s = max(drained, 1) / tokens_per_s
        view.pe_tokens[:] = [max(0, t - max(drained, 1)) for t in view.pe_tokens]
        for node, q in list(view.read_queue_tokens.items()):
            view.read_queue_tokens[node] = max(0, int(q - elapsed_s * snic_tokens_per_s.get(node, 0.0)))
        return
    # Unreachable: hbm_waves leaves one largest request of slack on every DE.
    raise RuntimeError(f"the paper's rules found no DE with HBM room for {r.id}")
