"""A rollout plan as a `Policy`: the plan's directives on top of the online rules it names.

Both executors run it like any policy (the simulator and the real runtime never import `solver`; the
CLI builds this object and passes it in), so the plan means the same thing in both. Per scheduling
call, the waiting turns are handed to the rules in priority order (stable: equal priorities keep the
arrival order the rules see online); the rules' assignment is then bent to the agent's pinned PE group,
DE and read split. Inside a PE the forward batch is filled in the rules' own order with the plan's
priorities first. A plan without directives therefore executes exactly as its online rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from dualpath.cluster import ClusterSpec, Role
from dualpath.errors import InputError
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import BatchItem, ClusterState, Policy
from dualpath.request import Request
from dualpath.rollout_plan import AgentDirective, RolloutPlan
from dualpath.solver.online import OnlineOptions
from dualpath.solver.optimized import DualPathSRPTPolicy, OptimizedPolicy
from dualpath.solver.paper_rules import DualPathPolicy

_OPTION_NAMES = frozenset(f.name for f in fields(OnlineOptions)) - {"budget_s"}


def rules_policy(rules: str, options: Mapping[str, Any], cluster: ClusterSpec, llm: LLMSpec,
                 block_tokens: int = 64) -> Policy:
    """The online policy a plan defers to; `options` are `OnlineOptions` fields (for `optimized` only)."""
    if rules == "optimized":
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise InputError("rollout plan", f"options: unknown {sorted(unknown)}; known: {sorted(_OPTION_NAMES)}")
        try:
            online = OnlineOptions(budget_s=None, **options)  # no wall-clock budget: decisions are reproducible
        except TypeError as exc:
            raise InputError("rollout plan", f"options: {exc}") from None
        return OptimizedPolicy(cluster, llm, block_tokens, online)
    if options:
        raise InputError("rollout plan", f"options {sorted(options)} given for rules {rules!r}, which take none")
    if rules == "dualpath":
        return DualPathPolicy(cluster, llm, block_tokens)
    if rules == "dualpath-srpt":
        return DualPathSRPTPolicy(cluster, llm, block_tokens)
    raise InputError("rollout plan", f"rules {rules!r}: expected dualpath, dualpath-srpt or optimized")


class RolloutPolicy(Policy):
    """Executes `plan` turn by turn (see the module docstring)."""

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, plan: RolloutPlan, block_tokens: int = 64) -> None:
        super().__init__(cluster, llm, block_tokens)
        self.plan = plan
        self.base = rules_policy(plan.rules, plan.options, cluster, llm, block_tokens)
        self.name = f"rollout-plan:{plan.candidate or plan.rules}"
        self.execution = self.base.execution
        directives = plan.directive()
        self.level = {a: d.priority for a, d in directives.items() if d.priority}
        self.turn_priority = plan.turn_priority
        self.first_seen: dict[int, tuple[int, int]] = {}  # agent -> (turn index, prompt tokens) of its first turn
        self.pinned: dict[int, AgentDirective] = {
            a: d for a, d in directives.items()
            if d.pe_group is not None or d.de is not None or d.pe_read_fraction is not None}
        self.request_level: dict[str, int] = {}  # request id -> its sort key (`_level`), for form_batch
        self.kv = llm.kv_bytes_per_token
        self.buffer_bytes = cluster.node.dram_buffer_bytes
        self.pe_group_of = {e.name: e.group for e in cluster.engines(Role.PREFILL)}

    # ---- between engines -----------------------------------------------------------------------------
    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        ordered = self._ordered(pending)
        out = self.base.schedule(ordered, state)
        if not self.pinned:
            return out
        agent_of = {r.id: r.agent for r in ordered} if out else {}
        return [self._pin(a, self.pinned.get(agent_of.get(a.request, -1)), state) for a in out]

    def observe(self, state: ClusterState) -> None:
        self.base.observe(state)

    def _ordered(self, pending: Sequence[Request]) -> Sequence[Request]:
        """`pending` with lower priorities first (stable); `pending` itself when it is all one priority, so
        that the rules' caches keyed on the waiting sequence stay valid."""
        if not self.level and self.turn_priority is None:
            return pending
        known = self.request_level
        keyed = [(known[r.id] if r.id in known else self._level(r), r) for r in pending]
        first = keyed[0][0] if keyed else 0
        if all(k == first for k, _ in keyed):
            return pending
        return [r for _, r in sorted(keyed, key=lambda kr: kr[0])]  # sorted() is stable

    def _level(self, r: Request) -> int:
        """The request's sort key: its agent's priority, then its turn's (0 or 1) under the turn rule."""
        key = self.level.get(r.agent, 0)
        rule = self.turn_priority
        if rule is not None:
            first_turn, first_prompt = self.first_seen.setdefault(r.agent, (r.turn, r.prompt_tokens))
            key = 2 * key + rule.priority(r.turn - first_turn, r.prompt_tokens, first_prompt)
        self.request_level[r.id] = key
        return key

    def _pin(self, a: Assignment, d: AgentDirective | None, state: ClusterState) -> Assignment:
        if d is None:
            return a
        pe, de, pe_read = a.pe, a.de, a.pe_read_bytes
        if d.pe_group is not None and self.pe_group_of.get(pe) != d.pe_group:
            group = [e for e in state.of_role(Role.PREFILL) if e.group == d.pe_group]
            if group:
                pe = min(group, key=lambda e: (e.num_tokens, e.name)).name
        if d.de is not None:
            engine = state.engines.get(d.de)
            if engine is not None and engine.alive and engine.role is Role.DECODE:
                de = d.de
        hit = a.read_bytes
        if d.pe_read_fraction is not None and hit:
            unit = self.block_tokens * self.kv if hit % (self.block_tokens * self.kv) == 0 else self.kv
            pe_read = min(round(hit * d.pe_read_fraction / unit) * unit, hit, self.buffer_bytes)
        elif pe != a.pe and pe_read > self.buffer_bytes:
            pe_read = min(pe_read, self.buffer_bytes)
        return Assignment(a.request, pe, de, pe_read, hit - pe_read, a.order, a.batch)

    # ---- inside a PE ---------------------------------------------------------------------------------
    def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        base = self.base
        order = getattr(base, "batch_order", list)(queue)
        if self.request_level:
            level = self.request_level
            order = sorted(order, key=lambda item: level.get(item.request, 0))
        fill = getattr(base, "fill_batch", None)
        return fill(order) if fill is not None else base.form_batch(order)
