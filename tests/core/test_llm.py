import pytest

from dualpath.errors import SpecError
from dualpath.llm import AttentionKind, CostModel, LLMSpec


def gqa(**kw):
    base = {"name": "g", "num_layers": 64, "hidden_size": 5120, "num_heads": 40, "attention": AttentionKind.GQA,
                "head_dim": 128, "num_kv_heads": 8, "total_params": 32.5e9, "active_params": 32.5e9}
    base.update(kw)
    return LLMSpec(**base)


def test_gqa_kv_bytes_from_architecture():
    # 2 (K and V) x 8 heads x 128 dims x 2 bytes = 4,096 B per layer; x 64 layers = 262,144 B
    assert gqa().kv_bytes_per_token_per_layer == 4096
    assert gqa().kv_bytes_per_token == 262_144


def test_mla_fp8_cache_layout_matches_the_paper():
    m = LLMSpec("m", 61, 7168, 128, AttentionKind.MLA, 128, kv_lora_rank=512, qk_rope_head_dim=64,
                kv_dtype_bytes=1, index_topk_tokens=2048, indexer_heads=64, indexer_head_dim=128,
                total_params=671e9, active_params=37e9)
    # 512 fp8 latent + 4 fp32 scales + 64 bf16 rope = 656; indexer: 128 fp8 + 4-byte scale = 132
    assert m.attention_kv_bytes_per_token_per_layer == 656
    assert m.indexer_bytes_per_token_per_layer == 132
    assert m.kv_bytes_per_token == 61 * 788
    # sparse attention caps attended tokens, so attention cost stops growing past top-k
    assert m.attended_tokens(100_000) == 2048


def test_prefill_time_grows_with_tokens_and_context():
    m = gqa()
    assert m.prefill_time_s([(0, 1000)]) < m.prefill_time_s([(0, 2000)])
    assert m.prefill_time_s([(0, 1000)]) < m.prefill_time_s([(30_000, 1000)])
    assert m.attention_time_s([(30_000, 1000)]) < m.prefill_time_s([(30_000, 1000)])


def test_cost_model_fit_recovers_mfu_and_overhead():
    truth = CostModel(prefill_mfu=0.37, prefill_overhead_s=0.012)
    rows = [(f, truth.prefill_overhead_s + f / (truth.peak_tflops * 1e12 * truth.prefill_mfu))
            for f in (1e13, 5e13, 2e14, 8e14)]
    fit = CostModel.fit(rows)
    assert fit.prefill_mfu == pytest.approx(0.37, rel=1e-9)
    assert fit.prefill_overhead_s == pytest.approx(0.012, rel=1e-9)


def test_bad_specs_name_the_field():
    with pytest.raises(SpecError, match="num_kv_heads"):
        gqa(num_kv_heads=7)
    with pytest.raises(SpecError, match="num_layers"):
        gqa(num_layers=0)
    with pytest.raises(SpecError, match="prefill_mfu"):
        CostModel(prefill_mfu=1.5)
    with pytest.raises(SpecError, match="rows"):
        CostModel.fit([(1e12, 0.1)])
