"""Mutable state of the simulator: per request, per engine, and the waiting requests policies see.

Counters are plain slotted attributes, changed in place by the simulator's handlers: a run touches
them millions of times, and what policies read of them goes through `board.EngineBoard`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from operator import attrgetter
from typing import ClassVar, overload

from dualpath.cluster import Engine
from dualpath.policy import BatchItem
from dualpath.request import Request


class ReqState:
    """One request's progress through the simulated cluster."""

    __slots__ = (
        "assign_seq",
        "cached_tokens",
        "chain",
        "context_bytes",
        "context_tokens",
        "de",
        "de_buf_bytes",
        "de_read_bytes",
        "decode_ctx_tokens",
        "finish_s",
        "first_token_s",
        "hbm_reserved",
        "in_dram_s",
        "index",
        "item",
        "num_reads_left",
        "pe",
        "pe_read_bytes",
        "prefill_start_s",
        "prompt_bytes",
        "ready_s",
        "remaining_tokens",
        "req",
        "second_token_s",
    )

    def __init__(self, req: Request, ready_s: float, kv_bytes_per_token: int,
                 chain: Sequence[Request] = (), index: int = 0) -> None:
        self.req = req
        self.chain = chain  # the agent's turns: the next one arrives when this one finishes
        self.index = index
        self.ready_s = ready_s
        self.pe = -1  # engine indices, -1 until assigned
        self.de = -1
        self.pe_read_bytes = 0
        self.de_read_bytes = 0
        self.num_reads_left = 0
        self.remaining_tokens = req.new_tokens
        self.cached_tokens = req.hit_tokens
        self.assign_seq = 0
        self.item: BatchItem | None = None
        self.de_buf_bytes = 0  # held in the DE node's DRAM buffer
        self.hbm_reserved = False  # DE HBM for the whole context
        self.prefill_start_s = -1.0
        self.in_dram_s = -1.0  # when its hit KV is all in the PE's or DE's DRAM buffer
        self.first_token_s = -1.0
        self.second_token_s = -1.0
        self.finish_s = -1.0
        self.prompt_bytes = req.prompt_tokens * kv_bytes_per_token
        self.context_tokens = req.context_tokens  # read per event: a slot, not the property's sum
        self.context_bytes = self.context_tokens * kv_bytes_per_token
        self.decode_ctx_tokens = req.prompt_tokens + req.output_tokens // 2  # the mean context it decodes at


_req_of = attrgetter("req")


class PendingView(Sequence[Request]):
    """The waiting requests in arrival order, as a read-only sequence over the simulator's dict.

    The simulator changes the dict only through `add` and `pop`, which also log the change: a policy
    that mirrors the waiting requests across calls (`solver.waiting_keys`) then reads what changed
    since its last look (`changes_since`) instead of comparing thousands of requests by identity.
    """

    # The log of removed ids is trimmed to its newest entries past this length: a reader whose mark
    # is older than the trim gets None and re-reads the whole sequence.
    MAX_LOG: ClassVar[int] = 1 << 16  # ClassVar: a compiled build keeps it readable on the class
    KEEP_LOG: ClassVar[int] = 1 << 12

    def __init__(self, states: dict[str, ReqState]) -> None:
        self._states = states
        self._num_added = 0
        self._removed: list[str] = []
        self._removed_base = 0  # log entries trimmed from the front

    def add(self, state: ReqState) -> None:
        self._states[state.req.id] = state
        self._num_added += 1

    def pop(self, request_id: str) -> ReqState | None:
        state = self._states.pop(request_id, None)
        if state is not None:
            removed = self._removed
            removed.append(request_id)
            if len(removed) > self.MAX_LOG:
                cut = len(removed) - self.KEEP_LOG
                del removed[:cut]
                self._removed_base += cut
        return state

    def mark(self) -> tuple[int, int]:
        """A position in the change log, for `changes_since`."""
        return self._num_added, self._removed_base + len(self._removed)

    def changes_since(self, mark: tuple[int, int]) -> tuple[list[str], list[Request]] | None:
        """(ids removed, requests added and still waiting, oldest first) since `mark`; None when the log
        no longer reaches back that far."""
        added, removed_at = mark
        start = removed_at - self._removed_base
        if start < 0:
            return None
        num_new = self._num_added - added
        newest = list(islice(reversed(self._states.values()), num_new)) if num_new else []
        return self._removed[start:], [s.req for s in reversed(newest)]

    def __iter__(self) -> Iterator[Request]:
        return map(_req_of, self._states.values())  # a C-level loop: policies scan thousands per call

    def __len__(self) -> int:
        return len(self._states)

    @overload
    def __getitem__(self, index: int) -> Request: ...

    @overload
    def __getitem__(self, index: slice) -> list[Request]: ...

    def __getitem__(self, index: int | slice) -> Request | list[Request]:
        if isinstance(index, slice):
            start, stop, step = index.start, index.stop, index.step
            if (start is None or start >= 0) and stop is not None and stop >= 0 and step is None:
                return list(islice(self, start, stop))  # a head: without copying every waiting request
            return [s.req for s in list(self._states.values())[index]]
        if index < 0:
            index += len(self._states)
        if not 0 <= index < len(self._states):
            raise IndexError(index)
        return next(islice(self._states.values(), index, None)).req


class PEEngine:
    __slots__ = ("group", "index", "node", "num_seqs", "num_tokens", "ready", "spec")

    def __init__(self, spec: Engine, node: int, group: int) -> None:
        self.spec = spec
        self.index = spec.index
        self.node = node
        self.group = group
        self.ready: dict[str, ReqState] = {}  # reads done, waiting for a forward batch
        self.num_seqs = 0
        self.num_tokens = 0


class DEEngine:
    __slots__ = (
        "decode_ctx_tokens",
        "free_hbm_bytes",
        "group",
        "hbm_waiting",
        "index",
        "node",
        "num_decode_seqs",
        "num_seqs",
        "num_tokens",
        "spec",
        "step_s",
    )

    def __init__(self, spec: Engine, node: int, group: int, free_hbm_bytes: int) -> None:
        self.spec = spec
        self.index = spec.index
        self.node = node
        self.group = group
        self.num_seqs = 0
        self.num_tokens = 0
        self.free_hbm_bytes = free_hbm_bytes
        self.hbm_waiting: list[ReqState] = []  # KV landed but the policy over-committed this DE's HBM
        self.num_decode_seqs = 0
        self.decode_ctx_tokens = 0
        self.step_s = 0.0  # this engine's decode step for its current batch (0 when idle)

    def admit_waiting(self) -> list[ReqState]:
        """The requests waiting for HBM that fit now, first come first served, their HBM reserved."""
        admitted = []
        while self.hbm_waiting and self.free_hbm_bytes >= self.hbm_waiting[0].context_bytes:
            waiting = self.hbm_waiting.pop(0)
            self.free_hbm_bytes -= waiting.context_bytes
            waiting.hbm_reserved = True
            admitted.append(waiting)
        return admitted
