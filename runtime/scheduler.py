"""The global scheduler of a real run: a `Policy` (or a replayed `Plan`) deciding for live engines.

It runs in the driving process (`dualpath run`, `run_real`), apart from the engine processes, which
it reaches over authenticated control connections.
Turns arrive with `submit` and wait, FIFO. Each tick (at most every `interval_s`, sooner when a
turn arrives or ends) the scheduler collects every engine's report, as the paper's group leaders
give it (per engine the unfinished requests `seq_e` and tokens `tok_e`, the node's storage read
queue, free DE HBM), adds what it has dispatched that the engines have not yet reported, and hands
the policy the waiting requests and that `ClusterState`. Each `Assignment` it returns goes to its PE
with the DE and the number of hit blocks to read through each side (a split read when both are
non-zero); the turn's reply (tokens and timestamps) completes the turn's future.

Faults: a turn whose engines fail (a connection lost, an engine that stops answering) goes back to
the queue, in its original FIFO place, under a fresh attempt id; an engine that does not answer its
report is marked dead and never gets work again. A PE runs one request per forward pass in arrival
order, so a policy's `form_batch` is not consulted here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from dualpath.cluster import ClusterSpec, Role
from dualpath.errors import DualpathError, InputError
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment, Plan
from dualpath.policy import ClusterState, EngineState, ExecutionOptions, Policy
from dualpath.request import Request
from dualpath.runtime.client import ClusterClient, TurnResult
from dualpath.runtime.control import ControlError

LOG = logging.getLogger("dualpath.runtime.scheduler")
BEFORE_READ = (None, "waiting", "admitted")  # PE phases whose reads are not yet in a node's queue
BEFORE_DECODE = BEFORE_READ + ("reading", "prefilling")


@dataclass
class EngineHandle:
    """Where an engine answers and what it is in the cluster model."""

    name: str
    role: Role
    node: str
    group: int
    address: tuple[str, int]
    alive: bool = True


@dataclass(frozen=True)
class TurnOutcome:
    request: str
    result: TurnResult
    arrived_at: float  # when the turn reached the scheduler (time.time())
    attempts: int
    assignment: Assignment


@dataclass
class _Ticket:
    request: Request
    tokens: list[int]
    arrived_at: float
    seq: int
    future: Future = field(default_factory=Future)
    attempts: int = 0
    attempt_id: str = ""
    assignment: Assignment | None = None
    pe_blocks: int = 0


class Scheduler:
    """Runs `policy` over live engines; `submit` a turn, get a `Future` of its `TurnOutcome`."""

    def __init__(self, engines: Sequence[EngineHandle], policy: Policy, client: ClusterClient, *,
                 block_tokens: int, hit_blocks: Callable[[list[int]], int], interval_s: float = 0.05,
                 health_timeout_s: float = 10.0, max_attempts: int = 4, pe_free_hbm_bytes: int = 1 << 40,
                 chunk_tokens: int | None = None) -> None:
        self.engines = {e.name: e for e in engines}
        self.policy, self.client = policy, client
        self.block_tokens, self.hit_blocks = block_tokens, hit_blocks
        self.kv = policy.llm.kv_bytes_per_token
        self.interval_s, self.health_timeout_s = interval_s, health_timeout_s
        self.max_attempts, self.pe_free_hbm_bytes, self.chunk_tokens = max_attempts, pe_free_hbm_bytes, chunk_tokens
        self.origin = time.time()
        self.pending: dict[str, _Ticket] = {}
        self.in_flight: dict[str, _Ticket] = {}
        self.num_ticks = 0
        self.last_reports: dict[str, dict] = {}  # each engine's latest report
        self.retried: list[tuple[str, str]] = []  # (request, reason)
        self._seq = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    # -- public ----------------------------------------------------------------------------------
    def start(self, origin: float | None = None) -> Scheduler:
        self.origin = time.time() if origin is None else origin
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        for ticket in [*self.pending.values(), *self.in_flight.values()]:
            if not ticket.future.done():
                ticket.future.set_exception(DualpathError(f"{ticket.request.id}: scheduler closed"))

    def submit(self, request_id: str, agent: int, turn: int, tokens: list[int], max_new_tokens: int) -> Future:
        hit = self.hit_blocks(tokens) * self.block_tokens
        now = time.time()
        request = Request(request_id, agent, turn, hit, len(tokens) - hit, max_new_tokens, now - self.origin)
        with self._cond:
            self._seq += 1
            ticket = _Ticket(request, list(tokens), now, self._seq)
            self.pending[request_id] = ticket
            self._cond.notify_all()
        return ticket.future

    def alive(self, name: str) -> bool:
        return self.engines[name].alive

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while not self._closed and not self.pending:
                    self._cond.wait()
                if self._closed:
                    return
            time.sleep(max(0.0, last + self.interval_s - time.monotonic()))
            last = time.monotonic()
            try:
                self._tick()
            except Exception as exc:
                LOG.exception("scheduler tick failed")
                with self._cond:
                    failed, self.pending = list(self.pending.values()), {}
                for ticket in failed:
                    ticket.future.set_exception(exc)
            with self._cond:  # wait for news (an arrival, an end) or the next tick
                if not self._closed and self.pending:
                    self._cond.wait(self.interval_s)

    def _tick(self) -> None:
        reports = self._collect()
        self._fail_if_no_engines()
        with self._cond:
            waiting = sorted(self.pending.values(), key=lambda t: (t.arrived_at, t.seq))
            if not waiting:
                return
            state = self._snapshot(reports)
        self.policy.observe(state)
        assignments = self.policy.schedule([t.request for t in waiting], state)
        self.num_ticks += 1
        for a in assignments:
            self._dispatch(a)

    def _collect(self) -> dict[str, dict]:
        reports = {}
        for handle in list(self.engines.values()):
            if not handle.alive:
                continue
            try:
                reports[handle.name] = self.client.channel(handle.address).call(
                    "stats", timeout_s=self.health_timeout_s)[0]
            except ControlError as exc:
                self._mark_dead(handle, str(exc))
        self.last_reports.update(reports)
        return reports

    def _mark_dead(self, handle: EngineHandle, reason: str) -> None:
        if handle.alive:
            LOG.warning("engine %s stopped answering (%s): no more work for it", handle.name, reason)
        handle.alive = False

    def _fail_if_no_engines(self) -> None:
        for role in Role:
            if not any(h.alive and h.role is role for h in self.engines.values()):
                with self._cond:
                    failed, self.pending = list(self.pending.values()), {}
                for ticket in failed:
                    ticket.future.set_exception(DualpathError(f"{ticket.request.id}: no {role.value} engine answers"))
                return

    def _snapshot(self, reports: dict[str, dict]) -> ClusterState:
        """The engines' reports plus the dispatched work they have not reported yet (caller holds the lock)."""
        queues: dict[str, float] = {}
        for name, report in reports.items():
            node = self.engines[name].node
            queues[node] = queues.get(node, 0.0) + report.get("read_queue_bytes", 0)
        states = {}
        for handle in self.engines.values():
            report = reports.get(handle.name, {})
            known = report.get("requests", {})
            mine = [t for t in self.in_flight.values()
                    if (t.assignment.pe if handle.role is Role.PREFILL else t.assignment.de) == handle.name]
            if handle.role is Role.PREFILL:
                active = [t for t in mine if known.get(t.attempt_id) in BEFORE_DECODE]
                tokens, free = sum(t.request.new_tokens for t in active), self.pe_free_hbm_bytes
                for t in mine:
                    if known.get(t.attempt_id) in BEFORE_READ:
                        a, de_node = t.assignment, self.engines[t.assignment.de].node
                        queues[handle.node] = queues.get(handle.node, 0.0) + a.pe_read_bytes
                        queues[de_node] = queues.get(de_node, 0.0) + a.de_read_bytes
            else:
                active = mine
                tokens = sum(t.request.context_tokens for t in mine)
                unseen = sum(t.request.context_tokens * self.kv for t in mine if t.attempt_id not in known)
                free = int(report.get("free_hbm_bytes", 0)) - unseen
            states[handle.name] = EngineState(handle.name, handle.role, handle.node, handle.group, len(active),
                                              tokens, max(0, free), handle.alive)
        nodes = sorted({h.node for h in self.engines.values()})
        return ClusterState(time.time() - self.origin, states,
                            {n: int(queues.get(n, 0.0)) // self.kv for n in nodes},
                            {n: queues.get(n, 0.0) for n in nodes})

    # -- dispatch and completion -------------------------------------------------------------------
    def _dispatch(self, a: Assignment) -> None:
        with self._cond:
            ticket = self.pending.get(a.request)
            pe, de = self.engines.get(a.pe), self.engines.get(a.de)
            if ticket is None:
                raise InputError(f"policy {self.policy.name}", f"assignment for {a.request}, which is not waiting")
            if pe is None or de is None or pe.role is not Role.PREFILL or de.role is not Role.DECODE:
                raise InputError(f"policy {self.policy.name}", f"{a.request}: unknown engines {a.pe}/{a.de}")
            if not (pe.alive and de.alive):
                LOG.warning("policy %s assigned %s to a dead engine; it waits", self.policy.name, a.request)
                return
            del self.pending[a.request]
            hit_blocks = ticket.request.hit_tokens // self.block_tokens
            total = a.pe_read_bytes + a.de_read_bytes
            ticket.pe_blocks = round(hit_blocks * a.pe_read_bytes / total) if total else hit_blocks
            ticket.assignment = a
            ticket.attempt_id = a.request if not ticket.attempts else f"{a.request}~{ticket.attempts}"
            self.in_flight[ticket.attempt_id] = ticket
        threading.Thread(target=self._run, args=(ticket, pe, de), name=f"turn-{ticket.attempt_id}",
                         daemon=True).start()

    def _run(self, ticket: _Ticket, pe: EngineHandle, de: EngineHandle) -> None:
        try:
            result = self.client.submit(
                pe.address, de.address, ticket.tokens, ticket.request.output_tokens, path="split",
                pe_blocks=ticket.pe_blocks, request=ticket.attempt_id, chunk_tokens=self.chunk_tokens,
                layerwise=self.policy.execution.layerwise)
        except ControlError as exc:
            self._failed(ticket, pe, de, exc)
            return
        except BaseException as exc:  # noqa: BLE001 -- a bug: the turn's waiter re-raises it
            with self._cond:
                self.in_flight.pop(ticket.attempt_id, None)
                self._cond.notify_all()
            ticket.future.set_exception(exc)
            return
        outcome = TurnOutcome(ticket.request.id, result, ticket.arrived_at, ticket.attempts + 1, ticket.assignment)
        with self._cond:
            self.in_flight.pop(ticket.attempt_id, None)
            self._cond.notify_all()
        ticket.future.set_result(outcome)

    def _failed(self, ticket: _Ticket, pe: EngineHandle, de: EngineHandle, exc: ControlError) -> None:
        """Requeue the turn if one of its engines is gone; otherwise the error is the turn's own."""
        for handle in (pe, de):
            try:
                self.client.channel(handle.address).call("stats", timeout_s=self.health_timeout_s)
            except ControlError as probe:
                self._mark_dead(handle, str(probe))
        engines_failed = not (pe.alive and de.alive)
        with self._cond:
            self.in_flight.pop(ticket.attempt_id, None)
            if engines_failed and ticket.attempts + 1 < self.max_attempts and not self._closed:
                ticket.attempts += 1
                ticket.request = self._refreshed(ticket)
                self.pending[ticket.request.id] = ticket
                self.retried.append((ticket.request.id, str(exc)))
                LOG.warning("%s failed on %s/%s (%s); rescheduling", ticket.attempt_id, pe.name, de.name, exc)
                self._cond.notify_all()
                return
            self._cond.notify_all()
        ticket.future.set_exception(exc)

    def _refreshed(self, ticket: _Ticket) -> Request:
        """The hit may have grown: the failed attempt may have persisted some of the prompt's blocks."""
        r = ticket.request
        hit = self.hit_blocks(ticket.tokens) * self.block_tokens
        return Request(r.id, r.agent, r.turn, hit, len(ticket.tokens) - hit, r.output_tokens, r.arrival_s)


class PlanReplay(Policy):
    """Replays a `Plan` in its order: waiting requests go where the plan says, sorted by the plan's
    per-PE `order`; each side reads the plan's share of the request's actual hit. An engine that no
    longer answers is replaced by the live engine of its role with the least work."""

    name = "plan"

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, plan: Plan, block_tokens: int = 64,
                 execution: ExecutionOptions | None = None) -> None:
        super().__init__(cluster, llm, block_tokens)
        self.plan = plan
        self.name = f"plan:{plan.solver}"
        self.execution = execution or ExecutionOptions()
        self._by_request = plan.by_request()
        self._rank = {a.request: (a.order, i) for i, a in enumerate(plan.assignments)}

    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        missing = [r.id for r in pending if r.id not in self._by_request]
        if missing:
            raise InputError(f"plan {self.plan.solver}", f"no assignment for request {missing[0]}")
        out = []
        for r in sorted(pending, key=lambda r: self._rank[r.id]):
            a = self._by_request[r.id]
            hit = r.hit_tokens * self.llm.kv_bytes_per_token
            share = a.pe_read_bytes / a.read_bytes if a.read_bytes else 1.0
            pe_bytes = round(hit * share)
            out.append(Assignment(r.id, self._live(a.pe, Role.PREFILL, state), self._live(a.de, Role.DECODE, state),
                                  pe_bytes, hit - pe_bytes, a.order, a.batch))
        return out

    @staticmethod
    def _live(name: str, role: Role, state: ClusterState) -> str:
        engine = state.engines.get(name)
        if engine is not None and engine.alive:
            return name
        live = state.of_role(role)
        if not live:
            return name
        return min(live, key=lambda e: (e.num_tokens, e.name)).name
