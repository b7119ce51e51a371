"""The scheduling interface between executors (simulator, runtime) and policies (in `solver/`).

An executor keeps the cluster state; at each scheduling point it hands a policy the waiting requests
and a `ClusterState` snapshot, as the paper's group leaders report it, and gets back `Assignment`s
(PE, DE, bytes read through each side). Inside a PE, the policy also forms forward batches. Executors
never import `solver`; the CLI constructs a policy and passes the object in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dualpath.cluster import ClusterSpec, Role
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment
from dualpath.records import fast_init
from dualpath.request import Request


@fast_init
@dataclass(frozen=True)
class EngineState:
    """What a group leader reports per engine (the paper's seq_e and tok_e) plus free HBM."""

    name: str
    role: Role
    node: str
    group: int
    num_seqs: int  # seq_e: unfinished requests
    num_tokens: int  # tok_e: unfinished tokens
    free_hbm_bytes: int
    alive: bool = True


@fast_init
@dataclass(frozen=True)
class ClusterState:
    now_s: float
    engines: Mapping[str, EngineState]
    read_queue_tokens: Mapping[str, int]  # per node: tokens waiting in its storage read queue
    read_queue_bytes: Mapping[str, float]  # per node: bytes waiting (what the optimizer balances)
    # What a source of successive snapshots (the simulator's board) can say to spare a policy's cache a
    # comparison of every engine: this snapshot's number (unique in the process, 0: unnumbered) and,
    # when it follows snapshot `follows` of the same source, the engines whose state object differs.
    serial: int = 0
    follows: int = 0
    changed: tuple[str, ...] = ()

    def of_role(self, role: Role) -> list[EngineState]:
        return [e for e in self.engines.values() if e.role is role and e.alive]


@fast_init
@dataclass(frozen=True)
class BatchItem:
    """A request (or a chunk of one) waiting in a PE's queue."""

    request: str
    cached_tokens: int
    new_tokens: int
    arrived_s: float = 0.0


@dataclass(frozen=True)
class ExecutionOptions:
    """Executor settings that are not scheduling decisions; each named policy carries its own."""

    layerwise: bool = True  # layerwise prefill (HBM holds one layer's KV) or all KV resident
    zero_io: bool = False  # the paper's Oracle: storage reads, H2D/D2H and PD transfers cost nothing


class Policy(ABC):
    """A scheduler. Subclasses are deterministic: same inputs, same decisions."""

    name: str = "policy"
    execution: ExecutionOptions = ExecutionOptions()

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64):
        self.cluster = cluster
        self.llm = llm
        self.block_tokens = block_tokens

    @abstractmethod
    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        """Assign some of `pending` (FIFO order); requests left out stay pending for the next call."""

    def form_batch(self, queue: Sequence[BatchItem]) -> list[BatchItem]:
        """Pick the next forward batch from a PE's FIFO queue; may return a chunk of a request.

        Default: everything queued, in order (no attention quota).
        """
        return list(queue)

    def observe(self, state: ClusterState) -> None:
        """Optional hook: engines report state changes between scheduling calls."""
        return None

    def waits_for_prefill(self) -> bool:
        """True when the last `schedule` call assigned nothing and no call can until a prefill engine's
        report changes: an executor may then skip calls (as if they returned []) until one does. The
        default, False, makes every call count."""
        return False


def kv_bytes(llm: LLMSpec, tokens: int) -> int:
    return tokens * llm.kv_bytes_per_token
