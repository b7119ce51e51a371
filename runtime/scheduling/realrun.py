"""`run_real(cluster, llm, workload, policy) -> Trace`: a workload on real engines, measured.

A `LocalRuntime` (see `local_runtime`) runs the cluster's engines on this machine, or an
`AttachedRuntime` (`attached_runtime`) drives engines started elsewhere; a `Scheduler`
runs the policy (or replays a `Plan`) and the engines' group leaders fetch its assignments; agents
drive the turns, and the result is a `Trace` in the simulator's format.
"""

from __future__ import annotations

import time

from dualpath.cluster import ClusterSpec
from dualpath.errors import DualpathError, SpecError
from dualpath.llm import LLMSpec
from dualpath.plan import Plan
from dualpath.policy import Policy
from dualpath.request import Workload
from dualpath.runtime.engines.faults import FaultInjector, FaultPlan
from dualpath.runtime.engines.messages import Stats
from dualpath.runtime.scheduling.agents import run_agents, runtime_trace, verify_turns
from dualpath.runtime.scheduling.local_runtime import LocalRuntime, decoder_fields
from dualpath.runtime.scheduling.plan_replay import PlanReplay
from dualpath.runtime.scheduling.runtime_base import RuntimeBase
from dualpath.trace import Trace

__all__ = ["LocalRuntime", "context_tokens_for", "decoder_fields", "run_real", "runtime_for"]


def context_tokens_for(workload: Workload, block_tokens: int) -> int:
    """The engines' context a run of `workload` needs: its longest turn, and at least 1K tokens (room
    for a profile of the engines, `dualpath run --predict`)."""
    return max(max(r.context_tokens for r in workload.requests) + block_tokens, 1024)


def runtime_for(cluster: ClusterSpec, llm: LLMSpec, workload: Workload, block_tokens: int, **kwargs) -> LocalRuntime:
    """A `LocalRuntime` sized for `workload`: longest context, and buffers for every agent at once."""
    bt = block_tokens
    prompt_blocks = -(-max(r.prompt_tokens for r in workload.requests) // bt)
    agents = len({r.agent for r in workload.requests})
    return LocalRuntime(cluster, llm, block_tokens=bt, max_context_tokens=context_tokens_for(workload, bt),
                        max_prompt_blocks=agents * prompt_blocks + 4, **kwargs)


def run_real(cluster: ClusterSpec, llm: LLMSpec, workload: Workload, policy: Policy | Plan, *,
             runtime: RuntimeBase | None = None, online: bool = False, faults: FaultPlan | None = None,
             seed: int = 0, timeout_s: float = 600.0, interval_s: float = 0.05, verify: bool = False,
             block_tokens: int = 16, in_process: bool = False, warm_turns: int = 0) -> Trace:
    """Run `workload` on real engines under `policy` (or replay a `Plan`) and return what happened.

    With `runtime` the engines are reused (dead ones restarted, storage emptied first); otherwise a
    `LocalRuntime` is started for this run and stopped after it. Each agent's first `warm_turns`
    turns run first, untimed, and are left out of the trace (`agents.timed_workload` is the rest).
    `verify` recomputes every completed timed turn with the same seeded model and lists mismatches in
    `meta["wrong_turns"]` (turns without output are `failed_turns`, never wrong ones). Injected faults
    that fired are in `meta["faults_fired"]`, those that never did (a kill after the run ended, a
    corruption rate no read drew) in `meta["faults_unfired"]`. Raises `DualpathError` when the agents,
    and the verification after them, are not done within `timeout_s` of the call."""
    deadline = time.time() + timeout_s
    faults = faults or FaultPlan(seed=seed)
    if isinstance(policy, Plan):
        policy = PlanReplay(cluster, llm, policy, block_tokens)
    if policy.execution.zero_io:
        raise SpecError(f"policy {policy.name}", "zero_io", True, "a policy with real I/O (the runtime cannot skip it)")
    own = runtime is None
    runtime = runtime or runtime_for(cluster, llm, workload, policy.block_tokens, seed=seed, faults=faults,
                                     in_process=in_process).start()
    if runtime.block_tokens != policy.block_tokens:
        raise SpecError(f"policy {policy.name}", "block_tokens", policy.block_tokens,
                        f"the runtime's block size, {runtime.block_tokens} tokens")
    try:
        runtime.respawn_dead()
        runtime.clear_store()
        injector = FaultInjector(faults, runtime.kill)
        before: dict = {}
        corrupted_before = [0]
        with runtime.scheduling(policy, interval_s=interval_s) as scheduler:
            def on_start(origin: float) -> None:  # the timed part begins: count from here
                nic, corrupted_before[0] = _counters(runtime)
                before.update(nic)
                scheduler.origin = origin
                injector.start(origin)

            try:
                logs, origin = run_agents(scheduler, workload, runtime.config.vocab_size, seed=seed, online=online,
                                          warm_turns=warm_turns, on_start=on_start,
                                          timeout_s=max(0.0, deadline - time.time()))
            finally:
                injector.stop()
        wall_s = time.time() - origin
        after, corrupted = _counters(runtime, scheduler.last_reports)
        corrupted = max(0, corrupted - corrupted_before[0])
        fired = [f"{n}@{t:.2f}s" for n, t in injector.fired]
        unfired = [f"kill-engine:{k.engine}@{k.at_s:g}s" for k in faults.kills
                   if k.engine not in {n for n, _ in injector.fired}]
        if faults.corrupt_block_rate:
            (fired if corrupted else unfired).append(f"corrupt-block:{faults.corrupt_block_rate:g}"
                                                     + (f" ({corrupted} reads corrupted)" if corrupted else ""))
        trace = runtime_trace(logs, cluster, runtime.handles, policy.name, origin, runtime.layout.kv_bytes_per_token)
        trace.meta.update({
            "cluster": cluster.name or cluster.shorthand, "model": llm.name, "workload": workload.name,
            "agents": len({r.agent for r in workload.requests}), "online": online, "seed": seed,
            "warm_turns": warm_turns, "layerwise": policy.execution.layerwise, "zero_io": False, "wall_s": wall_s,
            "block_tokens": runtime.block_tokens,
            "snic_read_bytes": {n: after[n][0] - before.get(n, (0, 0))[0] for n in after},
            "snic_write_bytes": {n: after[n][1] - before.get(n, (0, 0))[1] for n in after},
            "faults": faults.describe(), "faults_fired": fired, "faults_unfired": unfired,
            "retried": [f"{r}: {why}" for r, why in scheduler.retried], "scheduler_ticks": scheduler.num_ticks,
            "failed_turns": [f"{log.request}: {log.error}" for log in logs if log.outcome is None],
            "turns_expected": sum(1 for r in workload.requests if r.turn >= warm_turns),
            "turns_done": sum(1 for log in logs if log.outcome)})
        if verify:
            trace.meta["wrong_turns"] = verify_turns(logs, runtime.reference_decoder(), deadline)
        return trace
    finally:
        if own:
            runtime.close()


def _counters(runtime: RuntimeBase, last: dict | None = None) -> tuple[dict[str, tuple[int, int]], int]:
    """Per node, SNIC bytes read and written so far (a dead engine counts as last reported); and the
    block reads corrupted by fault injection so far, over the engines."""
    out: dict[str, tuple[int, int]] = {}
    corrupted = 0
    for name, handle in runtime.handles.items():
        try:
            stats = runtime.client.channel(handle.address).call(Stats(), timeout_s=10)[0]
        except DualpathError:
            stats = (last or {}).get(name, {})
        corrupted += stats.get("corrupted_reads", 0)
        read, write = out.get(handle.node, (0, 0))
        out[handle.node] = (read + stats.get("snic_read_bytes", 0), write + stats.get("snic_write_bytes", 0))
    return out, corrupted
