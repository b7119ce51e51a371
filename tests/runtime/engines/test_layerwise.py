"""Layerwise prefill: same numbers as a full forward, layer k waits only for layer k, bounded slots."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from dualpath.errors import SpecError
from dualpath.runtime.engines.decoder import Decoder, DecoderConfig
from dualpath.runtime.engines.layerwise import LayerHandle, chunk_bounds, prefill_layerwise

CONFIG = DecoderConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=3, num_heads=4,
                       num_kv_heads=2, head_dim=16)
TOLERANCE = 1e-4  # max |logit difference| allowed against the no-cache reference (float32)


@pytest.fixture(scope="module")
def decoder():
    return Decoder.from_seed(CONFIG, seed=11)


def tokens_of(n: int, seed: int = 1) -> list[int]:
    return torch.randint(0, CONFIG.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


class MemoryLoader:
    """Slots are a semaphore; the hit KV of each layer comes from a reference forward pass."""

    def __init__(self, hit_kv, num_slots: int = 2, gate=None):
        self.hit_kv = hit_kv
        self.num_slots = num_slots
        self.slots = threading.Semaphore(num_slots)
        self.outstanding = 0
        self.max_outstanding = 0
        self.log: list[tuple] = []
        self.lock = threading.Lock()
        self.gate = gate or (lambda chunk, layer: None)

    def load(self, chunk, layer):
        self.slots.acquire()
        with self.lock:
            self.outstanding += 1
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            self.log.append(("load", chunk, layer))
        self.gate(chunk, layer)
        k, v = self.hit_kv[layer]
        return LayerHandle(chunk, layer, k.clone(), v.clone())

    def release(self, handle):
        with self.lock:
            self.outstanding -= 1
            self.log.append(("release", handle.chunk, handle.layer))
        self.slots.release()


class MemorySink:
    def __init__(self, fail_at=None, on_send=None):
        self.sent: dict[int, list] = {}
        self.fail_at = fail_at
        self.on_send = on_send or (lambda layer: None)

    def send(self, handle, first_token, k_new, v_new):
        if handle.layer == self.fail_at:
            raise RuntimeError(f"link down at layer {handle.layer}")
        self.sent.setdefault(handle.layer, []).append((first_token, k_new, v_new))
        self.on_send(handle.layer)


def sent_kv(sink, layer):
    parts = sorted(sink.sent[layer], key=lambda p: p[0])
    return torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])


@pytest.mark.parametrize("hit,chunk", [(0, None), (32, None), (32, 5), (48, 1), (16, 64)])
def test_layerwise_prefill_matches_full_forward(decoder, hit, chunk):
    tokens = tokens_of(hit + 17)
    full_logits, full_kv = decoder.forward(tokens)
    hit_kv = [(k[:hit], v[:hit]) for k, v in full_kv]
    sink = MemorySink()
    logits = prefill_layerwise(decoder, tokens[hit:], hit, MemoryLoader(hit_kv), sink, chunk_tokens=chunk)
    assert (logits - full_logits[-1]).abs().max().item() <= TOLERANCE
    assert int(logits.argmax()) == int(full_logits[-1].argmax())
    for layer in range(CONFIG.num_layers):
        k, v = sent_kv(sink, layer)
        assert torch.allclose(k, full_kv[layer][0][hit:], atol=TOLERANCE)
        assert torch.allclose(v, full_kv[layer][1][hit:], atol=TOLERANCE)
        assert [p[0] for p in sorted(sink.sent[layer], key=lambda p: p[0])] == \
            [hit + s for s, _ in chunk_bounds(17, chunk)]


def test_layer_k_waits_only_for_its_own_layer(decoder):
    """Layer 1's load is held until layer 0 has been computed and sent: if prefill waited for all
    layers before computing, this would never finish."""
    tokens = tokens_of(40)
    _, full_kv = decoder.forward(tokens)
    layer0_sent = threading.Event()

    def gate(chunk, layer):
        if layer == 1 and not layer0_sent.wait(timeout=10):
            raise TimeoutError("layer 0 was never computed while layer 1 was loading")

    sink = MemorySink(on_send=lambda layer: layer0_sent.set() if layer == 0 else None)
    loader = MemoryLoader([(k[:32], v[:32]) for k, v in full_kv], gate=gate)
    prefill_layerwise(decoder, tokens[32:], 32, loader, sink)
    assert layer0_sent.is_set()


def test_next_layer_loads_while_this_layer_computes(decoder):
    """The loader runs ahead: layer 1 starts loading before layer 0's compute is allowed to finish."""
    tokens = tokens_of(40)
    _, full_kv = decoder.forward(tokens)
    layer1_loading = threading.Event()

    class Watching(Decoder):
        def layer_batch(self, index, *args, **kwargs):
            if index == 0:
                assert layer1_loading.wait(timeout=10), "layer 1 did not start loading during layer 0"
            return super().layer_batch(index, *args, **kwargs)

    watching = Watching(CONFIG, decoder.weights)
    loader = MemoryLoader([(k[:32], v[:32]) for k, v in full_kv],
                          gate=lambda chunk, layer: layer1_loading.set() if layer == 1 else None)
    prefill_layerwise(watching, tokens[32:], 32, loader, MemorySink())


@pytest.mark.parametrize("num_slots", [1, 2, 3])
def test_slots_bound_the_lookahead_and_all_are_released(decoder, num_slots):
    tokens = tokens_of(30)
    _, full_kv = decoder.forward(tokens)
    loader = MemoryLoader([(k[:16], v[:16]) for k, v in full_kv], num_slots=num_slots)
    prefill_layerwise(decoder, tokens[16:], 16, loader, MemorySink(), chunk_tokens=4)
    assert loader.max_outstanding <= num_slots
    loads = [e for e in loader.log if e[0] == "load"]
    releases = [e for e in loader.log if e[0] == "release"]
    assert len(loads) == len(releases) == 4 * CONFIG.num_layers
    assert [e[1:] for e in loads] == [(c, layer) for c in range(4) for layer in range(CONFIG.num_layers)]


def test_a_failed_send_stops_prefill_and_frees_every_slot(decoder):
    tokens = tokens_of(30)
    _, full_kv = decoder.forward(tokens)
    loader = MemoryLoader([(k[:16], v[:16]) for k, v in full_kv], num_slots=2)
    with pytest.raises(RuntimeError, match="link down at layer 1"):
        prefill_layerwise(decoder, tokens[16:], 16, loader, MemorySink(fail_at=1))
    assert loader.outstanding == 0


def test_a_failed_load_is_raised_on_the_caller(decoder):
    def gate(chunk, layer):
        if layer == 2:
            raise OSError("block unreadable")

    loader = MemoryLoader([(torch.zeros(0, 2, 16), torch.zeros(0, 2, 16))] * 3, gate=gate)
    with pytest.raises(OSError, match="unreadable"):
        prefill_layerwise(decoder, tokens_of(5), 0, loader, MemorySink())
    assert loader.outstanding == 1  # the failed load's own slot stays with the loader that failed


def test_chunk_bounds():
    assert chunk_bounds(10, None) == [(0, 10)]
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(SpecError, match="chunk_tokens"):
        chunk_bounds(10, 0)
    with pytest.raises(SpecError, match="num_new_tokens"):
        chunk_bounds(0, None)
