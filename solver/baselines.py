"""The baselines of the paper's evaluation and ablation, each one named policy.

- `basic`: the system without DualPath: reads only on the PE side, prefill not layerwise (the
  batch's whole KV is copied into HBM, with cudaMemcpy, before it runs); PE and DE round-robin.
- `layerwise`: `basic` + layerwise prefill (the ablation's first step).
- `dualpath-rr`: + dual-path loading with the shorter-read-queue rule, PE and DE still round-robin
  and no attention quota (the ablation's second step).
- `oracle`: the paper's scheduler with every storage read, host<->GPU copy and PD transfer free.
- `round-robin`: PE and DE round-robin and the read side alternating, blind to every queue: what
  dual-path loading gives without any load information.

Round-robin never skips a PE; it skips a DE without free HBM for the request's context and stops the
fetch (FIFO) when no DE has room. Forward batches take everything ready (no attention quota).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter

from dualpath.cluster import ClusterSpec, Role
from dualpath.compiled import mypyc_attr
from dualpath.llm import LLMSpec
from dualpath.plan import Assignment
from dualpath.policy import ClusterState, EngineState, ExecutionOptions, Policy
from dualpath.request import Request
from dualpath.solver.paper_rules import DualPathPolicy


@mypyc_attr(allow_interpreted_subclasses=True)  # policies are extension points
class RoundRobinPolicy(Policy):
    """PE and DE in turn; the read side per `read_side`: "pe", "shorter" queue, or "alternate"."""

    name = "round-robin"
    execution = ExecutionOptions(layerwise=True)
    read_side = "alternate"

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64):
        super().__init__(cluster, llm, block_tokens)
        self.kv = llm.kv_bytes_per_token
        self._pe_names = [e.name for e in cluster.engines(Role.PREFILL)]
        self._de_names = [e.name for e in cluster.engines(Role.DECODE)]
        self._next_pe = 0
        self._next_de = 0
        self._next_side = 0
        self._all_live_at = 0  # serial of the last snapshot in which every engine was there and alive

    def schedule(self, pending: Sequence[Request], state: ClusterState) -> list[Assignment]:
        engines = state.engines
        pes, des = self._live_engines(state)
        if not pes or not des:
            return []
        free: dict[str, int] = {}  # the DEs' free HBM as this call books it, read from `engines` on first use
        queues = dict(state.read_queue_tokens)
        out = []
        for r in pending:
            need = r.context_tokens * self.kv
            for step in range(len(des)):
                de = des[(self._next_de + step) % len(des)]
                room = free[de] if de in free else engines[de].free_hbm_bytes
                if room >= need:
                    self._next_de = (self._next_de + step + 1) % len(des)
                    break
            else:
                break  # no DE has room: the head waits
            pe = pes[self._next_pe % len(pes)]
            self._next_pe = (self._next_pe + 1) % len(pes)
            free[de] = room - need
            on_pe = self._reads_on_pe(queues, engines[pe].node, engines[de].node)
            node = engines[pe].node if on_pe else engines[de].node
            queues[node] = queues.get(node, 0) + r.hit_tokens
            hit_bytes = r.hit_tokens * self.kv
            out.append(Assignment(r.id, pe, de, hit_bytes if on_pe else 0, 0 if on_pe else hit_bytes))
        return out

    def _live_engines(self, state: ClusterState) -> tuple[list[str], list[str]]:
        """The live PEs and DEs. A snapshot that follows one where all were alive can only have lost the
        engines it names as changed: checking those spares a pass over thousands of engines per call."""
        engines = state.engines
        if self._all_live_at and state.follows == self._all_live_at and all(
                engines[n].alive for n in state.changed):
            self._all_live_at = state.serial
            return self._pe_names, self._de_names
        pes, des = _live(self._pe_names, engines), _live(self._de_names, engines)
        self._all_live_at = state.serial if pes is self._pe_names and des is self._de_names else 0
        return pes, des

    def _reads_on_pe(self, queues: dict[str, int], pe_node: str, de_node: str) -> bool:
        if self.read_side == "pe":
            return True
        if self.read_side == "shorter":
            return queues.get(pe_node, 0) <= queues.get(de_node, 0)
        self._next_side ^= 1
        return bool(self._next_side)


def _live(names: list[str], engines: Mapping[str, EngineState]) -> list[str]:
    """`names` that are in `engines` and alive; checked in C first (usually all of them are: thousands
    of engines per scheduling call), then filtered in Python only when some are not."""
    if all(map(engines.__contains__, names)) and all(map(_alive, map(engines.__getitem__, names))):
        return names
    return [n for n in names if n in engines and engines[n].alive]


_alive = attrgetter("alive")


@mypyc_attr(allow_interpreted_subclasses=True)  # policies are extension points
class BasicPolicy(RoundRobinPolicy):
    name = "basic"
    execution = ExecutionOptions(layerwise=False)
    read_side = "pe"


@mypyc_attr(allow_interpreted_subclasses=True)  # policies are extension points
class LayerwisePolicy(RoundRobinPolicy):
    name = "layerwise"
    execution = ExecutionOptions(layerwise=True)
    read_side = "pe"


@mypyc_attr(allow_interpreted_subclasses=True)  # policies are extension points
class DualPathRRPolicy(RoundRobinPolicy):
    name = "dualpath-rr"
    execution = ExecutionOptions(layerwise=True)
    read_side = "shorter"


@mypyc_attr(allow_interpreted_subclasses=True)  # policies are extension points
class OraclePolicy(DualPathPolicy):
    name = "oracle"
    execution = ExecutionOptions(layerwise=True, zero_io=True)
