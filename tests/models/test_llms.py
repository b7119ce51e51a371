"""LLM presets: KV bytes per token pinned against hand computations, parameter counts against reports."""

import pytest

from dualpath.errors import UnknownNameError
from dualpath.llm import AttentionKind
from dualpath.models.llms import LLM_PRESETS, dense_params, list_models, llm_preset, mla_moe_params

# Hand computations, per token per layer, then times the layers.
HAND_KV_BYTES_PER_TOKEN = {
    # MLA, FP8 (FlashMLA layout): 512 latent x 1 B + 512/128 = 4 fp32 tile scales x 4 B + 64 rope x 2 B (bf16)
    #   = 512 + 16 + 128 = 656 B; DSA indexer: 128-dim fp8 key + one fp32 scale = 132 B; 656 + 132 = 788 B.
    "deepseek-v3.2": 61 * (512 + 16 + 128 + 128 + 4),  # = 61 x 788 = 48,068 B
    "ds-27b": 30 * (512 + 16 + 128 + 128 + 4),  # = 30 x 788 = 23,640 B
    # GQA, FP16: 2 (K and V) x KV heads x head_dim x 2 B.
    "qwen2.5-32b": 64 * (2 * 8 * 128 * 2),  # = 64 x 4,096 = 262,144 B
    "qwen2.5-7b": 28 * (2 * 4 * 128 * 2),  # = 28 x 2,048 = 57,344 B
    "llama-3.1-8b": 32 * (2 * 8 * 128 * 2),  # = 32 x 4,096 = 131,072 B
    "llama-2-7b": 32 * (2 * 32 * 128 * 2),  # MHA: 32 x 16,384 = 524,288 B
    "tiny": 4 * (2 * 2 * 32 * 4),  # fp32: 4 x 512 = 2,048 B
}


def test_every_preset_is_pinned():
    assert sorted(HAND_KV_BYTES_PER_TOKEN) == sorted(list_models())


@pytest.mark.parametrize("name", sorted(HAND_KV_BYTES_PER_TOKEN))
def test_kv_bytes_per_token_match_hand_computation(name):
    assert llm_preset(name).kv_bytes_per_token == HAND_KV_BYTES_PER_TOKEN[name]


def test_literal_figures_from_the_paper_and_issue():
    assert llm_preset("qwen2.5-32b").kv_bytes_per_token == 262_144
    v32 = llm_preset("deepseek-v3.2")
    assert v32.attention_kv_bytes_per_token_per_layer == 656
    assert v32.indexer_bytes_per_token_per_layer == 132
    assert v32.index_topk_tokens == 2048 and llm_preset("ds-27b").index_topk_tokens == 1024


def test_attention_kinds():
    assert llm_preset("deepseek-v3.2").attention is AttentionKind.MLA
    assert llm_preset("qwen2.5-32b").attention is AttentionKind.GQA
    assert llm_preset("llama-2-7b").attention is AttentionKind.MHA


def test_mla_moe_formula_reproduces_deepseek_v3():
    """DeepSeek-V3 (no indexer) is reported as 671B total, 37B active."""
    total, active = mla_moe_params(
        num_layers=61, hidden=7168, num_heads=128, vocab=129280, q_lora_rank=1536, kv_lora_rank=512,
        qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128, num_dense_layers=3, dense_intermediate=18432,
        moe_intermediate=2048, num_routed=256, num_shared=1, num_active=8)
    assert total == pytest.approx(671e9, rel=0.005)
    assert active == pytest.approx(37e9, rel=0.03)


@pytest.mark.parametrize("name,total", [
    ("deepseek-v3.2", 671e9), ("ds-27b", 27e9), ("qwen2.5-32b", 32.5e9), ("qwen2.5-7b", 7.6e9),
    ("llama-3.1-8b", 8.03e9), ("llama-2-7b", 6.74e9),
])
def test_parameter_counts_match_reported_sizes(name, total):
    assert llm_preset(name).total_params == pytest.approx(total, rel=0.015)


def test_active_params_of_v32_is_37b():
    assert llm_preset("deepseek-v3.2").active_params == pytest.approx(37e9, rel=0.02)


def test_dense_params_tiny_by_hand():
    # embed 512x128 + 4 x (q 128x128 + k,v 2x128x64 + o 128x128 + mlp 3x128x256 + norms 2x128) + norm 128
    # + lm_head 512x128
    per_layer = 128 * 128 + 2 * 128 * 64 + 128 * 128 + 3 * 128 * 256 + 2 * 128
    total, _ = dense_params(num_layers=4, hidden=128, num_heads=4, num_kv_heads=2, head_dim=32,
                            intermediate=256, vocab=512)
    assert total == 512 * 128 + 4 * per_layer + 128 + 512 * 128


def test_presets_fit_the_64k_trace_except_llama2():
    for name, llm in LLM_PRESETS.items():
        assert (llm.max_context_tokens >= 65536) == (name != "llama-2-7b")


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        llm_preset("gpt-5")
    for name in list_models():
        assert name in str(info.value)


def test_prefill_cost_grows_with_context_and_new_tokens():
    llm = llm_preset("deepseek-v3.2")
    assert llm.prefill_time_s([(0, 512)]) < llm.prefill_time_s([(0, 1024)])
    assert llm.prefill_time_s([(0, 512)]) < llm.prefill_time_s([(60000, 512)])
