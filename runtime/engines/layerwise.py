"""Layerwise prefill: layer k waits only for its own cached KV, and loads, compute and sends overlap.

Three threads per request: a loader takes an HBM layer slot and fills it with layer k+1's hit KV
(protocol step `layer_load`), the caller's thread computes layer k, and a sender ships layer k-1's KV
to the decode side (`layer_send`) and then frees the slot (`layer_done`). The number of slots bounds
how far loading runs ahead. Where the KV comes from (PE buffer, or written into the slot by the DE) and
what is sent (full KV on the PE-read path, new tokens only on the DE-read path) are the loader's and
the sink's business, so the same loop serves both paths.

Chunked prefill runs the new tokens as consecutive chunks, each a full layerwise pass; chunk c at
layer k attends to the hit KV (reloaded into a slot) and to the new KV of chunks < c, kept here.
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
    """Compute `new_tokens` at positions hit_tokens.. against the hit KV that `loader` brings in.

    Returns the logits [vocab] of the last new token. Every layer of every chunk is loaded, computed
    and sent exactly once, in layer order; an error on any thread stops all three and is re-raised.
    `preload` is prefill without the layerwise overlap (the paper's Basic): a chunk's computation
    starts once all its layers are loaded, which needs one HBM slot per layer.
    """
    torch = decoder.torch
    num_layers = decoder.config.num_layers
    bounds = chunk_bounds(len(new_tokens), chunk_tokens)
    loaded: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in range(len(bounds) * num_layers)]
    to_send: queue.Queue = queue.Queue()
    stop = threading.Event()
    errors: list[BaseException] = []

    def load_all() -> None:
        for index in range(len(loaded)):
            if stop.is_set():
                return
            chunk, layer = divmod(index, num_layers)
            try:
                item: Any = loader.load(chunk, layer)
            except BaseException as exc:
                item = _Failure(exc)
            loaded[index].put(item)
            if isinstance(item, _Failure):
                return

    def send_all() -> None:
        while True:
            item = to_send.get()
            if item is None:
                return
            handle, first_token, k_new, v_new = item
            try:
                if not errors:
                    sink.send(handle, first_token, k_new, v_new)
            except BaseException as exc:
                errors.append(exc)
                stop.set()
            finally:
                loader.release(handle)

    loader_thread = threading.Thread(target=load_all, name="layer-loader", daemon=True)
    sender_thread = threading.Thread(target=send_all, name="layer-sender", daemon=True)
    loader_thread.start()
    sender_thread.start()
    earlier_k: list[list] = [[] for _ in range(num_layers)]
    earlier_v: list[list] = [[] for _ in range(num_layers)]
    last_hidden = None
    try:
        for chunk, (start, end) in enumerate(bounds):
            first_token = hit_tokens + start
            hidden = decoder.embed(new_tokens[start:end])
            positions = torch.arange(first_token, hit_tokens + end, device=decoder.device)
            ready = _take_all(loaded[chunk * num_layers:(chunk + 1) * num_layers], errors) if preload else None
            for layer in range(num_layers):
                item = ready[layer] if ready else _take(loaded[chunk * num_layers + layer], errors)
                if isinstance(item, _Failure):
                    raise item.exc
                past_k, past_v = item.k[:hit_tokens], item.v[:hit_tokens]
                if earlier_k[layer]:
                    past_k = torch.cat([past_k, *earlier_k[layer]])
                    past_v = torch.cat([past_v, *earlier_v[layer]])
                hidden, k_new, v_new = decoder.layer(layer, hidden, positions, past_k, past_v)
                if chunk + 1 < len(bounds):
                    earlier_k[layer].append(k_new)
                    earlier_v[layer].append(v_new)
                to_send.put((item, first_token, k_new, v_new))
            last_hidden = hidden[-1:]
    except BaseException:
        stop.set()
        raise
    finally:
        to_send.put(None)
        sender_thread.join()
        stop.set()
        while loader_thread.is_alive():  # a load blocked on a slot finishes once sends free slots
            _drain(loaded, loader)
            loader_thread.join(timeout=0.05)
        _drain(loaded, loader)
    if errors:
        raise errors[0]
    return decoder.logits(last_hidden)[0]


def _take(slot_queue: queue.Queue, errors: list[BaseException]):
    """Wait for a loaded layer, waking up to notice a failed send."""
    while True:
        if errors:
            raise errors[0]
        try:
            return slot_queue.get(timeout=0.05)
        except queue.Empty:
            continue


def _take_all(slot_queues: list[queue.Queue], errors: list[BaseException]) -> list:
    """Every layer of a chunk (non-layerwise prefill); stops at a failed load, which comes last."""
    items = []
    for slot_queue in slot_queues:
        items.append(_take(slot_queue, errors))
        if isinstance(items[-1], _Failure):
            break
    return items


def _drain(loaded: list[queue.Queue], loader: LayerLoader) -> None:
    """Release slots loaded ahead of a failure so nothing leaks."""
    for slot_queue in loaded:
        try:
            item = slot_queue.get_nowait()
        except queue.Empty:
            continue
        if isinstance(item, LayerHandle):
            loader.release(item)
