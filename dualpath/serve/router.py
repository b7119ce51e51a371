"""The service's scheduler adapter: engine registry, reported state, prefix index and the online scheduler.

One `Router` per service; every public method takes its lock, so the HTTP layer may call it from any
thread. Between reports the engines' load is estimated as the last report plus what was routed since
(the paper's group leaders report periodically; without the estimate every route between two reports
would see the same least-loaded PE). A report replaces an engine's numbers; finishing or cancelling a
request removes its share only from numbers no report has replaced since it was routed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dualpath.cluster import ClusterSpec, Role
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import ClusterState, EngineState
from dualpath.request import Request
from dualpath.serve.blocks import BlockHash, StoredBlocks
from dualpath.serve.registry import ConflictError, EngineRegistry, NotFoundError, RegisteredEngine, ServeError
from dualpath.solver.hbm import default_free_hbm_bytes
from dualpath.solver.online import OnlineOptions, OnlineScheduler
from dualpath.solver.problem import request_compute_s

if TYPE_CHECKING:
    from dualpath.serve.metrics import ServeMetrics


@dataclass(frozen=True)
class EngineReport:
    """One engine's line of a group leader's report (the paper's seq_e, tok_e, plus free HBM)."""

    engine: str
    unfinished_requests: int
    unfinished_tokens: int
    free_hbm_bytes: int | None = None


@dataclass
class Tracked:
    """A request the service knows: queued (waiting for a tick that can place it) or routed."""

    request: Request
    assignment: Assignment | None = None
    predicted_ttft_s: float = 0.0
    binding: str = ""
    generations: tuple[int, int, int, int] = (0, 0, 0, 0)  # report generations of PE, DE, their nodes


class Router:
    """Routes requests to (PE, DE, read side) with `OnlineScheduler`, from reports and KV events."""

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64,
                 options: OnlineOptions | None = None, metrics: ServeMetrics | None = None):
        self.cluster, self.llm, self.block_tokens = cluster, llm, block_tokens
        self.lock = threading.RLock()
        self.scheduler = OnlineScheduler(cluster, llm, block_tokens, options)
        self.registry = EngineRegistry(cluster)
        self.blocks = StoredBlocks()
        self.metrics = metrics
        self.kv = llm.kv_bytes_per_token
        self.snic_bytes_per_s = cluster.node.snic_bytes_per_s
        self.default_free_hbm = default_free_hbm_bytes(cluster, llm)
        self.slot_node = {e.name: e.node for role in Role for e in cluster.engines(role)}  # in the model's order
        self.engines: dict[str, EngineState] = {}  # model slot -> reported + routed-since estimate
        self.queue_bytes: dict[str, float] = dict.fromkeys(cluster.all_nodes(), 0.0)
        self.requests: dict[str, Tracked] = {}
        self._generation: dict[str, int] = {}  # per slot or node: reports received
        self._started = time.monotonic()
        self._fallbacks_seen = 0

    # ---- engines -------------------------------------------------------------------------------
    def register(self, engines: Sequence[tuple[str, str, Role, str | None]]) -> list[RegisteredEngine]:
        """Register (id, url, role, host) engines, all or none: one that does not fit undoes the rest."""
        with self.lock:
            done: list[RegisteredEngine] = []
            fresh = [e[0] for e in engines if e[0] not in self.registry.by_id]
            try:
                done = [self.registry.register(*e) for e in engines]
            except ServeError:
                for engine_id in fresh:
                    if engine_id in self.registry.by_id:
                        self.registry.unregister(engine_id)
                raise
            for e in done:
                if e.slot.name not in self.engines:
                    self.engines[e.slot.name] = EngineState(e.slot.name, e.role, e.slot.node, e.slot.group, 0, 0,
                                                            self.default_free_hbm)
            self._reorder()
            return done

    def unregister(self, engine_id: str) -> RegisteredEngine:
        with self.lock:
            engine = self.registry.unregister(engine_id)
            self.engines.pop(engine.slot.name, None)
            self.blocks.cleared(engine_id)
            self._reorder()
            return engine

    def _reorder(self) -> None:
        # The scheduler's view cache keys on the snapshot's engine order: keep it the model's order.
        order = list(self.slot_node)
        self.engines = dict(sorted(self.engines.items(), key=lambda kv: order.index(kv[0])))

    # ---- reports and KV events -----------------------------------------------------------------
    def report(self, engines: Sequence[EngineReport], read_queue_bytes: dict[str, float],
               finished: Sequence[str] = ()) -> list[str]:
        """A group leader's report: its engines' load, its nodes' read queues and the requests finished since
        its last report (one call instead of one per request); validated whole before any of it applies.
        Finished ids the service no longer tracks (cancelled, already done) are skipped. Returns the
        requests the report let route."""
        with self.lock:
            slots = [self.registry.get(r.engine).slot.name for r in engines]
            nodes = {self.registry.node(host): float(q) for host, q in read_queue_bytes.items()}
            for request_id in finished:
                tracked = self.requests.get(request_id)
                if tracked is not None and tracked.assignment is not None:
                    self._release(self.requests.pop(request_id))
                    if self.metrics is not None:
                        self.metrics.outcome("done")
            for slot, r in zip(slots, engines):
                old = self.engines[slot]
                free = old.free_hbm_bytes if r.free_hbm_bytes is None else r.free_hbm_bytes
                self.engines[slot] = dataclasses.replace(old, num_seqs=r.unfinished_requests,
                                                         num_tokens=r.unfinished_tokens, free_hbm_bytes=free)
                self._generation[slot] = self._generation.get(slot, 0) + 1
            for node, q in nodes.items():
                self.queue_bytes[node] = q
                self._generation[node] = self._generation.get(node, 0) + 1
            return [a.request for a in self._tick()] if self.scheduler.pending else []

    def kv_stored(self, engine_id: str, block_hashes: Sequence[BlockHash], parent: BlockHash | None) -> int:
        with self.lock:
            self.registry.get(engine_id)
            return self.blocks.stored(engine_id, block_hashes, parent)

    def kv_removed(self, engine_id: str, block_hashes: Sequence[BlockHash] | None) -> int:
        """`BlockRemoved` (hashes) or, with None, `AllBlocksCleared`."""
        with self.lock:
            self.registry.get(engine_id)
            if block_hashes is None:
                return self.blocks.cleared(engine_id)
            return self.blocks.removed(engine_id, block_hashes)

    # ---- requests ------------------------------------------------------------------------------
    def route(self, request_id: str, prompt_tokens: int, output_tokens: int, hit_tokens: int | None = None,
              block_hashes: Sequence[BlockHash] | None = None, agent: int = 0, turn: int = 0) -> Tracked:
        """Decide one request now, or queue it (its `binding` says why) for a later tick."""
        with self.lock:
            started = time.perf_counter()
            if request_id in self.requests:
                raise ConflictError(f"request {request_id!r} is already {self.status_of(self.requests[request_id])}")
            if hit_tokens is None:
                hit_tokens = self.blocks.match(block_hashes or ()) * self.block_tokens
            if hit_tokens >= prompt_tokens:
                hit_tokens = prompt_tokens - 1  # the last prompt token is always computed (it yields the first output)
            for role in Role:
                if not any(e.role is role for e in self.engines.values()):
                    raise ConflictError(f"no {role.value} engine is registered (POST /v1/engines first)")
            r = Request(request_id, agent, turn, max(0, hit_tokens), prompt_tokens - max(0, hit_tokens), output_tokens,
                        arrival_s=self._now())
            tracked = self.requests[request_id] = Tracked(r)
            self.scheduler.submit([r])
            self._tick()
            if tracked.assignment is None:
                tracked.binding = self._why_waiting(r)
            if self.metrics is not None:
                self.metrics.decided(time.perf_counter() - started, tracked.assignment is not None)
            return tracked

    def done(self, request_id: str) -> Tracked:
        """The request finished: forget it (its load leaves with its engines' next report)."""
        with self.lock:
            tracked = self.get(request_id)
            if tracked.assignment is None:
                raise ConflictError(f"request {request_id!r} is queued, not routed: cancel it instead")
            self._release(self.requests.pop(request_id))
            if self.metrics is not None:
                self.metrics.outcome("done")
            return tracked

    def cancel(self, request_id: str) -> Tracked:
        """Withdraw a queued request or release a routed one's estimated load."""
        with self.lock:
            tracked = self.requests.pop(request_id, None)
            if tracked is None:
                raise NotFoundError("request", request_id)
            if tracked.assignment is None:
                self.scheduler.cancel(request_id)
            else:
                self._release(tracked)
            if self.metrics is not None:
                self.metrics.outcome("cancelled")
            return tracked

    def get(self, request_id: str) -> Tracked:
        with self.lock:
            tracked = self.requests.get(request_id)
            if tracked is None:
                raise NotFoundError("request", request_id)
            return tracked

    @staticmethod
    def status_of(tracked: Tracked) -> str:
        return "routed" if tracked.assignment is not None else "queued"

    # ---- inside ----------------------------------------------------------------------------------
    def _now(self) -> float:
        return time.monotonic() - self._started

    def _tick(self) -> list[Assignment]:
        tokens = {n: int(q // self.kv) for n, q in self.queue_bytes.items()}
        self.scheduler.update(ClusterState(self._now(), self.engines, tokens, self.queue_bytes))
        out = self.scheduler.tick()
        for group in range(self.cluster.num_pe // self.cluster.pe_group_gpus):
            self.scheduler.fetch(group)  # the service answers the route call; nobody fetches the outbox
        for a in out:
            self._place(a)
        if self.metrics is not None and self.scheduler.num_fallbacks != self._fallbacks_seen:
            self.metrics.fallbacks(self.scheduler.num_fallbacks - self._fallbacks_seen)
            self._fallbacks_seen = self.scheduler.num_fallbacks
        return out

    def _place(self, a: Assignment) -> None:
        tracked = self.requests[a.request]
        r = tracked.request
        pe, de = self.engines[a.pe], self.engines[a.de]
        rate = self.snic_bytes_per_s
        finish = {
            f"storage read on {self.registry.host_of_node[pe.node]}'s storage NIC":
                (self.queue_bytes[pe.node] + a.pe_read_bytes) / rate if a.pe_read_bytes else 0.0,
            f"storage read on {self.registry.host_of_node[de.node]}'s storage NIC":
                (self.queue_bytes[de.node] + a.de_read_bytes) / rate if a.de_read_bytes else 0.0,
            f"prefill compute on {self.registry.by_slot[a.pe].id}":
                pe.num_tokens * self.scheduler.compute_s_per_token + request_compute_s(self.llm, r.hit_tokens,
                                                                                       r.new_tokens),
        }
        # Layerwise prefill overlaps reading and computing: the later of the two bounds the first token.
        tracked.binding, tracked.predicted_ttft_s = max(finish.items(), key=lambda kv: kv[1])
        tracked.assignment = a
        tracked.generations = (self._generation.get(a.pe, 0), self._generation.get(a.de, 0),
                               self._generation.get(pe.node, 0), self._generation.get(de.node, 0))
        self._book(tracked, +1)
        if self.metrics is not None:
            self.metrics.placed(a.pe_read_bytes, a.de_read_bytes, tracked.predicted_ttft_s)

    def _release(self, tracked: Tracked) -> None:
        self._book(tracked, -1)

    def _book(self, tracked: Tracked, sign: int) -> None:
        a, r = tracked.assignment, tracked.request
        assert a is not None  # only routed requests carry load
        gens = (self._generation.get(a.pe, 0), self._generation.get(a.de, 0))
        for slot, gen, tokens in ((a.pe, gens[0], r.new_tokens), (a.de, gens[1], r.context_tokens)):
            e = self.engines.get(slot)
            if e is None or (sign < 0 and gen != tracked.generations[0 if slot == a.pe else 1]):
                continue  # gone, or a report since the route already counts (or no longer counts) it
            hbm = 0 if e.role is Role.PREFILL else sign * r.context_tokens * self.kv
            self.engines[slot] = dataclasses.replace(
                e, num_seqs=max(0, e.num_seqs + sign), num_tokens=max(0, e.num_tokens + sign * tokens),
                free_hbm_bytes=max(0, e.free_hbm_bytes - hbm))
        pe_node, de_node = self.slot_node[a.pe], self.slot_node[a.de]
        for node, gen_at, nbytes in ((pe_node, tracked.generations[2], a.pe_read_bytes),
                                     (de_node, tracked.generations[3], a.de_read_bytes)):
            if sign > 0 or self._generation.get(node, 0) == gen_at:
                self.queue_bytes[node] = max(0.0, self.queue_bytes[node] + sign * nbytes)

    def _why_waiting(self, r: Request) -> str:
        opts = self.scheduler.options
        pes = [e.num_tokens * self.scheduler.compute_s_per_token for e in self.engines.values()
               if e.role is Role.PREFILL]
        compute_s = request_compute_s(self.llm, r.hit_tokens, r.new_tokens)
        if opts.pe_horizon_s is not None and min(pes) > opts.pe_horizon_s and compute_s > opts.short_compute_s:
            return (f"prefill horizon: every PE has over {opts.pe_horizon_s:g} s of compute queued "
                    f"(least {min(pes):.2f} s) and this request computes {compute_s:.2f} s")
        need = r.context_tokens * self.kv
        most = max((e.free_hbm_bytes for e in self.engines.values() if e.role is Role.DECODE), default=0)
        if most < need:
            return (f"decode HBM: no DE has {need:,} bytes free for the {r.context_tokens:,}-token context "
                    f"(most {most:,})")
        return f"window: behind {len(self.scheduler.pending) - 1} waiting requests"
