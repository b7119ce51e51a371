"""A Llama/Qwen2-style decoder in plain torch: RMSNorm, RoPE, GQA attention, SwiGLU.

Weights live in one dict keyed by Hugging Face tensor names, so a safetensors checkpoint
(`dualpath.runtime.engines.checkpoint`) and a seeded random model are the same object. The forward pass is
split per layer because layerwise prefill runs one layer at a time against cached K/V that arrives
layer by layer; K is cached after RoPE, as every serving engine does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dualpath.errors import SpecError, require

_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of the decoder; field names follow the Hugging Face config where one exists."""

    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False  # Qwen2 has q/k/v biases, Llama does not
    tie_word_embeddings: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SpecError("DecoderConfig", name, value, "a positive integer")
        if self.num_heads % self.num_kv_heads:
            raise SpecError("DecoderConfig", "num_kv_heads", self.num_kv_heads,
                            f"a divisor of num_heads = {self.num_heads}")
        if self.head_dim % 2:
            raise SpecError("DecoderConfig", "head_dim", self.head_dim, "an even number (RoPE pairs)")
        if not self.rope_theta > 0:
            raise SpecError("DecoderConfig", "rope_theta", self.rope_theta, "a positive number")
        if self.dtype not in _DTYPES:
            raise SpecError("DecoderConfig", "dtype", self.dtype, "one of " + ", ".join(_DTYPES))

    @property
    def kv_width(self) -> int:
        """Elements of K (or V) per token per layer."""
        return self.num_kv_heads * self.head_dim


def torch_dtype(name: str):
    torch = require("torch", "runtime")
    return getattr(torch, name)


def weight_shapes(config: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model by its Hugging Face name, in a stable order."""
    h, q, kv, ff = config.hidden_size, config.num_heads * config.head_dim, config.kv_width, \
        config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, h)}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (q, h)
        shapes[p + "self_attn.k_proj.weight"] = (kv, h)
        shapes[p + "self_attn.v_proj.weight"] = (kv, h)
        if config.attention_bias:
            shapes[p + "self_attn.q_proj.bias"] = (q,)
            shapes[p + "self_attn.k_proj.bias"] = (kv,)
            shapes[p + "self_attn.v_proj.bias"] = (kv,)
        shapes[p + "self_attn.o_proj.weight"] = (h, q)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (ff, h)
        shapes[p + "mlp.up_proj.weight"] = (ff, h)
        shapes[p + "mlp.down_proj.weight"] = (h, ff)
    shapes["model.norm.weight"] = (h,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, h)
    return shapes


def random_weights(config: DecoderConfig, seed: int) -> dict:
    """Seeded weights scaled 1/sqrt(fan_in) so logits are O(1) and greedy ties are vanishingly rare."""
    torch = require("torch", "runtime")
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in weight_shapes(config).items():
        if name.endswith("norm.weight"):
            tensor = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            tensor = 0.1 * torch.randn(shape, generator=gen)
        elif name == "model.embed_tokens.weight":
            tensor = torch.randn(shape, generator=gen)
        else:
            tensor = torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
        weights[name] = tensor.to(torch_dtype(config.dtype))
    return weights


class Decoder:
    """Weights plus the per-layer forward pass. Stateless: caches belong to the caller."""

    def __init__(self, config: DecoderConfig, weights: dict, device: str = "cpu"):
        torch = require("torch", "runtime")
        self.torch = torch
        self.config = config
        self.device = torch.device(device)
        expected = weight_shapes(config)
        missing = sorted(set(expected) - set(weights))
        if missing:
            raise SpecError("Decoder weights", "names", missing[:3], "all tensors of weight_shapes(config)")
        dtype = torch_dtype(config.dtype)
        self.weights = {}
        for name, shape in expected.items():
            tensor = weights[name]
            if tuple(tensor.shape) != shape:
                raise SpecError("Decoder weights", name, tuple(tensor.shape), f"shape {shape}")
            self.weights[name] = tensor.to(device=self.device, dtype=dtype).contiguous()
        half = config.head_dim // 2
        self._inv_freq = 1.0 / (config.rope_theta ** (
            torch.arange(0, half, dtype=torch.float64, device=self.device) / half))

    @classmethod
    def from_seed(cls, config: DecoderConfig, seed: int, device: str = "cpu") -> Decoder:
        return cls(config, random_weights(config, seed), device)

    # -- building blocks ---------------------------------------------------------------------------
    def _rms_norm(self, x, weight):
        torch = self.torch
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.config.rms_norm_eps)
        return weight * x32.to(x.dtype)

    def _rope(self, x, positions):
        """Rotate-half RoPE as in Hugging Face Llama; x is [tokens, heads, head_dim]."""
        torch = self.torch
        angles = positions.to(torch.float64)[:, None] * self._inv_freq[None, :]
        cos = torch.cat((angles.cos(), angles.cos()), -1).to(x.dtype)[:, None, :]
        sin = torch.cat((angles.sin(), angles.sin()), -1).to(x.dtype)[:, None, :]
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
        return x * cos + rotated * sin

    def _linear(self, x, name):
        out = x @ self.weights[name + ".weight"].T
        bias = self.weights.get(name + ".bias")
        return out if bias is None else out + bias

    # -- forward pass ------------------------------------------------------------------------------
    def embed(self, tokens):
        torch = self.torch
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        return self.weights["model.embed_tokens.weight"][ids]

    def layer(self, index: int, hidden, positions, past_k=None, past_v=None):
        """Run layer `index` on new tokens `hidden` [T, H] at `positions` [T].

        `past_k`/`past_v` [P, kv_heads, head_dim] are the cached keys/values of positions 0..P-1 (K
        after RoPE). Returns (hidden_out, k_new, v_new) with k_new/v_new [T, kv_heads, head_dim].
        """
        return self.layer_batch(index, hidden, positions, [(hidden.shape[0], past_k, past_v)])

    def layer_batch(self, index: int, hidden, positions, segments):
        """Layer `index` over several sequences at once: `hidden` [N, H] packs their new tokens one
        sequence after another, `segments` is per sequence (num_new, past_k, past_v).

        The projections and the MLP run once over all N rows (the work batching amortizes); attention
        runs per sequence against its own cache (ragged, as a varlen kernel does). No row depends on
        another sequence's rows, so a sequence's numbers are those of running it alone up to the last
        bits a matrix product may round differently with another row count; greedy tokens are checked
        against a full recompute (`generate`) in the tests, the acceptance criterion.
        """
        torch, c = self.torch, self.config
        p = f"model.layers.{index}."
        num_rows = hidden.shape[0]
        positions = torch.as_tensor(positions, dtype=torch.long, device=self.device)
        x = self._rms_norm(hidden, self.weights[p + "input_layernorm.weight"])
        q = self._linear(x, p + "self_attn.q_proj").view(num_rows, c.num_heads, c.head_dim)
        k_new = self._linear(x, p + "self_attn.k_proj").view(num_rows, c.num_kv_heads, c.head_dim)
        v_new = self._linear(x, p + "self_attn.v_proj").view(num_rows, c.num_kv_heads, c.head_dim)
        q, k_new = self._rope(q, positions), self._rope(k_new, positions)
        parts, start = [], 0
        for num_new, past_k, past_v in segments:
            end = start + num_new
            k_seq, v_seq = k_new[start:end], v_new[start:end]
            if past_k is not None and past_k.shape[0]:
                assert past_v is not None  # the cache comes as a pair: every caller passes both or neither
                keys = torch.cat((past_k.to(k_seq.dtype), k_seq), 0)
                values = torch.cat((past_v.to(v_seq.dtype), v_seq), 0)
            else:
                keys, values = k_seq, v_seq
            parts.append(self._attention(q[start:end], keys, values, num_past=keys.shape[0] - num_new))
            start = end
        if start != num_rows:
            raise SpecError("Decoder.layer_batch", "segments", start, f"new-token counts summing to {num_rows}")
        attn = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        hidden = hidden + self._linear(attn.reshape(num_rows, -1), p + "self_attn.o_proj")
        x = self._rms_norm(hidden, self.weights[p + "post_attention_layernorm.weight"])
        gate = self._linear(x, p + "mlp.gate_proj")
        up = self._linear(x, p + "mlp.up_proj")
        hidden = hidden + self._linear(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj")
        return hidden, k_new, v_new

    def _attention(self, q, keys, values, num_past: int):
        torch, c = self.torch, self.config
        group = c.num_heads // c.num_kv_heads
        keys = keys.repeat_interleave(group, dim=1)  # head h reads kv head h // group, as HF repeat_kv
        values = values.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q.float(), keys.float()) / math.sqrt(c.head_dim)
        num_new, num_keys = q.shape[0], keys.shape[0]
        key_pos = torch.arange(num_keys, device=self.device)
        query_pos = num_past + torch.arange(num_new, device=self.device)
        scores = scores.masked_fill(key_pos[None, :] > query_pos[:, None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        return torch.einsum("hqk,khd->qhd", probs, values.float()).to(q.dtype)

    def logits(self, hidden):
        """Final norm and LM head: [T, H] -> [T, vocab] in float32."""
        x = self._rms_norm(hidden, self.weights["model.norm.weight"])
        head = self.weights.get("lm_head.weight", self.weights["model.embed_tokens.weight"])
        return (x @ head.T).float()

    def forward(self, tokens, past=None, start_pos: int = 0):
        """All layers on `tokens` after an optional cache `past` = [(k, v)] per layer.

        Returns (logits [T, vocab], [(k_new, v_new)] per layer). With `past=None` this is the
        no-cache reference every cached path is checked against.
        """
        torch = self.torch
        hidden = self.embed(tokens)
        positions = torch.arange(start_pos, start_pos + hidden.shape[0], device=self.device)
        new_kv = []
        for i in range(self.config.num_layers):
            past_k, past_v = past[i] if past is not None else (None, None)
            hidden, k_new, v_new = self.layer(i, hidden, positions, past_k, past_v)
            new_kv.append((k_new, v_new))
        return self.logits(hidden), new_kv

    def generate(self, prompt, max_new_tokens: int):
        """Greedy generation by full recompute, no cache at all: the reference of the tests.

        Returns (tokens, logits [max_new_tokens, vocab]) where row i is the logits that chose token i.
        """
        torch = self.torch
        context = [int(t) for t in prompt]
        out, rows = [], []
        for _ in range(max_new_tokens):
            logits, _ = self.forward(context)
            rows.append(logits[-1])
            out.append(int(torch.argmax(logits[-1])))
            context.append(out[-1])
        return out, torch.stack(rows)
