"""A DE's continuous batching: one decode forward per step over every running sequence.

Each handed-off request becomes a `Sequence` (its KV cache in HBM, its context so far). The batcher's
thread, the GPU's, runs step after step: at a step boundary the sequences handed off meanwhile join;
one forward computes the next token of every running sequence at once (`Decoder.layer_batch`: the
projections and MLP packed over the batch, attention ragged, each sequence over its own cache up to
its own position); each Full Block a sequence's context completes goes to its `on_block` (the DE
persists it) as soon as the step that completed it ends; a sequence with all its tokens leaves, and
the next step runs without it. A step that fails fails the sequences it ran; the others are unhurt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dualpath.errors import DualpathError

CLOSE_JOIN_S = 5.0  # a step in flight ends well within this

if TYPE_CHECKING:
    from dualpath.runtime.engines.decode_engine import DecodeEngine


@dataclass(eq=False)
class Sequence:
    """One request decoding: `context` is the prompt and the tokens so far, `kv` its cache
    [layers, 2, prompt + max_new, kv_heads, head_dim] holding every position but the last."""

    request: str
    kv: Any
    context: list[int]
    num_prompt: int
    max_new_tokens: int
    on_block: Callable[[int], None]  # Full Block index: its KV is complete in `kv`
    keep_logits: bool = False
    rows: list = field(default_factory=list)  # logits that chose each token after the first, when kept
    times: dict[str, float] = field(default_factory=dict)
    future: Future = field(default_factory=Future)

    @property
    def finished(self) -> bool:
        return len(self.context) - self.num_prompt >= self.max_new_tokens


class DecodeBatcher:
    """Runs the decode steps of `de`'s sequences on one thread; `decode` blocks until a sequence is done."""

    def __init__(self, de: DecodeEngine) -> None:
        self.de = de
        self.joining: list[Sequence] = []
        self.running: list[Sequence] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"{de.name}-decode", daemon=True)
        self._thread.start()

    def decode(self, seq: Sequence) -> None:
        """Decode `seq` to its last token (joining at the next step boundary); raises what stopped it."""
        self.join([seq])[0].result()

    def join(self, seqs: list[Sequence]) -> list[Future]:
        """Let `seqs` join the running batch together at the next step boundary; each future is done
        when its sequence has its last token (or failed)."""
        with self._cond:
            if self._closed:
                raise DualpathError(f"{self.de.name}: engine closed")
            for seq in seqs:
                if seq.finished:  # its one token came from the prefill
                    seq.future.set_result(None)
                else:
                    self.joining.append(seq)
            self._cond.notify_all()
        return [seq.future for seq in seqs]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            left, self.joining = self.joining, []
            self._cond.notify_all()
        for seq in left:
            _fail(seq, DualpathError(f"{self.de.name}: engine closed"))
        if threading.current_thread() is not self._thread:  # no torch call may outlive its engine
            self._thread.join(CLOSE_JOIN_S)

    def _loop(self) -> None:
        torch = self.de.torch
        while True:
            with self._cond:
                while not self._closed and not self.running and not self.joining:
                    self._cond.wait()
                if self._closed:
                    left, self.running = self.running, []
                    break
                self.running += self.joining  # a step boundary: arrivals join
                self.joining = []
                running = list(self.running)
            try:
                logits = self.step(running)
            except BaseException as exc:
                for seq in running:
                    _fail(seq, exc)
                with self._cond:
                    self.running = [s for s in self.running if s not in running]
                continue
            self.de.batches.record(len(running))
            done = []
            for seq, row in zip(running, logits):
                pos = len(seq.context) - 1
                seq.context.append(int(torch.argmax(row)))
                seq.times.setdefault("second_token", time.time())
                if seq.keep_logits:
                    seq.rows.append(row)
                if (pos + 1) % self.de.layout.block_tokens == 0:
                    try:
                        seq.on_block(pos // self.de.layout.block_tokens)
                    except BaseException as exc:
                        _fail(seq, exc)
                        done.append(seq)
                        continue
                if seq.finished:
                    done.append(seq)
                    if not seq.future.done():
                        seq.future.set_result(None)
            with self._cond:  # a step boundary: the finished leave
                self.running = [s for s in self.running if s not in done]
        for seq in left:
            _fail(seq, DualpathError(f"{self.de.name}: engine closed"))

    def step(self, seqs: list[Sequence]):
        """One forward: the KV of each sequence's last token at its position, and the logits [B, vocab]
        that choose each one's next token."""
        decoder = self.de.decoder
        torch = decoder.torch
        ends = [len(s.context) - 1 for s in seqs]
        hidden = decoder.embed([s.context[-1] for s in seqs])
        positions = torch.tensor(ends, device=decoder.device)
        for layer in range(decoder.config.num_layers):
            segments = [(1, s.kv[layer, 0, :pos], s.kv[layer, 1, :pos]) for s, pos in zip(seqs, ends)]
            hidden, k, v = decoder.layer_batch(layer, hidden, positions, segments)
            for i, (s, pos) in enumerate(zip(seqs, ends)):
                s.kv[layer, 0, pos] = k[i]
                s.kv[layer, 1, pos] = v[i]
        return decoder.logits(hidden)


def _fail(seq: Sequence, error: BaseException) -> None:
    if not seq.future.done():
        seq.future.set_exception(error)
