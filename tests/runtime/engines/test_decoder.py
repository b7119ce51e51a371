"""The plain-torch decoder, its safetensors checkpoints and the KV codec."""

from __future__ import annotations

import json
import struct

import pytest

torch = pytest.importorskip("torch")

from dualpath.errors import InputError, SpecError
from dualpath.runtime.engines.checkpoint import (
    load_checkpoint,
    read_safetensors,
    save_checkpoint,
    write_safetensors,
)
from dualpath.runtime.engines.decoder import Decoder, DecoderConfig, random_weights
from dualpath.runtime.engines.kvcodec import KVCodec

CONFIG = DecoderConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4,
                       num_kv_heads=2, head_dim=16)


@pytest.fixture(scope="module")
def decoder():
    return Decoder.from_seed(CONFIG, seed=7)


def prompt(n: int, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, CONFIG.vocab_size, (n,), generator=gen).tolist()


def test_cached_forward_matches_full_forward(decoder):
    tokens = prompt(45)
    full_logits, _ = decoder.forward(tokens)
    _, kv = decoder.forward(tokens[:30])
    tail_logits, _ = decoder.forward(tokens[30:], past=kv, start_pos=30)
    assert torch.allclose(full_logits[30:], tail_logits, atol=1e-5)


def test_causality_future_tokens_do_not_change_past_logits(decoder):
    tokens = prompt(20)
    a, _ = decoder.forward(tokens)
    b, _ = decoder.forward(tokens[:12] + [(t + 1) % CONFIG.vocab_size for t in tokens[12:]])
    assert torch.equal(a[:12], b[:12])
    assert not torch.allclose(a[12:], b[12:])


def test_gqa_head_sharing_matches_explicit_per_head_attention(decoder):
    # Same model with num_kv_heads = num_heads and K/V weights duplicated per group is identical.
    config = DecoderConfig(**{**CONFIG.__dict__, "num_kv_heads": CONFIG.num_heads})
    weights = dict(decoder.weights)
    group = CONFIG.num_heads // CONFIG.num_kv_heads
    for i in range(CONFIG.num_layers):
        for proj in ("k_proj", "v_proj"):
            name = f"model.layers.{i}.self_attn.{proj}.weight"
            w = weights[name].view(CONFIG.num_kv_heads, CONFIG.head_dim, -1)
            weights[name] = w.repeat_interleave(group, dim=0).reshape(-1, CONFIG.hidden_size)
    wide = Decoder(config, weights)
    tokens = prompt(17)
    assert torch.allclose(decoder.forward(tokens)[0], wide.forward(tokens)[0], atol=1e-5)


def test_generate_is_greedy_over_full_recompute(decoder):
    tokens = prompt(10)
    out, logits = decoder.generate(tokens, 4)
    assert out == [int(row.argmax()) for row in logits]
    again, _ = decoder.forward(tokens + out[:3])
    assert int(again[-1].argmax()) == out[3]


def test_seed_determines_weights():
    a, b, c = random_weights(CONFIG, 1), random_weights(CONFIG, 1), random_weights(CONFIG, 2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])


def test_bad_config_names_field():
    with pytest.raises(SpecError, match="num_kv_heads"):
        DecoderConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(SpecError, match="dtype"):
        DecoderConfig(dtype="int8")


@pytest.mark.parametrize("model_type,bias,tied", [("llama", False, False), ("qwen2", True, True)])
def test_checkpoint_roundtrip_matches_in_memory_model(tmp_path, model_type, bias, tied):
    config = DecoderConfig(**{**CONFIG.__dict__, "attention_bias": bias, "tie_word_embeddings": tied})
    weights = random_weights(config, seed=3)
    save_checkpoint(tmp_path, config, weights, model_type=model_type)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["model_type"] == model_type and hf["num_key_value_heads"] == 2
    loaded = load_checkpoint(tmp_path)
    assert loaded.config == config
    tokens = prompt(25, seed=4)
    expected, _ = Decoder(config, weights).forward(tokens)
    got, _ = loaded.forward(tokens)
    assert torch.equal(expected, got)


def test_checkpoint_loads_bf16_weights_and_hf_names(tmp_path):
    weights = {n: t.to(torch.bfloat16) for n, t in random_weights(CONFIG, seed=5).items()}
    save_checkpoint(tmp_path, CONFIG, weights)
    raw = read_safetensors(tmp_path / "model.safetensors")
    assert raw["model.layers.2.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert raw["model.layers.0.mlp.down_proj.weight"].shape == (CONFIG.hidden_size, CONFIG.intermediate_size)
    loaded = load_checkpoint(tmp_path)
    reference = Decoder(CONFIG, {n: t.float() for n, t in weights.items()})
    assert torch.equal(loaded.forward([1, 2, 3])[0], reference.forward([1, 2, 3])[0])


def test_safetensors_layout_is_the_reference_format(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"b": torch.arange(3, dtype=torch.int32), "a": torch.ones(2, 2)})
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    assert header_len % 8 == 0
    header = json.loads(raw[8:8 + header_len])
    assert header["a"] == {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    assert header["b"] == {"dtype": "I32", "shape": [3], "data_offsets": [16, 28]}
    assert raw[8 + header_len + 16:] == struct.pack("<3i", 0, 1, 2)


def test_corrupt_checkpoint_raises_input_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"{no")
    with pytest.raises(InputError, match="not a valid safetensors file"):
        read_safetensors(path)
    with pytest.raises(InputError, match="cannot read"):
        read_safetensors(tmp_path / "missing.safetensors")
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(InputError, match="not a valid safetensors file"):
        read_safetensors(path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(SpecError, match="model_type"):
        load_checkpoint(tmp_path)


def test_kv_codec_full_block_is_layer_blocks_concatenated(decoder):
    codec = KVCodec.for_model(CONFIG, block_tokens=8)
    assert codec.layout.kv_bytes_per_token_per_layer == 2 * 2 * 16 * 4
    _, kv = decoder.forward(prompt(16))
    raw = codec.encode_full_block(kv, first_token=8)
    assert len(raw) == codec.layout.full_block_bytes
    buf = bytearray(raw)
    for layer in range(CONFIG.num_layers):
        start = codec.layout.layer_offset_bytes(layer)
        layer_view = codec.layer_view(memoryview(buf)[start:start + codec.layout.layer_block_bytes], 1)
        k, v = codec.layer_kv(layer_view, 8)
        assert torch.equal(k, kv[layer][0][8:16]) and torch.equal(v, kv[layer][1][8:16])
        k2, _ = codec.layer_kv(codec.blocks_view(buf, 1)[:, layer], 8)
        assert torch.equal(k2, k)


def test_tensors_sharing_one_buffer_are_written_as_copies(tmp_path):
    # Views of one storage at other offsets (not only tied embeddings) must not make safetensors refuse.
    buffer = torch.arange(10.0)
    path = tmp_path / "views.safetensors"
    write_safetensors(path, {"tail": buffer[4:], "whole": buffer})  # "tail" first: a view at offset 4
    back = read_safetensors(path)
    assert back["tail"].tolist() == [4, 5, 6, 7, 8, 9] and torch.equal(back["whole"], buffer)
