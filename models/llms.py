"""LLM presets with parameter counts derived from each architecture (Hugging Face config.json values).

`active_params` counts the weights multiplied per token (everything but the input embedding table,
which is a lookup), so 2 x active_params is the dense FLOPs per token the cost model uses.

Parameter formulas are checked against published totals: the MLA/MoE formula gives DeepSeek-V3
671.0B total / 36.6B active without the indexer (DeepSeek reports 671B / 37B), the dense formula
gives Qwen2.5-32B 32.8B (reported 32.5B), Llama-3.1-8B 8.03B, Qwen2.5-7B 7.62B, Llama-2-7B 6.74B.

DS 27B is the paper's downscaled V3.2 and only partly specified (30 layers, hidden 2560, 72 routed
experts with 6 active + 2 shared, indexer top-k 1024, per-layer KV as V3.2). We assume what the paper
leaves out by analogy with DeepSeek-V2-Lite (hidden 2048, 16 heads = hidden / 128, one leading dense
layer): 20 heads (= 2560 / 128), V3's MLA ranks (q 1536, kv 512, rope 64, nope 128, v 128), V3.2's
indexer (64 heads x 128), one dense layer of width 8 x 1536, and an expert width of 1536, the value
that makes the total come to the name's 27B (27.1B; active 4.2B).

Cost models (per GPU, `dualpath.llm.CostModel`): the GPU presets keep the core defaults, a Hopper
SXM GPU with every constant from a public measurement (see `CostModel`) but `prefill_mfu`, fitted once
to the paper's DualPath JCT. `tiny` runs on CPU cores: 0.1 TFLOPS fp32 (two AVX2 cores, 2 x 16
FLOP/cycle x 3 GHz) at 25% of it, DRAM at 20 GB/s; calibrate any preset with a profile table
(`dualpath.models.profile`).
"""

from __future__ import annotations

from dualpath.errors import UnknownNameError
from dualpath.llm import AttentionKind, CostModel, LLMSpec


def mla_moe_params(*, num_layers: int, hidden: int, num_heads: int, vocab: int, q_lora_rank: int,
                   kv_lora_rank: int, qk_nope_dim: int, qk_rope_dim: int, v_head_dim: int,
                   num_dense_layers: int, dense_intermediate: int, moe_intermediate: int,
                   num_routed: int, num_shared: int, num_active: int,
                   indexer_heads: int = 0, indexer_dim: int = 0) -> tuple[int, int]:
    """(total, active) parameters of a DeepSeek-V3-style model (MLA, MoE, optional DSA indexer)."""
    h = hidden
    attention = (h * q_lora_rank + q_lora_rank  # q down-projection and its norm
                 + q_lora_rank * num_heads * (qk_nope_dim + qk_rope_dim)
                 + h * (kv_lora_rank + qk_rope_dim) + kv_lora_rank  # kv down-projection and its norm
                 + kv_lora_rank * num_heads * (qk_nope_dim + v_head_dim)
                 + num_heads * v_head_dim * h)
    indexer = 0
    if indexer_heads:
        # wq_b from the q latent, one shared key projection, its LayerNorm, per-head weights
        indexer = q_lora_rank * indexer_heads * indexer_dim + h * indexer_dim + 2 * indexer_dim + h * indexer_heads
    per_layer = attention + indexer + 2 * h  # two RMSNorms
    expert = 3 * h * moe_intermediate  # gate, up, down
    router = h * num_routed + num_routed  # gate weights and the aux-free balancing bias
    num_moe_layers = num_layers - num_dense_layers
    body = num_layers * per_layer + num_dense_layers * 3 * h * dense_intermediate
    total_moe = num_moe_layers * ((num_routed + num_shared) * expert + router)
    active_moe = num_moe_layers * ((num_active + num_shared) * expert + router)
    lm_head_and_norm = vocab * h + h
    total = vocab * h + body + total_moe + lm_head_and_norm
    active = body + active_moe + lm_head_and_norm
    return total, active


def dense_params(*, num_layers: int, hidden: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 intermediate: int, vocab: int, qkv_bias: bool = False, tied_embeddings: bool = False
                 ) -> tuple[int, int]:
    """(total, active) parameters of a Llama/Qwen2-style decoder (GQA, SwiGLU)."""
    h, q, kv = hidden, num_heads * head_dim, num_kv_heads * head_dim
    attention = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if qkv_bias else 0)
    per_layer = attention + 3 * h * intermediate + 2 * h
    lm_head = 0 if tied_embeddings else vocab * h
    total = vocab * h + num_layers * per_layer + h + lm_head
    active = num_layers * per_layer + h + vocab * h  # the output projection is a matmul even when tied
    return total, active


_MLA = {"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_dim": 128, "qk_rope_dim": 64, "v_head_dim": 128}
_V32_TOTAL, _V32_ACTIVE = mla_moe_params(
    num_layers=61, hidden=7168, num_heads=128, vocab=129280, **_MLA, num_dense_layers=3,
    dense_intermediate=18432, moe_intermediate=2048, num_routed=256, num_shared=1, num_active=8,
    indexer_heads=64, indexer_dim=128)
_DS27_TOTAL, _DS27_ACTIVE = mla_moe_params(
    num_layers=30, hidden=2560, num_heads=20, vocab=129280, **_MLA, num_dense_layers=1,
    dense_intermediate=8 * 1536, moe_intermediate=1536, num_routed=72, num_shared=2, num_active=6,
    indexer_heads=64, indexer_dim=128)


def _dense(name: str, *, num_layers: int, hidden: int, num_heads: int, num_kv_heads: int, head_dim: int,
           intermediate: int, vocab: int, max_context_tokens: int, kv_dtype_bytes: int = 2,
           qkv_bias: bool = False, tied_embeddings: bool = False, cost: CostModel | None = None) -> LLMSpec:
    total, active = dense_params(num_layers=num_layers, hidden=hidden, num_heads=num_heads,
                                 num_kv_heads=num_kv_heads, head_dim=head_dim, intermediate=intermediate,
                                 vocab=vocab, qkv_bias=qkv_bias, tied_embeddings=tied_embeddings)
    kind = AttentionKind.MHA if num_kv_heads == num_heads else AttentionKind.GQA
    return LLMSpec(name=name, num_layers=num_layers, hidden_size=hidden, num_heads=num_heads, attention=kind,
                   head_dim=head_dim, num_kv_heads=num_kv_heads, kv_dtype_bytes=kv_dtype_bytes,
                   total_params=float(total), active_params=float(active), vocab_size=vocab,
                   max_context_tokens=max_context_tokens, cost=cost or CostModel())


def _deepseek(name: str, *, num_layers: int, hidden: int, num_heads: int, index_topk_tokens: int,
              total: int, active: int, num_moe_layers: int, experts_per_token: int) -> LLMSpec:
    # FP8 KV cache: 656 B attention (FlashMLA layout) + 132 B indexer key per token per layer.
    return LLMSpec(name=name, num_layers=num_layers, hidden_size=hidden, num_heads=num_heads,
                   attention=AttentionKind.MLA, head_dim=_MLA["qk_nope_dim"] + _MLA["qk_rope_dim"],
                   kv_lora_rank=_MLA["kv_lora_rank"], qk_rope_head_dim=_MLA["qk_rope_dim"], kv_dtype_bytes=1,
                   index_topk_tokens=index_topk_tokens, indexer_heads=64, indexer_head_dim=128,
                   num_moe_layers=num_moe_layers, experts_per_token=experts_per_token,
                   total_params=float(total), active_params=float(active), vocab_size=129280,
                   max_context_tokens=163840)


_CPU_COST = CostModel(peak_tflops=0.1, prefill_mfu=0.25, decode_mfu=0.1, hbm_gb_per_s=20.0,
                      hbm_efficiency=0.5, prefill_overhead_s=0.002, decode_overhead_s=0.002)

LLM_PRESETS: dict[str, LLMSpec] = {
    "deepseek-v3.2": _deepseek("deepseek-v3.2", num_layers=61, hidden=7168, num_heads=128,
                               index_topk_tokens=2048, total=_V32_TOTAL, active=_V32_ACTIVE,
                               num_moe_layers=61 - 3, experts_per_token=8),
    "ds-27b": _deepseek("ds-27b", num_layers=30, hidden=2560, num_heads=20, index_topk_tokens=1024,
                        total=_DS27_TOTAL, active=_DS27_ACTIVE, num_moe_layers=30 - 1, experts_per_token=6),
    # Qwen2.5 ships 32K native context and 128K with YaRN rope scaling, which the 64K traces need.
    "qwen2.5-32b": _dense("qwen2.5-32b", num_layers=64, hidden=5120, num_heads=40, num_kv_heads=8, head_dim=128,
                          intermediate=27648, vocab=152064, max_context_tokens=131072, qkv_bias=True),
    "qwen2.5-7b": _dense("qwen2.5-7b", num_layers=28, hidden=3584, num_heads=28, num_kv_heads=4, head_dim=128,
                         intermediate=18944, vocab=152064, max_context_tokens=131072, qkv_bias=True),
    "llama-3.1-8b": _dense("llama-3.1-8b", num_layers=32, hidden=4096, num_heads=32, num_kv_heads=8,
                           head_dim=128, intermediate=14336, vocab=128256, max_context_tokens=131072),
    "llama-2-7b": _dense("llama-2-7b", num_layers=32, hidden=4096, num_heads=32, num_kv_heads=32, head_dim=128,
                         intermediate=11008, vocab=32000, max_context_tokens=4096),
    # The runtime's tiny test decoder (random weights): fp32 KV, CPU cost model.
    "tiny": _dense("tiny", num_layers=4, hidden=128, num_heads=4, num_kv_heads=2, head_dim=32, intermediate=256,
                   vocab=512, max_context_tokens=65536, kv_dtype_bytes=4, cost=_CPU_COST),
}


def llm_preset(name: str) -> LLMSpec:
    """The preset called `name`; unknown names list the valid ones."""
    try:
        return LLM_PRESETS[name.strip().lower()]
    except KeyError:
        raise UnknownNameError("model", name, list(LLM_PRESETS)) from None


def list_models() -> list[str]:
    return list(LLM_PRESETS)
