"""Step costs: an LLMSpec's per-step time formulas over its rates, what executors ask millions of times.

`LLMSpec.step_costs` builds one from the spec's fields and cost model (the products taken once), and every
`LLMSpec` cost method answers through it, so the simulator, the schedulers and the optimizer predict with
the same formulas. This module is also compiled with mypyc when a build exists (`dualpath.compiled`): the
simulator and the paper's rules then call it natively, about ten times cheaper than an interpreted call.

Every value is computed as the formulas spell it, in their order; token counts are taken as floats, which
changes no result (they stay below 2**53, where an int converts to a float exactly, and each product the
formulas take of two counts is exact both ways).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

# DeepEP README, low-latency kernels on H800 + CX7 400 Gb/s, 128 tokens per rank, hidden 7,168, top-8:
# dispatch + combine in us per EP size, relative to EP32's 155 + 273 us.
_DEEPEP_US = {8: 77 + 114, 16: 118 + 195, 32: 155 + 273, 64: 173 + 314, 128: 192 + 369, 256: 194 + 360}


@cache  # a decode step asks it for the same group size every time
def deepep_latency_vs_ep32(ep_gpus: int) -> float:
    """DeepEP's measured latency at the largest tabulated EP size <= `ep_gpus` (EP8's below 8)."""
    size = max((n for n in _DEEPEP_US if n <= ep_gpus), default=8)
    return _DEEPEP_US[size] / _DEEPEP_US[32]


class StepCosts:
    """Prefill FLOPs and times, decode step times and the all-to-all, from an LLMSpec's rates."""

    def __init__(self, *, num_layers: int, num_moe_layers: int, index_topk_tokens: int, score_flops: int,
                 indexer_flops: int, dense_flops: float, prefill_flops_per_s: float, decode_flops_per_s: float,
                 hbm_bytes_per_s: float, a2a_bytes_per_token: int, a2a_bytes_per_s: float, a2a_latency_s: float,
                 kv_bytes_per_token_per_layer: int, indexer_bytes_per_token_per_layer: int,
                 prefill_overhead_s: float, decode_overhead_s: float) -> None:
        self.num_layers = num_layers
        self.num_moe_layers = num_moe_layers
        self.index_topk_tokens = index_topk_tokens  # 0: dense attention
        self.score_flops = score_flops  # per layer, query and attended key: 2 x heads x (QK + AV width)
        self.indexer_flops = indexer_flops  # per layer, query and cached key: 2 x indexer heads x width
        self.dense_flops = dense_flops  # per token: 2 x active parameters
        self.prefill_flops_per_s = prefill_flops_per_s
        self.decode_flops_per_s = decode_flops_per_s
        self.hbm_bytes_per_s = hbm_bytes_per_s
        self.a2a_bytes_per_token = a2a_bytes_per_token  # per MoE layer: FP8 dispatch + BF16 combine
        self.a2a_bytes_per_s = a2a_bytes_per_s
        self.a2a_latency_s = a2a_latency_s  # per MoE layer at EP32
        self.kv_bytes_per_token_per_layer = kv_bytes_per_token_per_layer  # attention KV alone (attended keys)
        self.indexer_bytes_per_token_per_layer = indexer_bytes_per_token_per_layer
        self.prefill_overhead_s = prefill_overhead_s
        self.decode_overhead_s = decode_overhead_s

    # ---- prefill ---------------------------------------------------------------------------------
    def attended_tokens(self, context_tokens: float) -> float:
        topk = self.index_topk_tokens
        return (topk if topk < context_tokens else context_tokens) if topk else context_tokens

    def attention_flops_per_query(self, context_tokens: float) -> float:
        """Per layer: score and value products over the attended keys (+ the indexer over all keys)."""
        flops = self.score_flops * self.attended_tokens(context_tokens)
        if self.indexer_flops:
            flops += self.indexer_flops * context_tokens
        return flops

    def prefill_flops(self, cached_tokens: float, new_tokens: float) -> float:
        """FLOPs to compute `new_tokens` on top of `cached_tokens` (causal: mean context at midpoint)."""
        dense = self.dense_flops * new_tokens
        mid = cached_tokens + new_tokens / 2
        return dense + self.num_layers * new_tokens * self.attention_flops_per_query(mid)

    def attention_flops(self, cached_tokens: float, new_tokens: float) -> float:
        mid = cached_tokens + new_tokens / 2
        return self.num_layers * new_tokens * self.attention_flops_per_query(mid)

    def chunk_attention_s(self, cached_tokens: float, new_tokens: float) -> float:
        """The attention time of one request's chunk: what the paper's 300 ms batch quota limits."""
        return self.attention_flops(cached_tokens, new_tokens) / self.prefill_flops_per_s

    def batch_flops(self, batch: Sequence[tuple[float, float]]) -> tuple[float, float]:
        """(all FLOPs, attention FLOPs) of a forward batch of (cached, new tokens), summed in batch order."""
        dense = self.dense_flops
        total = attention = 0.0
        for cached, new in batch:
            flops = self.attention_flops(cached, new)
            attention += flops
            total += dense * new + flops
        return total, attention

    def prefill_and_attention_s(self, batch: Sequence[tuple[float, float]]) -> tuple[float, float]:
        """(prefill time, its attention share) of one forward batch on one engine, in one pass."""
        flops, attention = self.batch_flops(batch)
        rate = self.prefill_flops_per_s
        return self.prefill_overhead_s + flops / rate, attention / rate

    # ---- decode ----------------------------------------------------------------------------------
    def a2a_s(self, tokens: float, ep_gpus: int = 1) -> float:
        """Expert-parallel all-to-all of one decode step for `tokens` tokens on a GPU of an `ep_gpus`
        group: each token's hidden state goes to its routed experts in FP8 (dispatch) and comes back in
        BF16 (combine), per MoE layer no faster than DeepEP's latency at that EP size."""
        if ep_gpus <= 1 or not self.num_moe_layers:
            return 0.0
        floor_s = self.a2a_latency_s * deepep_latency_vs_ep32(ep_gpus)
        wire_s = tokens * self.a2a_bytes_per_token / self.a2a_bytes_per_s
        return self.num_moe_layers * (floor_s if floor_s >= wire_s else wire_s)

    def decode_step_s(self, batch_size: float, total_context_tokens: float, weight_bytes_per_gpu: float,
                      ep_gpus: int = 1) -> float:
        """One decode step for `batch_size` sequences holding `total_context_tokens` in all, on a GPU of
        an expert-parallel group of `ep_gpus` (1: no all-to-all)."""
        if batch_size <= 0:
            return 0.0
        mean_context = total_context_tokens / batch_size
        hbm_bytes_per_s, flops_per_s = self.hbm_bytes_per_s, self.decode_flops_per_s
        # GEMMs: every GPU streams the weights it holds (at decode batch sizes every expert gets tokens).
        # (`max` is written as the comparison it makes: its first argument on ties.)
        weights_s, dense_s = weight_bytes_per_gpu / hbm_bytes_per_s, self.dense_flops * batch_size / flops_per_s
        gemm_s = dense_s if dense_s > weights_s else weights_s
        # Attention reads the top-k KV, the indexer scans every cached key.
        kv_bytes = self.num_layers * batch_size * (
            self.attended_tokens(mean_context) * self.kv_bytes_per_token_per_layer
            + mean_context * self.indexer_bytes_per_token_per_layer)
        read_s = kv_bytes / hbm_bytes_per_s
        compute_s = self.num_layers * batch_size * self.attention_flops_per_query(mean_context) / flops_per_s
        attention_s = compute_s if compute_s > read_s else read_s
        # Two micro-batches hide the all-to-all behind compute, or compute behind it.
        busy_s, a2a_s = gemm_s + attention_s, self.a2a_s(batch_size, ep_gpus)
        return self.decode_overhead_s + (a2a_s if a2a_s > busy_s else busy_s)
