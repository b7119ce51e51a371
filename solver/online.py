"""Online solver-in-the-loop: `OnlineScheduler`, embeddable (the `optimized` policy wraps it: `optimized.py`).

Why the paper's rules stay above Oracle (agentic-64k; past 500 agents most first turns are cold prompts of the whole
history, tens of thousands of tokens): while the PEs crunch those, beta keeps every later turn unassigned (FIFO:
nobody overtakes the head), so no read starts and the SNICs idle for minutes; the storage work then runs after the
compute instead of under it. Each tick here:
1. scans the waiting requests in FIFO order and skips, rather than stops at, one that cannot go: a long request
   (over `short_compute_s` of compute) waits for a PE with at most `pe_horizon_s` of compute queued (an early
   assignment would hold DE HBM and buffer for the whole wait); a short turn goes at once, so its read overlaps the
   cold prefills;
2. the DE by the paper's rule (`DualPathPolicy.choose_de`, the same code: decode balance and HBM);
3. the PE with the least queued compute in seconds (ties: the node whose SNIC drains first);
4. the read side, or the split of the hit bytes, from predicted SNIC finish times in *bytes* of both nodes (the
   paper compares token queues of two nodes);
5. an incremental LP (GLOP, one model kept across ticks: only bounds and coefficients change) that re-balances the
   window's splits so every SNIC finishes the window as early as possible.
A hard time budget guards the tick (embedding); past it the LP is skipped and the rest of the window is decided by
the paper's rules. Inside a PE, forward batches take the least compute first, aged by waiting time (`srpt`), so
short turns whose successors' reads wait on them overtake cold prefills.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dualpath.cluster import ClusterSpec, Role
from dualpath.errors import SpecError
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import ClusterState
from dualpath.request import Request
from dualpath.solver.paper_rules import DualPathPolicy, SchedulerView
from dualpath.solver.problem import request_compute_s
from dualpath.solver.scheduler_view import ViewCache
from dualpath.solver.split_lp import SplitLP
from dualpath.solver.waiting_keys import WaitingKeys


@dataclass(frozen=True)
class OnlineOptions:
    window: int = 64  # requests decided per tick
    budget_s: float | None = 0.015  # hard per-tick time budget (None: none, decisions deterministic)
    split_reads: bool = True
    lp: bool = True  # re-balance the window's splits with the incremental LP
    # Long requests are assigned only while some PE has at most this many seconds of compute queued
    # (the paper's beta is 5 s of tokens): an early assignment reserves DE HBM and buffer space for
    # the whole wait. None: assign at once.
    pe_horizon_s: float | None = 5.0
    # Requests computing in at most this long are assigned whatever the horizon: their reads start at
    # once and the batch order lets them overtake queued long prefills.
    short_compute_s: float = 0.5
    skip_blocked: bool = True  # a request the horizon or DE HBM blocks is skipped, not a FIFO stop
    scan: int = 4096  # with skipping, how many waiting requests a tick looks at, at most
    # Forward batches: "fifo" (paper), "hrrn" (highest response ratio next), or "srpt" (least compute
    # first, aged by `aging` seconds of compute per second waited).
    batch_order: str = "srpt"
    aging: float = 0.01
    snic_efficiency: float = 1.0  # the fraction of SNIC line rate reads achieve (to predict finish times)


class OnlineScheduler:
    """What a serving stack embeds: submit requests, report state, tick, and let groups fetch.

    `tick()` decides a window and files each assignment under its PE's group, which `fetch(group)`
    hands out, as the paper's group leaders fetch their work. The public methods hold one re-entrant
    lock, so request handlers, a ticker thread and group leaders' fetches may call from any thread.
    """

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64,
                 options: OnlineOptions | None = None):
        self.cluster, self.llm, self.block_tokens = cluster, llm, block_tokens
        self.options = options or OnlineOptions()
        self.rules = DualPathPolicy(cluster, llm, block_tokens)
        self.kv = llm.kv_bytes_per_token
        node = cluster.node
        self.snic_rate = dict.fromkeys(cluster.all_nodes(), node.snic_bytes_per_s * self.options.snic_efficiency)
        self.buffer_bytes = node.dram_buffer_bytes
        self.split_unit = block_tokens * self.kv
        self.pe_group = {e.name: e.group for e in cluster.engines(Role.PREFILL)}
        context = min(32768, llm.max_context_tokens)
        self.compute_s_per_token = request_compute_s(llm, context, 1024) / 1024
        self.pending: list[Request] = []
        self.state: ClusterState | None = None
        self.outbox: dict[int, list[Assignment]] = {}
        self.tick_latencies_s: list[float] = []
        self.num_fallbacks = 0
        self._compute_cache: dict[str, float] = {}
        self._lock = threading.RLock()
        self._engines = {e.name: (e.role, e.node) for role in Role for e in cluster.engines(role)}
        self._checked_names: frozenset[str] = frozenset()  # the engine names of the last report checked
        self._views = ViewCache()
        self._keys = WaitingKeys(self._compute_s, self.kv, self.options.short_compute_s)
        # Built here, not in the first tick: importing OR-Tools and building the LP take ~0.1-0.3 s,
        # which a live scheduler would otherwise spend while the first requests wait.
        use_lp = self.options.lp and self.options.split_reads
        self._lp = SplitLP(list(self.snic_rate), self.options.window) if use_lp else None
        self._rate_gb = {n: rate * 1e-9 for n, rate in self.snic_rate.items()}  # the LP's units

    # ---- the embedding interface ------------------------------------------------------------------
    def submit(self, requests: Sequence[Request]) -> None:
        """Queue requests behind those waiting (FIFO); the next ticks decide them."""
        with self._lock:
            self.pending.extend(requests)

    def update(self, state: ClusterState) -> None:
        """Take the group leaders' latest report; an engine the cluster lacks, or one on another node, is a
        `SpecError` (checked when the set of engine names changes: per report it would cost the simulator)."""
        with self._lock:
            if state.engines.keys() != self._checked_names:  # a new set of engines: check it once
                for name, e in state.engines.items():
                    if self._engines.get(name) != (e.role, e.node):
                        raise SpecError("OnlineScheduler.update", "engine", name,
                                        f"an engine of cluster {self.cluster.name or self.cluster.shorthand} "
                                        f"(PE0..PE{self.cluster.num_pe - 1}, DE0..DE{self.cluster.num_de - 1}) "
                                        "on its own node")
                self._checked_names = frozenset(state.engines)
            self.state = state

    def tick(self) -> list[Assignment]:
        """Decide up to a window of the waiting requests on the last report, each also to its PE group's outbox."""
        with self._lock:
            if self.state is None or not self.pending:
                return []
            out = self.decide(self.pending, self.state)
            done = {a.request for a in out}
            self.pending = [r for r in self.pending if r.id not in done]
            for a in out:
                self.outbox.setdefault(self.pe_group[a.pe], []).append(a)
            return out

    def fetch(self, group: int) -> list[Assignment]:
        """A PE group leader's fetch: its group's decisions since its last fetch, each handed out once."""
        with self._lock:
            return self.outbox.pop(group, [])

    def cancel(self, request_id: str) -> bool:
        """Withdraw a waiting request; False when none waits under that id (unknown, or already decided)."""
        with self._lock:
            kept = [r for r in self.pending if r.id != request_id]
            if len(kept) == len(self.pending):
                return False
            self.pending = kept
            self._compute_cache.pop(request_id, None)
            self._keys.drop(request_id)
            return True

    # ---- one tick ------------------------------------------------------------------------------
    def decide(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        """Decide up to a window of `pending` on `state`, under the lock (`tick` and the simulator call it)."""
        with self._lock:
            return self._decide(pending, state)

    def _decide(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        started = time.perf_counter()
        deadline = started + (self.options.budget_s if self.options.budget_s is not None else float("inf"))
        opts = self.options
        # Without a time budget (deterministic runs), the requests the skip test below would pass over
        # are found in C (`waiting_keys`); the same test then runs on the ones found.
        fast = opts.skip_blocked and opts.budget_s is None
        scanned = self._keys.window(pending, opts.scan)[0] if fast else []
        if fast and opts.scan >= opts.window:
            # The keys' copy of the first `scan` waiting starts with the head: slicing it spares a
            # slice of `pending` (in the simulator, a view that builds its slices in Python).
            head = scanned[:opts.window]
        else:
            head = list(pending[:opts.window]) if not isinstance(pending, list) else pending[:opts.window]
        # With skipping, the window is the first `window` requests that can go, among the first
        # `scan` waiting: later short turns must not wait behind a head of blocked cold prompts.
        window = pending if opts.skip_blocked else head
        view = self._views.view_of(state)  # == SchedulerView.of(state), re-reading only changed engines
        pe_node = view.pe_node
        snic_s = {n: state.read_queue_bytes.get(n, 0.0) / rate for n, rate in self.snic_rate.items()}
        pe_s = [t * self.compute_s_per_token for t in view.pe_tokens]
        horizon = opts.pe_horizon_s if opts.pe_horizon_s is not None else float("inf")
        out: list[Assignment] = []
        least = min(pe_s)
        blocked_need = float("inf")  # the smallest context KV no DE had room for this tick
        cache, short = self._compute_cache, opts.short_compute_s
        if fast:
            pairs = self._keys.unblocked(lambda: least > horizon, lambda: blocked_need)
        taken: list[int] = []
        for i, r in (pairs if fast else enumerate(window)):
            if len(out) >= opts.window or i >= opts.scan:
                break
            if time.perf_counter() > deadline:
                # Over budget: the paper's rules decide the rest of this fetch.
                self.num_fallbacks += 1
                done = {a.request for a in out}
                rest = [q for q in head if q.id not in done]
                for q in rest:
                    a = self.rules.assign_one(view, q, rest)
                    if a is None:
                        break
                    out.append(a)
                break
            c = cache.get(r.id)
            if c is None:
                c = cache[r.id] = request_compute_s(self.llm, r.hit_tokens, r.new_tokens)
            # PE: the earliest predicted compute finish (the least queued compute); ties: the node
            # whose SNIC drains first (it may carry this read).
            if (least > horizon and c > short) or r.context_tokens * self.kv >= blocked_need:
                if opts.skip_blocked:
                    continue
                break  # FIFO: the head waits, as in the paper
            ties = [p for p, load in enumerate(pe_s) if load == least]
            p = ties[0] if len(ties) == 1 else min(ties, key=lambda q: (snic_s[pe_node[q]], q))
            d = self.rules.choose_de(view, r, head)
            if d is None:
                blocked_need = min(blocked_need, r.context_tokens * self.kv)
                if opts.skip_blocked:
                    continue
                break
            del cache[r.id]
            self._keys.drop(r.id)
            taken.append(i)
            hit = r.hit_tokens * self.kv
            n_pe, n_de = pe_node[p], view.de_node[d]
            pe_read = self._side(hit, snic_s, n_pe, n_de)
            snic_s[n_pe] += pe_read / self.snic_rate[n_pe]
            snic_s[n_de] += (hit - pe_read) / self.snic_rate[n_de]
            pe_s[p] += c
            least = min(pe_s)
            self._book(view, p, d, r, pe_read)
            out.append(Assignment(r.id, view.pe_names[p], view.de_names[d], pe_read, hit - pe_read))
        if fast:
            self._keys.taken(taken)
        if opts.split_reads and opts.lp and len(out) > 1 and time.perf_counter() < deadline:
            out = self._rebalance(out, state, view, deadline) or out
        self.tick_latencies_s.append(time.perf_counter() - started)
        return out

    def _compute_s(self, r: Request) -> float:
        c = self._compute_cache.get(r.id)
        if c is None:
            c = self._compute_cache[r.id] = request_compute_s(self.llm, r.hit_tokens, r.new_tokens)
        return c

    def _side(self, hit: int, snic_s: dict[str, float], n_pe: str, n_de: str) -> int:
        """PE-side bytes: the split that equalises both SNICs' finish, or the side that finishes first."""
        if not hit:
            return 0
        s1, s2 = self.snic_rate[n_pe], self.snic_rate[n_de]
        cap = min(hit, self.buffer_bytes)
        if self.options.split_reads:
            a = (s1 * s2 * (snic_s[n_de] - snic_s[n_pe]) + s1 * hit) / (s1 + s2)
            unit = self.split_unit if hit % self.split_unit == 0 else self.kv
            return int(min(max(round(a / unit) * unit, 0), cap))
        pe_finish = snic_s[n_pe] + hit / s1
        de_finish = snic_s[n_de] + hit / s2
        return hit if pe_finish <= de_finish and cap == hit else 0

    def _book(self, view: SchedulerView, p: int, d: int, r: Request, pe_read: int) -> None:
        """Update the view as the paper's `assign_one` does, with the read split between nodes."""
        view.pe_tokens[p] += r.new_tokens
        view.pe_seqs[p] += 1
        view.de_tokens[d] += r.context_tokens
        view.de_seqs[d] += 1
        view.de_free_hbm[d] -= r.context_tokens * self.kv
        view.group_tokens[view.de_group[d]] += r.context_tokens
        pe_tokens = pe_read // self.kv
        queues = view.read_queue_tokens
        queues[view.pe_node[p]] = queues.get(view.pe_node[p], 0) + pe_tokens
        queues[view.de_node[d]] = queues.get(view.de_node[d], 0) + r.hit_tokens - pe_tokens

    def _rebalance(self, out: list[Assignment], state: ClusterState, view: SchedulerView,
                   deadline: float) -> list[Assignment] | None:
        assert self._lp is not None  # built whenever options ask for the LP with split reads, as decide checks
        gb = 1e-9
        engines = state.engines  # looked up per assignment: a dict of every engine's node cost more
        rows = []
        for a in out:
            hit = a.pe_read_bytes + a.de_read_bytes
            rows.append((engines[a.pe].node, engines[a.de].node, hit * gb, min(hit, self.buffer_bytes) * gb))
        queue_gb = {n: q * gb for n, q in state.read_queue_bytes.items()}
        values = self._lp.solve(rows, queue_gb, self._rate_gb, min(1.0, max(0.001, deadline - time.perf_counter())))
        if values is None or time.perf_counter() > deadline:
            return None
        fixed = []
        for a, v in zip(out, values):
            hit = a.pe_read_bytes + a.de_read_bytes
            unit = self.split_unit if hit % self.split_unit == 0 else self.kv
            pe = int(min(max(round(v / gb / unit) * unit, 0), min(hit, self.buffer_bytes)))
            fixed.append(Assignment(a.request, a.pe, a.de, pe, hit - pe))
        return fixed
