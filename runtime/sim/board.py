"""The engine board: the `ClusterState` snapshot the simulator hands a policy at each scheduling point.

What engines report (the paper's group-leader view): a PE's `num_seqs` are its assigned requests
not yet fully prefilled and `num_tokens` their new tokens still to compute; a DE's `num_seqs` are
its requests until they finish and `num_tokens` their context tokens (prompt + output, what their
KV occupies in HBM), with `free_hbm_bytes` the KV capacity not yet reserved. Per node, the storage
read queue's tokens and bytes.

Thousands of engines, and a snapshot per scheduling point: rebuilding every `EngineState` each time
would cost more than the scheduling itself, so the board keeps one per engine and rebuilds only the
engines marked dirty since the last look (whoever changes an engine's counters marks it).
"""

from __future__ import annotations

from collections.abc import Sequence

from dualpath.cluster import Role
from dualpath.policy import ClusterState, EngineState
from dualpath.runtime.sim.state import DEEngine, PEEngine
from dualpath.runtime.sim.storage import NodeStorage


class EngineBoard:
    """Keeps one `EngineState` per engine, rebuilt only for engines that changed since the last look."""

    def __init__(self, pes: list[PEEngine], des: list[DEEngine], node_names: list[str],
                 pe_free_hbm_bytes: int) -> None:
        self.pes = pes
        self.des = des
        self.node_names = node_names
        self.pe_free_hbm_bytes = pe_free_hbm_bytes  # a PE's HBM is not reserved per request
        self.states: dict[str, EngineState] = {}
        self.dirty_pe: set[int] = set(range(len(pes)))
        self.dirty_de: set[int] = set(range(len(des)))

    def snapshot(self, now_s: float, storages: Sequence[NodeStorage]) -> ClusterState:
        names = self.node_names
        states = self.states
        # An engine marked dirty whose counters are back where they were keeps its state object: a
        # policy's view cache then skips it too (identity means unchanged).
        for i in self.dirty_pe:
            pe = self.pes[i]
            old = states.get(pe.spec.name)
            if old is not None and old.num_seqs == pe.num_seqs and old.num_tokens == pe.num_tokens:
                continue
            states[pe.spec.name] = EngineState(pe.spec.name, Role.PREFILL, names[pe.node], pe.spec.group,
                                               pe.num_seqs, pe.num_tokens, self.pe_free_hbm_bytes)
        for i in self.dirty_de:
            de = self.des[i]
            old = states.get(de.spec.name)
            if (old is not None and old.num_seqs == de.num_seqs and old.num_tokens == de.num_tokens
                    and old.free_hbm_bytes == de.free_hbm_bytes):
                continue
            states[de.spec.name] = EngineState(de.spec.name, Role.DECODE, names[de.node], de.spec.group,
                                               de.num_seqs, de.num_tokens, de.free_hbm_bytes)
        self.dirty_pe.clear()
        self.dirty_de.clear()
        return ClusterState(now_s, dict(states),
                            {s.name: s.queued_tokens for s in storages},
                            {s.name: float(s.queued_bytes) for s in storages})
