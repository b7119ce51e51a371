"""The paper's scheduler (DualPath, arXiv 2602.21548, section 6), rule for rule.

Inter-engine: PE groups' leaders fetch in turn (the first one rotating between calls), each taking
waiting requests in FIFO order while one of its engines is eligible (design.md section 3):
- PE: engines with tok_e > beta get nothing; prefer engines whose node's storage read queue holds at
  most alpha tokens, else the others; within the preferred class the least tok_e (ties: the shorter
  read queue, then the lowest index). alpha = tokens the node's SNIC reads in 3 s at line rate;
  beta = new tokens a GPU prefills in 5 s at a 32K-token context.
- DE: the group with the least total tok_e (among groups with room); inside it, with
  Z = 1.05 x (tokens of the fetch's requests that fit in the group's free HBM + sum tok_e) / #engines,
  the engines with room and tok_e + len <= Z, fewest seq_e first; else the least tok_e with room.
  When no DE has room the whole fetch stops: FIFO, nobody overtakes the head.
- Read path: the side (PE node or DE node) whose storage read queue is shorter; ties read on the PE.
A fetch's requests are the FIFO prefix the PEs can take under the beta rule; tok_e of a PE counts the
new tokens it has still to prefill, of a DE the context tokens it holds (what its HBM stores).
Intra-engine: a forward batch takes queued requests in FIFO order while the predicted attention time
stays within 300 ms; the request that overflows is chunked, its token count found by binary search.

The decision logic works on a `SchedulerView` built from any `ClusterState` (`assign_one`,
`choose_pe`, `choose_de`, `choose_read_side`), so the optimizer uses the same rules as its greedy
baseline and warm start without a simulator.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import replace

from dualpath.cluster import ClusterSpec
from dualpath.compiled import mypyc_attr
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import BatchItem, ClusterState, ExecutionOptions, Policy
from dualpath.request import Request
from dualpath.solver.chunk_fit import secant_fit
from dualpath.solver.scheduler_view import SchedulerView, ViewCache

__all__ = ["DualPathPolicy", "SchedulerView"]


@mypyc_attr(allow_interpreted_subclasses=True)  # policies are extension points
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
        self._cache = ViewCache()
        self._next_group = 0
        self._groups_of: dict[int, list[int]] | None = None  # the view's PE groups `_groups` lists, sorted
        self._groups: list[list[int]] = []
        self._all_pes_past_beta = False  # at the last call, with requests waiting
        # The fetch `schedule` is placing, and its running sums of context tokens and of their KV bytes
        # (contexts with a leading 0), which `_z` builds on first use.
        self._fetch: list[Request] | None = None
        self._fetch_needs: list[int] = []
        self._fetch_contexts: list[int] = [0]

    # ---- inter-engine ----------------------------------------------------------------------------
    def view(self, state: ClusterState) -> SchedulerView:
        """A mutable view of `state` for one fetch."""
        return self._cache.view_of(state)

    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        """PE groups fetch in turn (the first one rotating between calls), each taking FIFO requests
        while one of its engines is eligible; a request no DE has room for stops everyone."""
        # Most calls find every PE past beta: the fetch reads the cached view, copied only to assign.
        view = self._cache.peek(state)
        fetch = self.fetch(view, pending)
        # An empty fetch with requests waiting means every PE is past beta: only a PE report can change that.
        self._all_pes_past_beta = not fetch and len(pending) > 0
        if not fetch:
            return []
        view = self._cache.own(view, state)
        if view.pe_groups is not self._groups_of:  # views from one cache share it: sorted once
            self._groups_of = view.pe_groups
            self._groups = [view.pe_groups[g] for g in sorted(view.pe_groups)]
        groups = self._groups
        if not groups:
            return []
        first = self._next_group % len(groups)
        self._next_group = first + 1
        self._fetch = fetch
        try:
            return self._place_fetch(view, fetch, groups[first:] + groups[:first])
        finally:
            self._fetch = None
            del self._fetch_needs[:]
            del self._fetch_contexts[1:]

    def _place_fetch(self, view: SchedulerView, fetch: list[Request], groups: list[list[int]]) -> list[Assignment]:
        out: list[Assignment] = []
        i = 0
        for members in groups:
            while i < len(fetch):
                r = fetch[i]
                p = self.choose_pe(view, r, members)
                if p is None:
                    break  # this group's engines are full: the next group fetches
                a = self.place(view, r, p, fetch)
                if a is None:
                    return out  # no DE has room: FIFO, the head waits and so does everyone behind it
                out.append(a)
                i += 1
        return out

    def waits_for_prefill(self) -> bool:
        return self._all_pes_past_beta

    def fetch(self, view: SchedulerView, pending: Sequence[Request]) -> list[Request]:
        """The FIFO prefix of `pending` the PEs can take under the beta rule (least tok_e first)."""
        heap = list(view.pe_tokens)
        heapq.heapify(heap)
        beta = self.beta_tokens
        out = []
        for r in pending:
            if not heap or heap[0] > beta:
                break
            heapq.heapreplace(heap, heap[0] + r.new_tokens)
            out.append(r)
        return out

    def assign_one(self, view: SchedulerView, r: Request, pending: Sequence[Request] = ()) -> Assignment | None:
        """Apply the three rules to `r` over all PEs, update `view` as the leaders would see it, or None."""
        p = self.choose_pe(view, r)
        if p is None:
            return None
        return self.place(view, r, p, pending)

    def place(self, view: SchedulerView, r: Request, p: int, pending: Sequence[Request] = ()) -> Assignment | None:
        """`r` on PE `p`: choose its DE and read side and book it in `view`; None when no DE has room."""
        d = self.choose_de(view, r, pending)
        if d is None:
            return None
        side = self.choose_read_side(view, p, d)
        context, hit = r.context_tokens, r.hit_tokens
        view.pe_tokens[p] += r.new_tokens
        view.pe_seqs[p] += 1
        view.de_tokens[d] += context
        view.de_seqs[d] += 1
        view.de_free_hbm[d] -= context * self.kv
        view.group_tokens[view.de_group[d]] += context
        node = view.pe_node[p] if side == "pe" else view.de_node[d]
        view.read_queue_tokens[node] = view.read_queue_tokens.get(node, 0) + hit
        hit_bytes = hit * self.kv
        return Assignment(r.id, view.pe_names[p], view.de_names[d],
                          hit_bytes if side == "pe" else 0, hit_bytes if side == "de" else 0)

    def choose_pe(self, view: SchedulerView, r: Request, members: Sequence[int] | None = None) -> int | None:
        """Among `members` (default: every PE) with tok_e <= beta: nodes with read_q <= alpha first,
        then the least tok_e; ties go to the shorter read queue, then the lowest index."""
        alpha, beta, queues = self.alpha_tokens, self.beta_tokens, view.read_queue_tokens
        tokens, nodes = view.pe_tokens, view.pe_node
        # The least key (read_q > alpha, tok_e, read_q, index), compared field by field rather than
        # as tuples: this runs for every PE of every assignment.
        best = -1
        best_far, best_t, best_q = True, 0.0, 0
        for p in (range(len(tokens)) if members is None else members):
            t = tokens[p]
            if t > beta:
                continue
            q = queues.get(nodes[p], 0)
            far = q > alpha
            if best < 0 or (far < best_far or (far == best_far and (
                    t < best_t or (t == best_t and (q < best_q or (q == best_q and p < best)))))):
                best, best_far, best_t, best_q = p, far, t, q
        return best if best >= 0 else None

    def choose_de(self, view: SchedulerView, r: Request, pending: Sequence[Request] = ()) -> int | None:
        length = r.context_tokens
        need = length * self.kv
        load = view.group_tokens
        groups = view.groups
        if not groups:
            return None
        # The least (load, group) pair, in one plain pass (this runs for every assignment, over every DE
        # group: 24 at 48P96D); usually that group has room, and only otherwise are the others ranked.
        least, least_load = -1, 0
        for g in groups:
            g_load = load[g]
            if least < 0 or g_load < least_load or (g_load == least_load and g < least):
                least, least_load = g, g_load
        d = self._de_in_group(view, least, length, need, pending)
        if d >= 0:
            return d
        for group in sorted((g for g in groups if g != least), key=lambda g: (load[g], g)):
            d = self._de_in_group(view, group, length, need, pending)
            if d >= 0:
                return d
        return None

    def _de_in_group(self, view: SchedulerView, group: int, length: int, need: int,
                     pending: Sequence[Request]) -> int:
        """The rule inside one DE group: the least (seq_e, tok_e, index) under Z, else the least (tok_e, index)
        with room; -1 when no engine has room. Z is fixed on the first engine with room."""
        free, tokens, seqs = view.de_free_hbm, view.de_tokens, view.de_seqs
        members = view.groups[group]
        z_limit = view.z_limit
        z = -1.0  # not yet fixed (Z is never negative)
        under, under_s, under_t = -1, 0, 0
        roomy, roomy_t = -1, 0
        for d in members:
            if free[d] < need:
                continue
            if z < 0.0:
                z = z_limit.get(group, -1.0)
                if z < 0.0:
                    z = z_limit[group] = self._z(view, members, pending)
            t = tokens[d]
            if t + length <= z:
                sq = seqs[d]
                if under < 0 or sq < under_s or (sq == under_s and (t < under_t or (t == under_t and d < under))):
                    under, under_s, under_t = d, sq, t
            elif under < 0 and (roomy < 0 or t < roomy_t or (t == roomy_t and d < roomy)):
                roomy, roomy_t = d, t
        return under if under >= 0 else roomy

    def _z(self, view: SchedulerView, members: list[int], pending: Sequence[Request]) -> float:
        """1.05 x (tokens of this fetch's requests that fit in the group's free HBM + sum tok_e) / #engines."""
        free = view.de_free_hbm
        room = sum([free[d] for d in members if free[d] > 0])  # the sum of max(0, free) without the calls
        kv = self.kv
        if pending is self._fetch:
            # Every DE group asks about the same fetch: its running sums are taken once, and each group's
            # fitting prefix is found by bisection (integers: the same answer as subtracting in turn).
            if not self._fetch_needs:
                needs, contexts = self._fetch_needs, self._fetch_contexts
                context_sum = 0
                for r in pending:
                    context_sum += r.hit_tokens + r.new_tokens + r.output_tokens
                    needs.append(context_sum * kv)
                    contexts.append(context_sum)
            fit = self._fetch_contexts[bisect_right(self._fetch_needs, room)]
        else:
            fit = 0
            for r in pending:
                context = r.hit_tokens + r.new_tokens + r.output_tokens  # r.context_tokens, inlined
                need = context * kv
                if need > room:
                    break
                room -= need
                fit += context
        tokens = view.de_tokens
        return self.z_factor * (fit + sum([tokens[d] for d in members])) / len(members)

    def choose_read_side(self, view: SchedulerView, p: int, d: int) -> str:
        queues = view.read_queue_tokens
        return "pe" if queues.get(view.pe_node[p], 0) <= queues.get(view.de_node[d], 0) else "de"

    # ---- intra-engine ----------------------------------------------------------------------------
    def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        """FIFO while predicted attention <= the quota; the overflowing request is chunked."""
        costs = self.llm.step_costs
        left = self.attention_quota_s
        batch: list[BatchItem] = []
        for item in queue:
            cost = costs.chunk_attention_s(item.cached_tokens, item.new_tokens)
            if cost <= left:
                batch.append(item)
                left -= cost
                continue
            def chunk_cost(n: int, c: int = item.cached_tokens) -> float:
                return costs.chunk_attention_s(c, n)

            fit = secant_fit(chunk_cost, left, item.new_tokens, cost)
            if fit == 0 and not batch:
                fit = 1  # a batch always makes progress
            if fit:  # the chunk; built directly when it is a plain BatchItem (replace() is slow)
                batch.append(BatchItem(item.request, item.cached_tokens, fit, item.arrived_s)
                             if type(item) is BatchItem else replace(item, new_tokens=fit))
            break
        return batch

