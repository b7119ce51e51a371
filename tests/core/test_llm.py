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


def moe(**kw):
    """DeepSeek-V3.2's shape: MLA, FP8 KV, top-2048 sparse attention, 58 MoE layers, top-8 routing."""
    base = {"name": "m", "num_layers": 61, "hidden_size": 7168, "num_heads": 128, "attention": AttentionKind.MLA,
            "head_dim": 192, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "kv_dtype_bytes": 1,
            "index_topk_tokens": 2048, "indexer_heads": 64, "indexer_head_dim": 128, "total_params": 671e9,
            "active_params": 37e9, "num_moe_layers": 58, "experts_per_token": 8}
    base.update(kw)
    return LLMSpec(**base)


def test_all_to_all_matches_deepeps_published_latency():
    # DeepEP, low-latency kernels, EP32 on H800 + CX7: 155 us dispatch + 273 us combine for 128 tokens,
    # top-8, hidden 7,168 (FP8 dispatch, BF16 combine). Ours: 128 x 8 x 7,168 x 3 B / 50 GB/s per layer,
    # never below the measured latency itself.
    per_layer_s = moe().a2a_s(128, ep_gpus=32) / 58
    assert per_layer_s == pytest.approx(128 * 8 * 7168 * 3 / 50e9)
    assert per_layer_s == pytest.approx((155 + 273) * 1e-6, rel=0.05)
    assert moe().a2a_s(8, ep_gpus=32) / 58 == pytest.approx((155 + 273) * 1e-6)  # the latency floor
    assert moe().a2a_s(128) == 0.0  # one GPU: no expert-parallel group
    assert gqa().a2a_s(128, ep_gpus=32) == 0.0  # dense: no expert parallelism


def test_decode_step_is_weights_plus_attention_bytes_at_small_batch():
    m, weights = moe(), 21e9
    hbm = 3350e9 * 0.9
    # one sequence at 32K context: top-2048 KV (656 B) read, the indexer scans all 32K keys (132 B)
    kv = 61 * (2048 * 656 + 32768 * 132)
    flops_s = 61 * m.step_costs.attention_flops_per_query(32768) / (989e12 * 0.41)
    expected = weights / hbm + max(kv / hbm, flops_s)
    assert m.decode_step_s(1, 32768, weights) == pytest.approx(expected)
    assert m.decode_step_s(0, 0, weights) == 0.0


def test_decode_step_overlaps_the_all_to_all_with_compute():
    # With a slow network the all-to-all dominates: the step is the all-to-all, not the sum.
    slow = moe(cost=CostModel(a2a_gb_per_s=0.1))
    assert slow.decode_step_s(64, 64 * 1000, 1e9, ep_gpus=32) == pytest.approx(slow.a2a_s(64, ep_gpus=32))
    fast = moe(cost=CostModel(a2a_latency_s=0.0))
    assert fast.decode_step_s(64, 64 * 1000, 1e9, ep_gpus=32) > fast.a2a_s(64, ep_gpus=32)


def test_prefill_time_is_flops_at_the_one_prefill_rate():
    m = moe()
    batch = [(30_000, 500), (0, 2000)]
    flops = sum(m.prefill_flops(c, n) for c, n in batch)
    assert m.prefill_flops_per_s == pytest.approx(989e12 * m.cost.prefill_mfu)
    assert m.prefill_time_s(batch) == pytest.approx(m.cost.prefill_overhead_s + flops / m.prefill_flops_per_s)


def test_moe_fields_are_validated():
    with pytest.raises(SpecError, match="num_moe_layers"):
        moe(num_moe_layers=-1)
    with pytest.raises(SpecError, match="a2a_gb_per_s"):
        CostModel(a2a_gb_per_s=0)
