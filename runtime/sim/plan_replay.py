"""Replaying a `Plan` in the simulator: each request goes where the plan says, as soon as it waits.

A plan is computed offline, so it does not look at the cluster state: a request is assigned the
moment it arrives; if the plan over-commits a DE's HBM, the simulator makes the request wait for
room before its decode. Forward batches follow the plan's `batch` hints when given (requests of the
same hint go together), else everything ready goes, in the plan's order.

The real runtime replays plans with its own `dualpath.runtime.scheduling.plan_replay.PlanReplay`:
the simulator and the real runtime share nothing but the core (tests/test_layering.py), so each has
one, and this one is named apart so that a search or an import finds the one it means.
"""

from __future__ import annotations

from collections.abc import Sequence

from dualpath.cluster import ClusterSpec
from dualpath.errors import InputError
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment, Plan
from dualpath.policy import BatchItem, ClusterState, ExecutionOptions, Policy
from dualpath.request import Request


class SimPlanReplay(Policy):
    """A `Plan` as a policy: each request to its planned engines and reads, batches by the plan's hints."""

    name = "plan"

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, plan: Plan, execution: ExecutionOptions,
                 block_tokens: int = 64) -> None:
        super().__init__(cluster, llm, block_tokens)
        self.plan = plan
        self.name = f"plan:{plan.solver}"
        self.execution = execution
        self._by_request = plan.by_request()

    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        out: list[Assignment] = []
        for r in pending:
            a = self._by_request.get(r.id)
            if a is None:
                raise InputError(f"plan {self.plan.solver}", f"no assignment for request {r.id}")
            out.append(a)
        return out

    def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        hints = [self._by_request[item.request].batch for item in queue]
        if not queue or hints[0] < 0:
            return list(queue)
        return [item for item, hint in zip(queue, hints) if hint == hints[0]]
