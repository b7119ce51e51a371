"""The global scheduler of a real run: a `Policy` (or a replayed `Plan`) deciding for live engines.

It runs in the driving process behind an authenticated control server, and the engines come to it:
each group's leader (a `GroupLeader` thread in the group's first live engine) sends `Fetch` every tick
with its members' reports (per engine `seq_e`, `tok_e`, the node's read queue, free DE HBM), gets the
assignments filed for its group since its last fetch, runs them and reports each `Done` or `Failed`.
Turns wait FIFO; each tick (at most every `interval_s`) the policy gets the waiting requests and a
`ClusterState` of the fresh reports plus the work handed out that they do not show yet, and each
`Assignment` (PE, DE, hit blocks read through each side) is filed in its PE group's outbox. A PE asks
for each forward batch (`FormBatch`: its queue of read requests) and gets the policy's `form_batch`,
the rule the simulator applies. Faults: an engine whose leader's connection drops or stops fetching,
or that stops answering its leader, is dead for good; one without a report in `health_timeout_s` gets
no new work. A lost leader's fetched turns go back to the queue in their FIFO place under a fresh
attempt id, and the group's next live engine leads it; a failed turn is requeued when a probe finds
one of its engines gone.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from dualpath.cluster import Role
from dualpath.errors import DualpathError, InputError, SpecError
from dualpath.plan import Assignment
from dualpath.policy import Policy
from dualpath.request import Request
from dualpath.runtime.engines import messages as wire
from dualpath.runtime.scheduling import scheduler_state as state_of
from dualpath.runtime.scheduling.client import ClusterClient
from dualpath.runtime.scheduling.outbox import Outbox
from dualpath.runtime.scheduling.plan_replay import PlanReplay
from dualpath.runtime.scheduling.scheduler_state import EngineHandle, TurnOutcome, TurnTicket
from dualpath.runtime.transports.auth import DEFAULT_BIND_HOST
from dualpath.runtime.transports.control import Channel, ControlError, ControlServer, Reply

__all__ = ["EngineHandle", "PlanReplay", "Scheduler", "TurnOutcome", "TurnTicket"]
LOG = logging.getLogger("dualpath.runtime.scheduling.scheduler")
STANDBY_RETRY_S = 0.25  # how soon a member that does not lead asks again


class Scheduler:
    """Runs `policy` over live engines; `submit` a turn, get a `Future` of its `TurnOutcome`."""

    def __init__(self, engines: Sequence[EngineHandle], policy: Policy, client: ClusterClient | None, *,
                 block_tokens: int, hit_blocks: Callable[[list[int]], int], interval_s: float = 0.05,
                 health_timeout_s: float = 10.0, max_attempts: int = 4, pe_free_hbm_bytes: int = 1 << 40,
                 chunk_tokens: int | None = None, secret: bytes | str | None = None,
                 host: str = DEFAULT_BIND_HOST, port: int = 0) -> None:
        self.engines = {e.name: replace(e) for e in engines}  # own copies: whom this run found dead
        self.policy, self.client = policy, client
        self.block_tokens, self.hit_blocks = block_tokens, hit_blocks
        self.kv = policy.llm.kv_bytes_per_token
        self.interval_s, self.health_timeout_s = interval_s, health_timeout_s
        self.max_attempts, self.pe_free_hbm_bytes, self.chunk_tokens = max_attempts, pe_free_hbm_bytes, chunk_tokens
        self.secret = secret if secret is not None else getattr(client, "secret", None)
        self.host, self.port = host, port
        self.origin, self.started_at = time.time(), time.monotonic()
        self.pending: dict[str, TurnTicket] = {}
        self.in_flight: dict[str, TurnTicket] = {}  # by attempt id: filed in an outbox, or fetched
        self.outbox = Outbox()  # per group, until its leader fetches
        self.num_ticks = 0
        self.last_reports: dict[str, dict] = {}  # each engine's latest report
        self.report_at: dict[str, float] = {}  # when it came (time.monotonic())
        self.retried: list[tuple[str, str]] = []  # (request, reason)
        self.address: tuple[str, int] | None = None  # once started
        self._server: ControlServer | None = None
        self._seq = itertools.count(1)
        self._cond, self._closed, self._policy_lock = threading.Condition(), False, threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    # -- public ----------------------------------------------------------------------------------
    def start(self, origin: float | None = None) -> Scheduler:
        """Listen for group leaders (`address`) and start ticking."""
        if self.secret is None:
            raise SpecError("scheduler", "secret", None, "the cluster secret (or a client that holds it)")
        self.origin, self.started_at = time.time() if origin is None else origin, time.monotonic()
        self._server = ControlServer("scheduler", self.secret, self._handle, wire.decode_message, self.host, self.port)
        self.address = self._server.listen()
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._server is not None:
            self._thread.join(timeout=5)
            self._server.close()
        with self._cond:
            left, self.pending, self.in_flight = [*self.pending.values(), *self.in_flight.values()], {}, {}
            self.outbox.clear()
        for ticket in left:
            if not ticket.future.done():
                ticket.future.set_exception(DualpathError(f"{ticket.request.id}: scheduler closed"))

    def submit(self, request_id: str, agent: int, turn: int, tokens: list[int], max_new_tokens: int):
        hit = self.hit_blocks(tokens) * self.block_tokens
        now = time.time()
        request = Request(request_id, agent, turn, hit, len(tokens) - hit, max_new_tokens, now - self.origin)
        with self._cond:
            ticket = TurnTicket(request, list(tokens), now, next(self._seq))
            self.pending[request_id] = ticket
            self._cond.notify_all()
        return ticket.future

    def alive(self, name: str) -> bool:
        """Whether `name` may get work now: it never stopped answering and its report is fresh."""
        return self._usable(self.engines[name], time.monotonic())

    def leader(self, group_key: str) -> str | None:
        """The group's leader: its first engine (in the order given) that has not stopped answering."""
        return next((h.name for h in self.engines.values() if h.group_key == group_key and h.alive), None)

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while not self._closed and not self.pending and not self.in_flight:
                    self._cond.wait()
                if self._closed:
                    return
            time.sleep(max(0.0, last + self.interval_s - time.monotonic()))
            try:
                if self._tick():  # as the simulator: only a tick that ran the policy delays the next
                    last = time.monotonic()
            except Exception as exc:
                LOG.exception("scheduler tick failed")
                with self._cond:
                    failed, self.pending = list(self.pending.values()), {}
                for ticket in failed:
                    ticket.future.set_exception(exc)
            with self._cond:  # wait for news (an arrival, a report) or the next tick
                if not self._closed:
                    self._cond.wait(self.interval_s)

    def _tick(self) -> bool:
        """Run the policy on the waiting turns (True), or not: none wait, or no engine can take them."""
        now = time.monotonic()
        with self._cond:
            stale = self.outbox.stale_leaders(now, self.health_timeout_s)
        for channel in stale:  # closing it runs `_channel_closed`
            channel.info["lost"] = f"no fetch within {self.health_timeout_s} s"
            channel.close()
        role = state_of.silent_role(self.engines, self.report_at, now - self.started_at > self.health_timeout_s)
        with self._cond:  # its turns cannot run: they fail
            failed, self.pending = (list(self.pending.values()), {}) if role else ([], self.pending)
        for ticket in failed:
            ticket.future.set_exception(DualpathError(f"{ticket.request.id}: no {role and role.value} engine answers"))
        with self._cond:
            waiting = sorted(self.pending.values(), key=lambda t: (t.arrived_at, t.seq))
            usable = {n for n, h in self.engines.items() if self._usable(h, now)}
            if not waiting or {self.engines[n].role for n in usable} != {h.role for h in self.engines.values()}:
                return False  # nothing to do, or a role has no engine to take it
            if now - self.started_at <= self.health_timeout_s and any(
                    h.alive and h.name not in self.report_at for h in self.engines.values()):
                return False  # starting: a view without some engines would give all the work to the first
            reports = {n: r for n, r in self.last_reports.items() if n in usable}
            state = state_of.snapshot(self.engines, self.in_flight, reports, lambda h: h.name in usable, self.kv,
                             self.pe_free_hbm_bytes, time.time() - self.origin)
        with self._policy_lock:
            self.policy.observe(state)
            assignments = self.policy.schedule([t.request for t in waiting], state)
        self.num_ticks += 1
        for a in assignments:
            self._dispatch(a)
        return True

    def _usable(self, handle: EngineHandle, now: float) -> bool:
        at = self.report_at.get(handle.name)
        return handle.alive and at is not None and now - at <= self.health_timeout_s

    def _dispatch(self, a: Assignment) -> None:
        """File the assignment in its PE group's outbox, where the group leader fetches it."""
        with self._cond:
            ticket = self.pending.get(a.request)
            pe, de = self.engines.get(a.pe), self.engines.get(a.de)
            if ticket is None:
                raise InputError(f"policy {self.policy.name}", f"assignment for {a.request}, which is not waiting")
            if pe is None or de is None or pe.role is not Role.PREFILL or de.role is not Role.DECODE:
                raise InputError(f"policy {self.policy.name}", f"{a.request}: unknown engines {a.pe}/{a.de}")
            now = time.monotonic()
            if not (self._usable(pe, now) and self._usable(de, now)):
                LOG.warning("policy %s assigned %s to an engine that does not answer; it waits", self.policy.name,
                            a.request)
                return
            del self.pending[a.request]
            ticket.place(a, self.block_tokens)
            self.in_flight[ticket.attempt_id] = ticket
            self.outbox.file(pe.group_key, ticket)
            self._cond.notify_all()

    # -- what the group leaders call ------------------------------------------------------------
    def _handle(self, channel: Channel, message: wire.ControlMessage, payload: bytes) -> Reply:
        if isinstance(message, wire.Fetch):
            return self._fetch(channel, message)
        if isinstance(message, wire.FormBatch):  # a PE's next forward batch, by the policy's rule
            turn_of = {t.attempt_id: t.request.id for t in list(self.in_flight.values())}  # list(): an atomic copy
            with self._policy_lock:  # policies are not thread-safe: ticks and PEs' batches take turns
                return state_of.policy_batch(self.policy, message.items, turn_of, self.origin)
        if isinstance(message, wire.Done | wire.Failed):
            return self._settle(channel, message)
        raise SpecError("scheduler", "op", message.op, "fetch, form_batch, done or failed")

    def _settle(self, channel: Channel, msg: wire.Done | wire.Failed) -> dict:
        """The outcome of an attempt, from the leader that fetched it (any other's no longer counts)."""
        with self._cond:
            ticket = self.in_flight.get(msg.attempt)
            if ticket is None or ticket.leader is not channel:
                return {"ok": False}  # requeued meanwhile: this attempt no longer counts
            del self.in_flight[ticket.attempt_id]
            self._cond.notify_all()
        if isinstance(msg, wire.Done):
            ticket.future.set_result(ticket.outcome(msg.result))
        else:
            self._failed(ticket, msg.error, msg.kind is wire.FailureKind.ENGINES)
        return {"ok": True}

    def _fetch(self, channel: Channel, msg: wire.Fetch) -> dict:
        handle = self.engines.get(msg.engine)
        if handle is None:
            raise SpecError("scheduler", "engine", msg.engine, "an engine of this cluster")
        if "engine" not in channel.info:
            channel.info["engine"] = handle.name
            channel.on_close(self._channel_closed)
        group, now = handle.group_key, time.monotonic()
        with self._cond:
            if self._closed or self.leader(group) != handle.name:
                return {"leader": False, "retry_s": STANDBY_RETRY_S}
            self.outbox.fetched(group, channel, now)
            mine = {n: r for n, r in msg.reports.items() if n in self.engines and self.engines[n].group_key == group}
            down = [self.engines[n] for n, r in mine.items() if r is None]
            for name, report in mine.items():
                if report is not None:
                    self.last_reports[name], self.report_at[name] = report, now
            self._cond.notify_all()
        for member in down:
            self._mark_dead(member, f"it does not answer its group leader {handle.name}")
        until = now + (self.interval_s if msg.wait else 0.0)
        with self._cond:  # hold the fetch (up to a tick) until there is work for the group
            while not self._closed and channel.alive and not self.outbox.has_work(group) and time.monotonic() < until:
                self._cond.wait(max(0.0, until - time.monotonic()))
            batch = self.outbox.take(group, channel) if channel.alive else []
            work = [t.wire(self.engines, self.chunk_tokens, self.policy.execution.layerwise) for t in batch]
            members = {n: list(h.address) for n, h in self.engines.items() if h.group_key == group and h.alive}
        return {"leader": True, "assignments": work, "members": members, "health_timeout_s": self.health_timeout_s}

    # -- faults ------------------------------------------------------------------------------------
    def _channel_closed(self, channel: Channel) -> None:
        name = channel.info.get("engine")
        if name is None or self._closed:
            return
        self._mark_dead(self.engines[name], channel.info.get("lost", "its connection to the scheduler was lost"))
        with self._cond:
            lost = [t for t in self.in_flight.values() if t.leader is channel]
            for ticket in lost:
                del self.in_flight[ticket.attempt_id]
                self._requeue(ticket, f"its group leader {name} was lost")

    def _mark_dead(self, handle: EngineHandle, reason: str) -> None:
        """No more work for `handle`; what waits for it in an outbox goes back to the queue."""
        with self._cond:
            if not handle.alive:
                return
            LOG.warning("engine %s stopped answering (%s): no more work for it", handle.name, reason)
            handle.alive = False
            for ticket in self.outbox.recall(handle.name):  # never reached an engine: same attempt count
                del self.in_flight[ticket.attempt_id]
                self.pending[ticket.request.id] = ticket
            self._cond.notify_all()

    def _failed(self, ticket: TurnTicket, error: str, engines_failed: bool) -> None:
        """Requeue the turn if one of its engines is gone; otherwise the error is the turn's own."""
        pe, de = self.engines[ticket.placed.pe], self.engines[ticket.placed.de]
        for handle in (pe, de) if engines_failed else ():
            try:
                if self.client is not None:
                    self.client.channel(handle.address).call(wire.Stats(), timeout_s=self.health_timeout_s)
            except ControlError as probe:
                self._mark_dead(handle, str(probe))
        if engines_failed and not (pe.alive and de.alive):
            LOG.warning("%s failed on %s/%s (%s); rescheduling", ticket.attempt_id, pe.name, de.name, error)
            with self._cond:
                self._requeue(ticket, error)
        else:
            ticket.future.set_exception(ControlError(f"{ticket.attempt_id}: {error}"))

    def _requeue(self, ticket: TurnTicket, reason: str) -> None:
        """Back to the queue, in its FIFO place, for a fresh attempt (caller holds the lock; out of `in_flight`)."""
        ticket.attempts += 1
        if ticket.attempts >= self.max_attempts or self._closed:
            ticket.future.set_exception(DualpathError(f"{ticket.request.id}: {reason} ({ticket.attempts} attempts)"))
            return
        ticket.refresh(self.hit_blocks(ticket.tokens) * self.block_tokens)  # the failed try may have stored blocks
        self.pending[ticket.request.id] = ticket
        self.retried.append((ticket.request.id, reason))
        self._cond.notify_all()
