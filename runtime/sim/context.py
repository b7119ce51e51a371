"""What every part of one simulation shares: the clock, the model and its constants, the policy, the recorder.

The simulator's parts (engine groups, the request lifecycle) each take this context and the
`hardware.Hardware` they act on, rather than the whole simulator: what a part may touch is then in
its signature, and the type checker sees every use. The context never changes during a run; the
mutable state lives in the engines, groups and storages it points to.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.calibration import Calibration
from dualpath.llm import LLMSpec
from dualpath.policy import ExecutionOptions, Policy
from dualpath.runtime.sim.events import EventQueue
from dualpath.runtime.sim.recorder import TraceRecorder


@dataclass(frozen=True, slots=True)
class SimContext:
    """One run's shared, fixed inputs plus its event queue and trace recorder."""

    events: EventQueue
    llm: LLMSpec  # with the calibrated cost model: every step time comes from it
    calibration: Calibration
    policy: Policy
    options: ExecutionOptions  # the policy's: layerwise prefill, zero I/O (the Oracle)
    kv_bytes_per_token: int
    num_layers: int
    block_tokens: int
    # An MoE model runs expert parallel with data-parallel attention: its groups move in lockstep.
    lockstep: bool
    # Per Full Block and layer, a DE's buffer -> HBM load: an RDMA write with layerwise prefill, else a
    # cudaMemcpyAsync, unless the calibration measured its own.
    de_load_submit_s: float
    recorder: TraceRecorder


def make_context(llm: LLMSpec, policy: Policy, calibration: Calibration,
                 chrome_window: tuple[float, float] | None) -> SimContext:
    """A fresh context: an empty event queue at time 0 and a recorder keeping spans in `chrome_window`."""
    return SimContext(
        events=EventQueue(),
        llm=calibration.apply(llm),
        calibration=calibration,
        policy=policy,
        options=policy.execution,
        kv_bytes_per_token=llm.kv_bytes_per_token,
        num_layers=llm.num_layers,
        block_tokens=policy.block_tokens,
        lockstep=llm.expert_parallel,
        de_load_submit_s=(calibration.de_load_submit_s if calibration.de_load_submit_s is not None
                          else calibration.rdma_submit_s if policy.execution.layerwise
                          else calibration.cuda_copy_submit_s),
        recorder=TraceRecorder(chrome_window),
    )
