"""What the real-run scheduler keeps: engines, turns (`TurnTicket`s) and the `ClusterState` it gives a policy,
and how a PE's prefill queue becomes the policy's forward batch (`policy_batch`).

The state is the group leaders' latest reports (per engine the unfinished requests `seq_e` and
tokens `tok_e`, the node's storage read queue, free DE HBM) plus the work the scheduler has handed
out that those reports do not show yet (filed for a leader, fetched but not yet at its engine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from dualpath.cluster import Role
from dualpath.plan import Assignment
from dualpath.policy import BatchItem, ClusterState, EngineState, Policy
from dualpath.protocol import Phase
from dualpath.request import Request
from dualpath.runtime.engines.messages import TurnResult
from dualpath.runtime.transports.control import Channel

# PE phases (as reported: None before the PE has the request) whose reads are not yet in a node's
# queue, and those not yet prefilled. A report's phases arrive as JSON strings, equal to `Phase` values.
BEFORE_READ: tuple[Phase | None, ...] = (None, Phase.WAITING, Phase.ADMITTED)
BEFORE_DECODE: tuple[Phase | None, ...] = (*BEFORE_READ, Phase.READING, Phase.PREFILLING)


@dataclass
class EngineHandle:
    """Where an engine answers and what it is in the cluster model."""

    name: str
    role: Role
    node: str
    group: int
    address: tuple[str, int]
    alive: bool = True  # False for good once it stopped answering

    @property
    def group_key(self) -> str:
        return f"{self.role.value}/{self.group}"


@dataclass(frozen=True)
class TurnOutcome:
    request: str
    result: TurnResult
    arrived_at: float  # when the turn reached the scheduler (time.time())
    attempts: int
    assignment: Assignment


@dataclass
class TurnTicket:
    """One turn from `submit` to its outcome; `attempt_id` names its current attempt at the engines."""

    request: Request
    tokens: list[int]
    arrived_at: float
    seq: int
    future: Future = field(default_factory=Future)
    attempts: int = 0
    attempt_id: str = ""
    assignment: Assignment | None = None
    pe_blocks: int = 0
    leader: Channel | None = None  # the leader's control channel once fetched

    @property
    def placed(self) -> Assignment:
        """The current attempt's assignment (a ticket has one from its dispatch on)."""
        if self.assignment is None:
            raise RuntimeError(f"turn {self.request.id} was not dispatched")  # a scheduler bug
        return self.assignment

    def place(self, a: Assignment, block_tokens: int) -> None:
        """Send this attempt to `a`'s engines, the PE reading `a`'s share of the hit (in whole blocks)."""
        hit_blocks = self.request.hit_tokens // block_tokens
        total = a.pe_read_bytes + a.de_read_bytes
        self.pe_blocks = round(hit_blocks * a.pe_read_bytes / total) if total else hit_blocks
        self.assignment = a
        self.attempt_id = a.request if not self.attempts else f"{a.request}~{self.attempts}"

    def outcome(self, result: TurnResult) -> TurnOutcome:
        return TurnOutcome(self.request.id, result, self.arrived_at, self.attempts + 1, self.placed)

    def refresh(self, hit_tokens: int) -> None:
        """Ready for another attempt, with the prompt's hit as storage holds it now."""
        r = self.request
        self.request = Request(r.id, r.agent, r.turn, hit_tokens, len(self.tokens) - hit_tokens, r.output_tokens,
                               r.arrival_s)
        self.leader = None

    def wire(self, engines: Mapping[str, EngineHandle], chunk_tokens: int | None, layerwise: bool) -> dict:
        """The assignment as its group leader fetches it: everything needed to run the turn."""
        a = self.placed
        return {"attempt": self.attempt_id, "request": self.request.id, "tokens": self.tokens,
                "max_new_tokens": self.request.output_tokens, "pe": a.pe, "de": a.de,
                "pe_address": list(engines[a.pe].address), "de_address": list(engines[a.de].address),
                "pe_blocks": self.pe_blocks, "chunk_tokens": chunk_tokens, "layerwise": layerwise}


def snapshot(engines: Mapping[str, EngineHandle], in_flight: Mapping[str, TurnTicket], reports: Mapping[str, dict],
             usable: Callable[[EngineHandle], bool], kv_bytes_per_token: int, pe_free_hbm_bytes: int,
             now_s: float) -> ClusterState:
    """The engines' `reports` plus the handed-out work they have not reported yet. An engine is alive
    in the state only when `usable` (it answers, and its report is fresh)."""
    queues: dict[str, float] = {}
    for name, report in reports.items():
        node = engines[name].node
        queues[node] = queues.get(node, 0.0) + report.get("read_queue_bytes", 0)
    states = {}
    for handle in engines.values():
        report = reports.get(handle.name, {})
        known = report.get("requests", {})
        mine = [t for t in in_flight.values()
                if (t.placed.pe if handle.role is Role.PREFILL else t.placed.de) == handle.name]
        if handle.role is Role.PREFILL:
            active = [t for t in mine if known.get(t.attempt_id) in BEFORE_DECODE]
            tokens, free = sum(t.request.new_tokens for t in active), pe_free_hbm_bytes
            for t in mine:
                if known.get(t.attempt_id) in BEFORE_READ:
                    a, de_node = t.placed, engines[t.placed.de].node
                    queues[handle.node] = queues.get(handle.node, 0.0) + a.pe_read_bytes
                    queues[de_node] = queues.get(de_node, 0.0) + a.de_read_bytes
        else:
            active = mine
            tokens = sum(t.request.context_tokens for t in mine)
            unseen = sum(t.request.context_tokens * kv_bytes_per_token for t in mine if t.attempt_id not in known)
            free = int(report.get("free_hbm_bytes", 0)) - unseen
        states[handle.name] = EngineState(handle.name, handle.role, handle.node, handle.group, len(active),
                                          tokens, max(0, free), usable(handle))
    nodes = sorted({h.node for h in engines.values()})
    return ClusterState(now_s, states, {n: int(queues.get(n, 0.0)) // kv_bytes_per_token for n in nodes},
                        {n: queues.get(n, 0.0) for n in nodes})


def policy_batch(policy: Policy, items: Sequence[tuple[str, int, int, float]], turn_of: Mapping[str, str],
                 origin: float) -> dict:
    """`policy.form_batch` over a PE's queue `items` (attempt id, cached, new tokens, ready at
    time.time()), as the policy sees requests in `schedule`: by the turn's request id, times since the
    run's `origin`. The reply names each chosen item by its attempt id again."""
    attempt_of = {turn_of.get(a, a): a for a, _, _, _ in items}
    queue = [BatchItem(turn_of.get(a, a), int(cached), int(new), ready_at - origin)
             for a, cached, new, ready_at in items]
    chosen = policy.form_batch(queue)
    return {"batch": [[attempt_of.get(item.request, item.request), item.new_tokens] for item in chosen]}


def silent_role(engines: Mapping[str, EngineHandle], report_at: Mapping[str, float], late: bool) -> Role | None:
    """A role none of whose engines answers (or, once `late`, has ever reported): no turn can run."""
    for role in {h.role for h in engines.values()}:
        mine = [h for h in engines.values() if h.role is role]
        if not any(h.alive for h in mine) or (late and not any(h.name in report_at for h in mine)):
            return role
    return None
