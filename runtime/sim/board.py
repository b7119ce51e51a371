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
from itertools import count

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
        # What never changes per engine (name, node name, group), looked up once: a snapshot per
        # scheduling point reads them for every engine that changed.
        self._pe_fixed = [(e.spec.name, node_names[e.node], e.spec.group) for e in pes]
        self._de_fixed = [(e.spec.name, node_names[e.node], e.spec.group) for e in des]
        # Per node, the read queue as last reported; only storages whose queue moved since are re-read
        # (a 48P96D snapshot would otherwise read 144 nodes' queues for every scheduling call).
        self._storages: Sequence[NodeStorage] | None = None
        self._queue_tokens: dict[str, int] = {}
        self._queue_bytes: dict[str, float] = {}
        self._serial = 0  # of the last snapshot

    def snapshot(self, now_s: float, storages: Sequence[NodeStorage]) -> ClusterState:
        states = self.states
        get = states.get
        changed: list[str] = []
        # An engine marked dirty whose counters are back where they were keeps its state object: a
        # policy's view cache then skips it too (identity means unchanged).
        pes, fixed, free = self.pes, self._pe_fixed, self.pe_free_hbm_bytes
        for i in self.dirty_pe:
            pe = pes[i]
            name, node, group = fixed[i]
            num_seqs, num_tokens = pe.num_seqs, pe.num_tokens
            old = get(name)
            if old is not None and old.num_seqs == num_seqs and old.num_tokens == num_tokens:
                continue
            states[name] = EngineState(name, _PREFILL, node, group, num_seqs, num_tokens, free)
            changed.append(name)
        des, fixed = self.des, self._de_fixed
        for i in self.dirty_de:
            de = des[i]
            name, node, group = fixed[i]
            num_seqs, num_tokens, free = de.num_seqs, de.num_tokens, de.free_hbm_bytes
            old = get(name)
            if (old is not None and old.num_seqs == num_seqs and old.num_tokens == num_tokens
                    and old.free_hbm_bytes == free):
                continue
            states[name] = EngineState(name, _DECODE, node, group, num_seqs, num_tokens, free)
            changed.append(name)
        self.dirty_pe.clear()
        self.dirty_de.clear()
        tokens, num_bytes = self._queue_tokens, self._queue_bytes
        if storages is not self._storages:
            self._storages = storages
            tokens.clear()
            num_bytes.clear()
            for storage in storages:
                storage.reported = False
        for storage in storages:
            if not storage.reported:
                tokens[storage.name] = storage.queued_tokens
                num_bytes[storage.name] = float(storage.queued_bytes)
                storage.reported = True
        follows, self._serial = self._serial, next(_SERIALS)
        return ClusterState(now_s, dict(states), dict(tokens), dict(num_bytes), self._serial, follows,
                            tuple(changed))


_PREFILL, _DECODE = Role.PREFILL, Role.DECODE
_SERIALS = count(1)  # shared by every board: a serial names one snapshot of one board
