"""The paper's scheduler (DualPath, arXiv 2602.21548, section 6), rule for rule.

Inter-engine, per fetch, FIFO over the waiting requests (design.md section 3):
- PE: engines with tok_e > beta get nothing; prefer engines whose node's storage read queue holds at
  most alpha tokens, else the others; within the preferred class the least tok_e. alpha = tokens the
  node's SNIC reads in 3 s; beta = new tokens a GPU prefills in 5 s.
- DE: the group with the least total tok_e (among groups with room); inside it, with
  Z = 1.05 x (tokens of the waiting requests that fit in the group's free HBM + sum tok_e) / #engines,
  the engines with room and tok_e + len <= Z, fewest seq_e first; else the least tok_e with room;
  the fetch stops when no engine has room (or no PE is eligible): FIFO, nobody overtakes.
- Read path: the side (PE node or DE node) whose storage read queue is shorter; ties read on the PE.
Intra-engine: a forward batch takes queued requests in FIFO order while the predicted attention time
stays within 300 ms; the request that overflows is chunked, its token count found by binary search.

The decision logic works on a `SchedulerView` built from any `ClusterState`, so the optimizer can use
the same rules as its greedy baseline and warm start without a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

from dualpath.cluster import ClusterSpec, Role
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import BatchItem, ClusterState, ExecutionOptions, Policy
from dualpath.request import Request


@dataclass
class SchedulerView:
    """A mutable copy of what the group leaders reported, updated as one fetch assigns requests."""

    pe_names: list[str]
    pe_node: list[str]
    pe_tokens: list[int]
    pe_seqs: list[int]
    de_names: list[str]
    de_node: list[str]
    de_tokens: list[int]
    de_seqs: list[int]
    de_free_hbm: list[int]
    de_group: list[int]
    groups: dict[int, list[int]]  # DE group -> DE indices
    read_queue_tokens: dict[str, int]
    group_tokens: dict[int, int] = field(default_factory=dict)
    z_limit: dict[int, float] = field(default_factory=dict)  # per DE group, fixed at the fetch's start

    @classmethod
    def of(cls, state: ClusterState) -> "SchedulerView":
        pes, des = state.of_role(Role.PREFILL), state.of_role(Role.DECODE)
        groups: dict[int, list[int]] = {}
        for i, e in enumerate(des):
            groups.setdefault(e.group, []).append(i)
        view = cls([e.name for e in pes], [e.node for e in pes], [e.num_tokens for e in pes],
                   [e.num_seqs for e in pes], [e.name for e in des], [e.node for e in des],
                   [e.num_tokens for e in des], [e.num_seqs for e in des], [e.free_hbm_bytes for e in des],
                   [e.group for e in des], groups, dict(state.read_queue_tokens))
        view.group_tokens = {g: sum(view.de_tokens[i] for i in members) for g, members in groups.items()}
        return view


class DualPathPolicy(Policy):
    """The paper's scheduler; `oracle` reuses it with free I/O, the optimizer as its greedy."""

    name = "dualpath"
    execution = ExecutionOptions(layerwise=True, zero_io=False)

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64, *, alpha_s: float = 3.0,
                 beta_s: float = 5.0, z_factor: float = 1.05, attention_quota_s: float = 0.3,
                 reference_context_tokens: int = 32768):
        super().__init__(cluster, llm, block_tokens)
        self.kv = llm.kv_bytes_per_token
        self.alpha_tokens = alpha_s * cluster.node.snic_bytes_per_s / self.kv
        # beta: new tokens per 5 s at a typical agentic context (the cost per token grows with context).
        context = min(reference_context_tokens, llm.max_context_tokens)
        per_token_s = (llm.prefill_time_s([(context, 1024)]) - llm.cost.prefill_overhead_s) / 1024
        self.beta_tokens = beta_s / per_token_s
        self.z_factor = z_factor
        self.attention_quota_s = attention_quota_s

    # ---- inter-engine ----------------------------------------------------------------------------
    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        view = SchedulerView.of(state)
        out = []
        for r in pending:
            a = self.assign_one(view, r, pending)
            if a is None:
                break  # FIFO: the head waits, so does everyone behind it
            out.append(a)
        return out

    def assign_one(self, view: SchedulerView, r: Request, pending: Sequence[Request] = ()) -> Assignment | None:
        p = self.choose_pe(view, r)
        if p is None:
            return None
        d = self.choose_de(view, r, pending)
        if d is None:
            return None
        side = self.choose_read_side(view, p, d)
        hit_bytes = r.hit_tokens * self.kv
        view.pe_tokens[p] += r.new_tokens
        view.pe_seqs[p] += 1
        view.de_tokens[d] += r.context_tokens
        view.de_seqs[d] += 1
        view.de_free_hbm[d] -= r.context_tokens * self.kv
        view.group_tokens[view.de_group[d]] += r.context_tokens
        node = view.pe_node[p] if side == "pe" else view.de_node[d]
        view.read_queue_tokens[node] = view.read_queue_tokens.get(node, 0) + r.hit_tokens
        return Assignment(r.id, view.pe_names[p], view.de_names[d],
                          hit_bytes if side == "pe" else 0, hit_bytes if side == "de" else 0)

    def choose_pe(self, view: SchedulerView, r: Request) -> int | None:
        best, best_key = None, None
        alpha, beta, queues = self.alpha_tokens, self.beta_tokens, view.read_queue_tokens
        for p, tokens in enumerate(view.pe_tokens):
            if tokens > beta:
                continue
            key = (queues.get(view.pe_node[p], 0) > alpha, tokens, p)
            if best_key is None or key < best_key:
                best, best_key = p, key
        return best

    def choose_de(self, view: SchedulerView, r: Request, pending: Sequence[Request] = ()) -> int | None:
        need = r.context_tokens * self.kv
        free = view.de_free_hbm
        for group in sorted(view.groups, key=lambda g: (view.group_tokens[g], g)):
            members = view.groups[group]
            roomy = [d for d in members if free[d] >= need]
            if not roomy:
                continue
            z = view.z_limit.get(group)
            if z is None:
                z = view.z_limit[group] = self._z(view, members, pending)
            tokens, seqs = view.de_tokens, view.de_seqs
            under = [d for d in roomy if tokens[d] + r.context_tokens <= z]
            if under:
                return min(under, key=lambda d: (seqs[d], tokens[d], d))
            return min(roomy, key=lambda d: (tokens[d], d))
        return None

    def _z(self, view: SchedulerView, members: list[int], pending: Sequence[Request]) -> float:
        room = sum(max(0, view.de_free_hbm[d]) for d in members)
        fit = 0
        for r in pending:
            need = r.context_tokens * self.kv
            if need > room:
                break
            room -= need
            fit += r.context_tokens
        return self.z_factor * (fit + sum(view.de_tokens[d] for d in members)) / len(members)

    def choose_read_side(self, view: SchedulerView, p: int, d: int) -> str:
        queues = view.read_queue_tokens
        return "pe" if queues.get(view.pe_node[p], 0) <= queues.get(view.de_node[d], 0) else "de"

    # ---- intra-engine ----------------------------------------------------------------------------
    def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        """FIFO while predicted attention <= the quota; the overflowing request is chunked."""
        attention = self.llm.attention_time_s
        left = self.attention_quota_s
        batch: list[BatchItem] = []
        for item in queue:
            cost = attention([(item.cached_tokens, item.new_tokens)])
            if cost <= left:
                batch.append(item)
                left -= cost
                continue
            low, high = 0, item.new_tokens - 1  # largest n with attention(cached, n) <= left
            while low < high:
                mid = (low + high + 1) // 2
                if attention([(item.cached_tokens, mid)]) <= left:
                    low = mid
                else:
                    high = mid - 1
            if low == 0 and not batch:
                low = 1  # a batch always makes progress
            if low:
                batch.append(replace(item, new_tokens=low))
            break
        return batch
