"""Replaying a `Plan` on live engines: a `Policy` the real-run `Scheduler` runs like any other.

Waiting requests go where the plan says, in the plan's per-PE `order`; each side reads the plan's
share of the request's actual hit (storage may hold more or less than the plan assumed). An engine
that no longer answers is replaced by the live engine of its role with the least work.
"""

from __future__ import annotations

from collections.abc import Sequence

from dualpath.cluster import ClusterSpec, Role
from dualpath.errors import InputError
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment, Plan
from dualpath.policy import ClusterState, ExecutionOptions, Policy
from dualpath.request import Request


class PlanReplay(Policy):
    """Replays `plan` in its order (see the module docstring)."""

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
