"""Mutable state of the simulator: per request, per engine, and the snapshot policies see.

What engines report (the paper's group-leader view): a PE's `num_seqs` are its assigned requests
not yet fully prefilled and `num_tokens` their new tokens still to compute; a DE's `num_seqs` are
its requests until they finish and `num_tokens` their context tokens (prompt + output, what their
KV occupies in HBM), with `free_hbm_bytes` the KV capacity not yet reserved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import islice

from dualpath.cluster import Engine, Role
from dualpath.policy import BatchItem, ClusterState, EngineState
from dualpath.request import Request


class ReqState:
    """One request's progress through the simulated cluster."""

    __slots__ = (
        "assign_seq",
        "cached",
        "chain",
        "context_bytes",
        "de",
        "de_buf",
        "de_read",
        "finish",
        "first_token",
        "hbm",
        "index",
        "item",
        "pe",
        "pe_read",
        "prefill_start",
        "prompt_bytes",
        "reads_left",
        "ready_at",
        "remaining",
        "req",
        "second_token",
    )

    def __init__(self, req: Request, ready_at: float, kv_bytes_per_token: int,
                 chain: Sequence[Request] = (), index: int = 0):
        self.req = req
        self.chain = chain  # the agent's turns: the next one arrives when this one finishes
        self.index = index
        self.ready_at = ready_at
        self.pe = -1
        self.de = -1
        self.pe_read = 0
        self.de_read = 0
        self.reads_left = 0
        self.remaining = req.new_tokens
        self.cached = req.hit_tokens
        self.assign_seq = 0
        self.item: BatchItem | None = None
        self.de_buf = 0  # bytes held in the DE node's DRAM buffer
        self.hbm = False  # DE HBM reserved
        self.prefill_start = -1.0
        self.first_token = -1.0
        self.second_token = -1.0
        self.finish = -1.0
        self.prompt_bytes = req.prompt_tokens * kv_bytes_per_token
        self.context_bytes = req.context_tokens * kv_bytes_per_token


class PendingView(Sequence[Request]):
    """The waiting requests in arrival order, as a read-only sequence over the simulator's dict."""

    def __init__(self, states: Mapping[str, ReqState]):
        self._states = states

    def __iter__(self) -> Iterator[Request]:
        for s in self._states.values():
            yield s.req

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [s.req for s in list(self._states.values())[index]]
        if index < 0:
            index += len(self._states)
        if not 0 <= index < len(self._states):
            raise IndexError(index)
        return next(islice(self._states.values(), index, None)).req


class PEEngine:
    __slots__ = ("group", "index", "node", "num_seqs", "num_tokens", "ready", "spec")

    def __init__(self, spec: Engine, node: int, group: int):
        self.spec = spec
        self.index = spec.index
        self.node = node
        self.group = group
        self.ready: dict[str, ReqState] = {}  # reads done, waiting for a forward batch
        self.num_seqs = 0
        self.num_tokens = 0


class DEEngine:
    __slots__ = (
        "decode_ctx",
        "decode_seqs",
        "free_hbm",
        "group",
        "hbm_waiting",
        "index",
        "node",
        "num_seqs",
        "num_tokens",
        "spec",
        "step_s",
    )

    def __init__(self, spec: Engine, node: int, group: int, free_hbm: int):
        self.spec = spec
        self.index = spec.index
        self.node = node
        self.group = group
        self.num_seqs = 0
        self.num_tokens = 0
        self.free_hbm = free_hbm
        self.hbm_waiting: list[ReqState] = []  # KV landed but the policy over-committed this DE's HBM
        self.decode_seqs = 0
        self.decode_ctx = 0
        self.step_s = 0.0  # this engine's decode step for its current batch (0 when idle)


class EngineBoard:
    """Keeps one `EngineState` per engine, rebuilt only for engines that changed since the last look."""

    def __init__(self, pes: list[PEEngine], des: list[DEEngine], node_names: list[str], pe_free_hbm: int):
        self.pes = pes
        self.des = des
        self.node_names = node_names
        self.pe_free_hbm = pe_free_hbm
        self.states: dict[str, EngineState] = {}
        self.dirty_pe: set[int] = set(range(len(pes)))
        self.dirty_de: set[int] = set(range(len(des)))

    def snapshot(self, now_s: float, storages) -> ClusterState:
        names = self.node_names
        states = self.states
        for i in self.dirty_pe:
            e = self.pes[i]
            states[e.spec.name] = EngineState(e.spec.name, Role.PREFILL, names[e.node], e.spec.group,
                                              e.num_seqs, e.num_tokens, self.pe_free_hbm)
        for i in self.dirty_de:
            e = self.des[i]
            states[e.spec.name] = EngineState(e.spec.name, Role.DECODE, names[e.node], e.spec.group,
                                              e.num_seqs, e.num_tokens, e.free_hbm)
        self.dirty_pe.clear()
        self.dirty_de.clear()
        return ClusterState(now_s, dict(states),
                            {s.name: s.queued_tokens for s in storages},
                            {s.name: float(s.queued_bytes) for s in storages})
