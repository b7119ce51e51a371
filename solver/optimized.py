"""The `optimized` policy (`OnlineScheduler` ticking through the `Policy` interface, for the executors) and
`dualpath-srpt`, the paper's rules with `optimized`'s batch order: the ablation's "batch order alone"."""

from __future__ import annotations

from collections.abc import Sequence

from dualpath.cluster import ClusterSpec
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import BatchItem, ClusterState, ExecutionOptions, Policy
from dualpath.request import Request
from dualpath.solver.online import OnlineOptions, OnlineScheduler
from dualpath.solver.paper_rules import DualPathPolicy
from dualpath.solver.problem import request_compute_s


class OptimizedPolicy(Policy):
    """The `optimized` simulator policy: `OnlineScheduler` ticks through the `Policy` interface.

    In the simulator the tick has no wall-clock budget by default, so that a run's decisions do not
    depend on how busy the machine is (policies are deterministic); the latencies are still recorded.
    """

    name = "optimized"
    execution = ExecutionOptions(layerwise=True, zero_io=False)

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64,
                 options: OnlineOptions | None = None):
        super().__init__(cluster, llm, block_tokens)
        self.scheduler = OnlineScheduler(cluster, llm, block_tokens, options or OnlineOptions(budget_s=None))

    # The simulator's engines are the cluster's own: the state is set without `update`'s check.
    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        self.scheduler.state = state
        return self.scheduler.decide(pending, state)

    def observe(self, state: ClusterState) -> None:
        self.scheduler.state = state

    def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        return self.scheduler.rules.form_batch(order_queue(self.scheduler, queue))

    def batch_order(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        """The order `form_batch` fills a batch in (a rollout plan's priorities are applied on top)."""
        return order_queue(self.scheduler, queue)

    def fill_batch(self, ordered: Sequence[BatchItem]) -> list[BatchItem]:
        return self.scheduler.rules.form_batch(ordered)


class DualPathSRPTPolicy(DualPathPolicy):
    """The paper's rules for PE, DE and read side, with forward batches in `optimized`'s order (`srpt`)."""

    name = "dualpath-srpt"

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64):
        super().__init__(cluster, llm, block_tokens)
        self.options = OnlineOptions(budget_s=None)
        self.now_s = 0.0  # of the last report, as `optimized` ages waiting requests

    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        self.now_s = state.now_s
        return super().schedule(pending, state)

    def observe(self, state: ClusterState) -> None:
        self.now_s = state.now_s

    def waits_for_prefill(self) -> bool:
        return False  # batches age with the reports' clock: every call moves it

    def batch_order(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        return queue_order(self.llm, self.options, queue, self.now_s)

    def fill_batch(self, ordered: Sequence[BatchItem]) -> list[BatchItem]:
        return super().form_batch(ordered)

    def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        return super().form_batch(self.batch_order(queue))


def order_queue(scheduler: OnlineScheduler, queue: Sequence[BatchItem], now_s: float | None = None) -> list[BatchItem]:
    """`queue_order` with the scheduler's options, at `now_s` or the time of its last report."""
    now = now_s if now_s is not None else (scheduler.state.now_s if scheduler.state else 0.0)
    return queue_order(scheduler.llm, scheduler.options, queue, now)


def queue_order(llm: LLMSpec, options: OnlineOptions, queue: Sequence[BatchItem], now: float) -> list[BatchItem]:
    """Inside a PE, the forward batch's order. `srpt`: least remaining compute first, aged by waiting time;
    `hrrn`: highest response ratio next, (wait + compute) / compute; either way short requests (whose next
    turn's reads are waiting on them) go first while long cold prefills age into the batch. A queue is
    re-ranked at every step; each item's compute is computed afresh (a cache of it keyed by token counts
    cost more than the computation over the step costs)."""
    if options.batch_order == "fifo" or len(queue) < 2:
        return list(queue)
    srpt, aging = options.batch_order == "srpt", options.aging
    # One pass of plain arithmetic, then a sort of (key, position) pairs: the order `sorted(range(n),
    # key=lambda i: (key(queue[i]), i))` gives.
    keyed: list[tuple[float, int]] = []
    for i, item in enumerate(queue):
        service = request_compute_s(llm, item.cached_tokens, item.new_tokens)
        waited = now - item.arrived_s
        if not waited > 0.0:  # max(0.0, waited), as max returns it
            waited = 0.0
        if srpt:  # least remaining compute, aged
            keyed.append((service - aging * waited, i))
        else:  # highest response ratio (wait + compute) / compute
            padded = service + 1e-3
            keyed.append((-((waited + padded) / padded), i))
    keyed.sort()
    return [queue[i] for _, i in keyed]
