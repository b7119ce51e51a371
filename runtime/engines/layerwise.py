"""Layerwise prefill of a forward batch: layer k waits only for its own KV; loads, compute and sends overlap.

A batch is one chunk of each of several requests (`ChunkWork`). A loader thread takes an HBM layer slot
per request and fills it with that request's layer k+1 hit KV (protocol step `layer_load`), the
caller's thread computes layer k of every request in one packed pass (`Decoder.layer_batch`) once all
of them have layer k in HBM, and one sender per request ships its layer k-1 KV to its decode side
(`layer_send`) and frees the slot (`layer_done`). The number of slots bounds how far loading runs
ahead; a batch needs at least one slot per request (one per request and layer without the overlap).
Where each request's KV comes from (PE buffer, or written into the slot by the DE) and what is sent
(full KV on the PE-read path, new tokens only on the DE-read path) are its loader's and sink's
business, so requests of one batch may read on different paths.

Chunked prefill runs a request's new tokens as consecutive chunks, each in some forward batch; chunk c
at layer k attends to the hit KV (reloaded into a slot) and to the new KV of chunks < c, which the
request keeps (`earlier_k` / `earlier_v`). A request whose load or send fails drops out of the batch
with its error; the others go on.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from dualpath.errors import SpecError


@dataclass
class LayerHandle:
    """One loaded layer of hit KV in an HBM slot: K/V views [hit_tokens, kv_heads, head_dim]."""

    chunk: int
    layer: int
    k: Any
    v: Any
    slot: Any = None
    extra: dict = field(default_factory=dict)


class LayerLoader(Protocol):
    def load(self, chunk: int, layer: int) -> LayerHandle:
        """Take a slot and block until layer `layer`'s hit KV is in it (runs on the loader thread)."""
        ...

    def release(self, handle: LayerHandle) -> None:
        """Free the handle's slot (after its layer was sent)."""


class LayerSink(Protocol):
    def send(self, handle: LayerHandle, first_token: int, k_new: Any, v_new: Any) -> None:
        """Ship one layer of one chunk to the decode side; blocks until it is delivered."""


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


_SKIPPED = object()  # a layer not loaded because its request already failed


@dataclass
class ChunkWork:
    """One request's chunk in a forward batch; `logits` (of its last token) or `error` once it ran."""

    tokens: list[int]  # the chunk's new tokens
    first_token: int  # position of tokens[0]: the hit plus the request's earlier chunks
    hit_tokens: int
    chunk: int  # the request's chunk index
    loader: LayerLoader
    sink: LayerSink
    earlier_k: list[list]  # per layer: new K of the request's earlier chunks, in order
    earlier_v: list[list]
    keep: bool = False  # more chunks follow: keep this chunk's new KV in earlier_k / earlier_v
    logits: Any = None
    error: BaseException | None = None


def chunk_bounds(num_new_tokens: int, chunk_tokens: int | None) -> list[tuple[int, int]]:
    """[start, end) of each chunk of the new tokens; one chunk when `chunk_tokens` is None."""
    if num_new_tokens <= 0:
        raise SpecError("prefill", "num_new_tokens", num_new_tokens, "at least one new token")
    if chunk_tokens is None:
        return [(0, num_new_tokens)]
    if not isinstance(chunk_tokens, int) or chunk_tokens <= 0:
        raise SpecError("prefill", "chunk_tokens", chunk_tokens, "a positive integer or None")
    return [(s, min(s + chunk_tokens, num_new_tokens)) for s in range(0, num_new_tokens, chunk_tokens)]


def prefill_layerwise(decoder, new_tokens, hit_tokens: int, loader: LayerLoader, sink: LayerSink,
                      chunk_tokens: int | None = None, preload: bool = False):
    """One request alone: its chunks as consecutive one-request batches. Returns the logits [vocab] of
    its last token, or raises the error that stopped it."""
    num_layers = decoder.config.num_layers
    bounds = chunk_bounds(len(new_tokens), chunk_tokens)
    earlier_k: list[list] = [[] for _ in range(num_layers)]
    earlier_v: list[list] = [[] for _ in range(num_layers)]
    work = None
    for chunk, (start, end) in enumerate(bounds):
        work = ChunkWork(list(new_tokens[start:end]), hit_tokens + start, hit_tokens, chunk, loader, sink,
                         earlier_k, earlier_v, keep=chunk + 1 < len(bounds))
        prefill_batch(decoder, [work], preload)
        if work.error is not None:
            raise work.error
    assert work is not None  # chunk_bounds gives at least one chunk
    return work.logits


def prefill_batch(decoder, works: list[ChunkWork], preload: bool = False) -> None:
    """Run one forward over `works`, setting each one's `logits` or `error`.

    Every layer of every request is loaded, computed and sent exactly once, in layer order (requests
    in batch order within a layer). `preload` is prefill without the layerwise overlap (the paper's
    Basic): computation starts once every layer of every request is loaded. An error of the compute
    itself fails every request of the batch.
    """
    torch = decoder.torch
    num_layers, num_works = decoder.config.num_layers, len(works)
    loaded: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in range(num_layers * num_works)]
    to_send: list[queue.Queue] = [queue.Queue() for _ in works]
    stop = threading.Event()

    def load_all() -> None:
        for index in range(len(loaded)):
            layer, i = divmod(index, num_works)
            work = works[i]
            if stop.is_set():
                return
            if work.error is not None:
                loaded[index].put(_SKIPPED)
                continue
            try:
                item: Any = work.loader.load(work.chunk, layer)
            except BaseException as exc:
                work.error = exc
                item = _Failure(exc)
            loaded[index].put(item)

    def send_all(work: ChunkWork, items: queue.Queue) -> None:
        while True:
            item = items.get()
            if item is None:
                return
            handle, k_new, v_new = item
            try:
                if work.error is None:
                    work.sink.send(handle, work.first_token, k_new, v_new)
            except BaseException as exc:
                work.error = exc
            finally:
                work.loader.release(handle)

    loader_thread = threading.Thread(target=load_all, name="layer-loader", daemon=True)
    senders = [threading.Thread(target=send_all, args=(w, q), name="layer-sender", daemon=True)
               for w, q in zip(works, to_send)]
    loader_thread.start()
    for sender in senders:
        sender.start()
    hidden = [decoder.embed(w.tokens) for w in works]
    positions = [torch.arange(w.first_token, w.first_token + len(w.tokens), device=decoder.device) for w in works]
    try:
        if preload:
            for index in range(len(loaded)):  # wait for every load; each stays queued for its layer
                loaded[index].put(loaded[index].get())
        for layer in range(num_layers):
            live, segments = [], []
            for i, work in enumerate(works):
                item = loaded[layer * num_works + i].get()
                if not isinstance(item, LayerHandle):
                    continue  # failed or skipped: its error is set
                if work.error is not None:
                    to_send[i].put((item, None, None))  # the sender frees the slot without sending
                    continue
                past_k, past_v = item.k[:work.hit_tokens], item.v[:work.hit_tokens]
                if work.earlier_k[layer]:
                    past_k = torch.cat([past_k, *work.earlier_k[layer]])
                    past_v = torch.cat([past_v, *work.earlier_v[layer]])
                live.append((i, item))
                segments.append((len(work.tokens), past_k, past_v))
            if not live:
                break
            packed = torch.cat([hidden[i] for i, _ in live]) if len(live) > 1 else hidden[live[0][0]]
            where = torch.cat([positions[i] for i, _ in live]) if len(live) > 1 else positions[live[0][0]]
            out, k_all, v_all = decoder.layer_batch(layer, packed, where, segments)
            start = 0
            for i, handle in live:
                work, end = works[i], start + len(works[i].tokens)
                hidden[i], k_new, v_new = out[start:end], k_all[start:end], v_all[start:end]
                if work.keep:
                    work.earlier_k[layer].append(k_new)
                    work.earlier_v[layer].append(v_new)
                to_send[i].put((handle, k_new, v_new))
                start = end
    except BaseException as exc:  # the compute itself: no request of the batch has its KV
        for work in works:
            if work.error is None:
                work.error = exc
    finally:
        stop.set()
        for items in to_send:
            items.put(None)
        for sender in senders:
            sender.join()
        while loader_thread.is_alive():  # a load blocked on a slot finishes once sends free slots
            _drain(loaded, works)
            loader_thread.join(timeout=0.05)
        _drain(loaded, works)
    done = [i for i, w in enumerate(works) if w.error is None]
    if done:
        rows = decoder.logits(torch.cat([hidden[i][-1:] for i in done]))
        for i, row in zip(done, rows):
            works[i].logits = row


def _drain(loaded: list[queue.Queue], works: list[ChunkWork]) -> None:
    """Release slots loaded ahead of a failure so nothing leaks."""
    for index, slot_queue in enumerate(loaded):
        try:
            item = slot_queue.get_nowait()
        except queue.Empty:
            continue
        if isinstance(item, LayerHandle):
            works[index % len(works)].loader.release(item)
