"""`run_real(cluster, llm, workload, policy) -> Trace`: a workload on real engines, measured.

`LocalRuntime` starts one engine process per GPU of a `ClusterSpec` on this machine (names PE0..,
DE0.., nodes P0.., D0.. as the cluster model names them), a decoder built from the `LLMSpec`
(dense Llama-style; random weights from the seed), and each node's NICs emulated by the engines'
rate limiters at the cluster's bandwidths (SNIC per node, shared evenly by its engines; CNIC per
GPU, CNIC-centric). DRAM buffers are sized to what the run can use, at most the node's. A
`Scheduler` runs the policy; agents drive the turns; the result is a `Trace` in the simulator's
format, with per-node SNIC bytes read and written in its `meta`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from dualpath.cluster import ClusterSpec, Role
from dualpath.errors import DualpathError, SpecError
from dualpath.llm import AttentionKind, LLMSpec
from dualpath.plan import Plan
from dualpath.policy import Policy
from dualpath.request import Workload
from dualpath.runtime.agents import TurnLog, run_agents, verify_turns
from dualpath.runtime.faults import FaultInjector, FaultPlan
from dualpath.runtime.localcluster import LocalRuntime
from dualpath.runtime.scheduler import PlanReplay, Scheduler
from dualpath.runtime.tracing import runtime_trace

__all__ = ["LocalRuntime", "decoder_fields", "run_real"]
