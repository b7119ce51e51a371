"""A PE's forward batches: requests whose hit is read queue here, and one thread runs forward after forward.

Each forward takes the batch the scheduler's policy forms (`Policy.form_batch`: the paper's rules put
requests in FIFO while their predicted attention fits the 300 ms quota and chunk the one that
overflows). The policy object lives with the scheduler, in the driving process, so the PE asks it:
`GroupLeader.form_batch` sends the queue as `BatchItem`s (`FormBatch`) and the scheduler runs its
policy's `form_batch` on them, the very rule object the simulator calls; a PE that knows no
scheduler (a client submitting to it directly), or whose scheduler does not answer, takes the
default rule of `Policy.form_batch`: everything queued, in order. The queue is offered as the
simulator offers it: the requests in the order the PE received them, each as (cached tokens: hit
plus chunks already computed, tokens still to compute, when it became ready).

The engine then checks and trims the batch as the simulator's `PrefillGroup._form` does: every item
must be a queued request (or a chunk of one) at most once, or the policy is at fault; a request's own
`chunk_tokens` caps its chunk (the simulator's per-step budget is the calibration's); and the batch
is cut to what HBM holds, here the layer slots: one per request layerwise, one per request and layer
without the overlap (requests of the two kinds are never mixed in one forward). A request not taken
stays queued for the next forward; one chunked goes on from where its chunk ended.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dualpath.errors import DualpathError, InputError
from dualpath.protocol import Phase
from dualpath.runtime.engines.layerwise import ChunkWork, prefill_batch
from dualpath.runtime.engines.pe_layers import LOCAL, DeSink, SlotLoader

if TYPE_CHECKING:
    from dualpath.runtime.engines.pe_job import Job
    from dualpath.runtime.engines.prefill_engine import PrefillEngine

LOG = logging.getLogger("dualpath.runtime.engine")
CLOSE_JOIN_S = 5.0  # the forward in flight ends well within this
EMPTY_BATCH_WAIT_S = 0.05  # the policy took nothing: ask again after this long, or on an arrival


@dataclass(eq=False)
class Queued:
    """A request in the PE's prefill queue, with its progress through its chunks."""

    job: Job
    hit_tokens: int
    chunk_tokens: int | None
    layerwise: bool
    received_at: float  # when the PE got the request (time.time()): the queue's order
    ready_at: float  # when its hit was read: the `arrived_s` of its `BatchItem`
    times: dict[str, float]
    loader: SlotLoader
    sink: DeSink
    earlier_k: list[list]
    earlier_v: list[list]
    done_tokens: int = 0
    chunks: int = 0
    future: Future = field(default_factory=Future)

    @property
    def remaining_tokens(self) -> int:
        return len(self.job.tokens) - self.hit_tokens - self.done_tokens

    def item(self) -> tuple[str, int, int, float]:
        return (self.job.request, self.hit_tokens + self.done_tokens, self.remaining_tokens, self.ready_at)


def default_rule(items: list[tuple[str, int, int, float]]) -> list[tuple[str, int]]:
    """`Policy.form_batch`'s default: every queued request, whole, in order."""
    return [(request, new) for request, _, new, _ in items]


class PrefillBatcher:
    """Queues read requests of `pe` and runs them in forward batches on one thread (the GPU's)."""

    def __init__(self, pe: PrefillEngine) -> None:
        self.pe = pe
        self.queue: list[Queued] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"{pe.name}-prefill", daemon=True)
        self._thread.start()

    def prefill(self, job: Job, hit_tokens: int, chunk_tokens: int | None, layerwise: bool,
                times: dict[str, float]) -> Any:
        """Queue `job` (its hit read) and wait until its last chunk ran; its last token's logits."""
        num_layers = self.pe.decoder.config.num_layers
        entry = Queued(job, hit_tokens, chunk_tokens, layerwise, times["arrival"], time.time(), times,
                       SlotLoader(self.pe, job), DeSink(self.pe, job), [[] for _ in range(num_layers)],
                       [[] for _ in range(num_layers)])
        with self._cond:
            if self._closed:
                raise DualpathError(f"{self.pe.name}: engine closed")
            self.queue.append(entry)
            self.queue.sort(key=lambda q: q.received_at)
            self._cond.notify_all()
        return entry.future.result()

    def close(self) -> None:
        """Stop after the forward running now (its requests hold slots it frees); queued ones fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:  # no torch call may outlive its engine
            self._thread.join(CLOSE_JOIN_S)

    # -- the GPU's thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self.queue:
                    self._cond.wait()
                queue = list(self.queue)
            if self._closed:
                self._settle(queue, DualpathError(f"{self.pe.name}: engine closed"))
                return
            try:
                batch = self._form(queue)
            except Exception as exc:  # the policy's fault: the requests it was asked about fail
                LOG.error("%s: %s", self.pe.name, exc)
                self._settle(queue, exc)
                continue
            if not batch:
                with self._cond:
                    self._cond.wait(EMPTY_BATCH_WAIT_S)
                continue
            try:
                self._run(batch)
            except Exception as exc:  # never leave a request waiting on a thread that is gone
                LOG.exception("%s: prefill forward failed", self.pe.name)
                self._settle([entry for entry, _ in batch], exc)

    def _form(self, queue: list[Queued]) -> list[tuple[Queued, int]]:
        """The next forward: the policy's batch over the queue's head kind, checked and trimmed."""
        pe = self.pe
        layerwise = queue[0].layerwise
        mine = [q for q in queue if q.layerwise is layerwise]
        items = [q.item() for q in mine]
        leader = pe.leader
        chosen = leader.form_batch(items) if leader is not None else None
        if chosen is None:
            chosen = default_rule(items)
        slots = pe.options.num_slots if layerwise else pe.options.num_slots // pe.decoder.config.num_layers
        by_id = {q.job.request: q for q in mine}
        batch: list[tuple[Queued, int]] = []
        for request, new in chosen:
            entry = by_id.pop(request, None)
            if entry is None or not 1 <= new <= entry.remaining_tokens:
                raise InputError("policy form_batch", f"returned {request!r} ({new} new tokens): not a queued "
                                                      "request or a chunk of one, or one taken twice")
            if entry.chunk_tokens is not None:
                new = min(new, entry.chunk_tokens)
            if len(batch) < slots:
                batch.append((entry, new))
        return batch

    def _run(self, batch: list[tuple[Queued, int]]) -> None:
        pe = self.pe
        works: list[tuple[Queued, ChunkWork]] = []
        for entry, new in batch:
            job = entry.job
            try:
                if entry.chunks == 0:
                    pe.set_phase(job, Phase.PREFILLING)
                    pe.take_step(job.request, job.steps["start_prefill"], job.sizes, job.owners(pe), LOCAL)
                    entry.times["prefill_start"] = time.time()
            except BaseException as exc:
                self._settle([entry], exc)
                continue
            start = entry.hit_tokens + entry.done_tokens
            works.append((entry, ChunkWork(job.tokens[start:start + new], start, entry.hit_tokens, entry.chunks,
                                           entry.loader, entry.sink, entry.earlier_k, entry.earlier_v,
                                           keep=new < entry.remaining_tokens)))
        if not works:
            return
        pe.batches.record(len(works))
        prefill_batch(pe.decoder, [w for _, w in works], preload=not works[0][0].layerwise)
        for entry, work in works:
            if work.error is not None:
                self._settle([entry], work.error)
                continue
            entry.done_tokens += len(work.tokens)
            entry.chunks += 1
            if entry.remaining_tokens == 0:
                self._settle([entry], None, work.logits)

    def _settle(self, entries: list[Queued], error: BaseException | None, logits: Any = None) -> None:
        """Out of the queue, with the prefill's outcome."""
        with self._cond:
            self.queue = [q for q in self.queue if q not in entries]
        for entry in entries:
            if entry.future.done():
                continue
            if error is not None:
                entry.future.set_exception(error)
            else:
                entry.future.set_result(logits)
