"""LLM spec: architecture, KV bytes per token derived from it, and a first-principles cost model.

Prefill is compute bound: FLOPs (dense/expert GEMMs at 2 x active params per token, attention over
the cached context, MLA absorbed or GQA, sparse top-k, and the sparse-attention indexer over every
key) at `prefill_mfu` of the GPU's peak. A decode step is a roofline per kernel family: the weights
a GPU holds (memory bound at decode batch sizes) plus attention (max of its KV + indexer bytes at
HBM speed and its FLOPs), overlapped with the expert-parallel all-to-all (dispatch and combine
bytes over the compute NIC). Every constant but `prefill_mfu` comes from a public measurement; see
`CostModel`. `CostModel.fit` refits MFU and overhead from a profile table of one's own hardware.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property

from dualpath import limits
from dualpath.errors import SpecError
from dualpath.kvlayout import PAPER_BLOCK_TOKENS, KVLayout
from dualpath.step_costs import StepCosts
from dualpath.validate import fraction, integer, non_negative, number, positive


class AttentionKind(str, Enum):
    MHA = "mha"
    GQA = "gqa"
    MLA = "mla"


MOE_TOTAL_OVER_ACTIVE = 1.5  # total / active parameters above which a model is served expert parallel


@dataclass(frozen=True)
class CostModel:
    """Per-GPU cost of an H800/H100 SXM, the paper's Hopper GPUs. Sources, one per number:

    - `peak_tflops` 989: NVIDIA H100 SXM datasheet, dense BF16 (the H800 has the same SMs and clocks).
    - `prefill_mfu` 0.1769: the ONE FITTED constant, to the paper's DualPath JCT at 2,048 agents
      (5,400 s; `benchmarks/calibrate_sim.py`). Cross-check: DeepSeek's inference-system overview
      (2025-03-01) reports 73.7k input tokens/s per H800 node at a 56.3% cache hit, i.e. ~4.0k
      computed tokens/s per GPU on ~4.4K-token prompts, ~0.37 of this peak end to end (V3's dense
      MLA). The fit is 0.48 of that production figure, on 16-64K contexts under a 300 ms quota.
    - `decode_mfu` 0.41: FlashMLA's token-level sparse decoding kernel, 410 TFLOPS on H800 (README).
    - `hbm_gb_per_s` 3,350 and `hbm_efficiency` 0.9: HBM3 datasheet; FlashMLA reaches 3,000 GB/s in
      its memory-bound configuration on H800 (3,000 / 3,350 = 0.9).
    - `a2a_gb_per_s` 50: DeepEP's low-latency dispatch/combine over a 400 Gb/s CX7 at EP32 (48 and
      53 GB/s RDMA bandwidth; 155 + 273 us for 128 tokens, top-8, hidden 7,168).
    - `a2a_latency_s` 428 us: the same measurement as a floor per MoE layer of a decode step (dispatch
      155 + combine 273 us at EP32). Below 128 tokens per GPU the kernels are bound by RDMA latency
      and the ranks' synchronisation, not bytes (our byte formula gives 440 us at 128 tokens, so the
      two agree where they meet); other EP sizes scale by DeepEP's table (`step_costs.deepep_latency_vs_ep32`).
    - overheads 0: DeepSeek overlaps the all-to-all with compute by two micro-batches in prefill and
      decode (same overview), and decode runs under CUDA graphs; no unmeasured per-step constant.
    """

    peak_tflops: float = 989.0
    prefill_mfu: float = 0.1769
    decode_mfu: float = 0.41
    hbm_gb_per_s: float = 3350.0
    hbm_efficiency: float = 0.9
    prefill_overhead_s: float = 0.0
    decode_overhead_s: float = 0.0
    a2a_gb_per_s: float = 50.0
    a2a_latency_s: float = 428e-6

    def __post_init__(self) -> None:
        positive("CostModel", "peak_tflops", self.peak_tflops, cap="MAX_TFLOPS")
        positive("CostModel", "hbm_gb_per_s", self.hbm_gb_per_s, cap="MAX_GBPS")
        positive("CostModel", "a2a_gb_per_s", self.a2a_gb_per_s, cap="MAX_GBPS")
        for name in ("prefill_mfu", "decode_mfu", "hbm_efficiency"):
            fraction("CostModel", name, getattr(self, name))
        non_negative("CostModel", "prefill_overhead_s", self.prefill_overhead_s)
        non_negative("CostModel", "decode_overhead_s", self.decode_overhead_s)
        non_negative("CostModel", "a2a_latency_s", self.a2a_latency_s)

    @staticmethod
    def fit(flops_and_seconds: Iterable[tuple[float, float]], base: CostModel | None = None) -> CostModel:
        """Least-squares t = overhead + flops / (peak x mfu) over profiled prefill batches."""
        rows = list(flops_and_seconds)
        if len(rows) < 2:
            raise SpecError("profile", "rows", len(rows), "at least 2 (flops, seconds) rows")
        base = base or CostModel()
        n = len(rows)
        mean_f = sum(f for f, _ in rows) / n
        mean_t = sum(t for _, t in rows) / n
        var_f = sum((f - mean_f) ** 2 for f, _ in rows)
        if var_f == 0:
            raise SpecError("profile", "flops", mean_f, "rows with different FLOP counts")
        slope = sum((f - mean_f) * (t - mean_t) for f, t in rows) / var_f
        if slope <= 0:
            raise SpecError("profile", "seconds", slope, "time growing with FLOPs")
        overhead = max(0.0, mean_t - slope * mean_f)
        mfu = min(1.0, 1.0 / (slope * base.peak_tflops * 1e12))
        return replace(base, prefill_mfu=mfu, prefill_overhead_s=overhead)


@dataclass(frozen=True)
class LLMSpec:
    """Architecture numbers that decide KV size and compute; `kv_dtype_bytes` is the cache dtype."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    attention: AttentionKind
    head_dim: int
    num_kv_heads: int = 0  # MHA/GQA
    kv_lora_rank: int = 0  # MLA latent width
    qk_rope_head_dim: int = 0  # MLA decoupled RoPE key width
    kv_dtype_bytes: int = 2
    index_topk_tokens: int = 0  # sparse attention: tokens each query attends (0 = dense)
    indexer_heads: int = 0
    indexer_head_dim: int = 0
    num_moe_layers: int = 0  # layers whose FFN is routed experts (0: dense model)
    experts_per_token: int = 0  # routed experts each token is dispatched to (shared ones are local)
    total_params: float = 0.0
    active_params: float = 0.0
    vocab_size: int = 32000
    max_context_tokens: int = 131072
    gpus_per_engine: int = 1
    cost: CostModel = field(default_factory=CostModel)
    # The `cost` fields set for this model (an LLM file's [cost] keys, the ones a profile fits): a
    # simulator calibration replaces only the others (`dualpath.calibration.Calibration.apply`).
    cost_pinned: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        src = f"model {self.name}"
        caps = {"num_layers": "MAX_LAYERS", "kv_dtype_bytes": "MAX_DTYPE_BYTES", "max_context_tokens": "MAX_TOKENS",
                "gpus_per_engine": "MAX_GROUP_GPUS"}
        for name in ("num_layers", "hidden_size", "num_heads", "head_dim", "kv_dtype_bytes",
                     "vocab_size", "max_context_tokens", "gpus_per_engine"):
            positive(src, name, getattr(self, name), integer=True, cap=caps.get(name, "MAX_WIDTH"))
        for name in ("num_kv_heads", "kv_lora_rank", "qk_rope_head_dim", "indexer_heads", "indexer_head_dim"):
            integer(src, name, getattr(self, name), 0, limits.MAX_WIDTH, cap="MAX_WIDTH")
        integer(src, "index_topk_tokens", self.index_topk_tokens, 0, limits.MAX_TOKENS, cap="MAX_TOKENS")
        positive(src, "active_params", self.active_params, cap="MAX_PARAMS")
        number(src, "total_params", self.total_params, self.active_params, limits.MAX_PARAMS, cap="MAX_PARAMS")
        integer(src, "num_moe_layers", self.num_moe_layers, 0, limits.MAX_LAYERS, cap="MAX_LAYERS")
        integer(src, "experts_per_token", self.experts_per_token, 0, limits.MAX_WIDTH, cap="MAX_WIDTH")
        if not isinstance(self.attention, AttentionKind):
            raise SpecError(src, "attention", self.attention, "one of " + ", ".join(k.value for k in AttentionKind))
        if not isinstance(self.cost, CostModel):
            raise SpecError(src, "cost", self.cost, "a CostModel")
        if not isinstance(self.cost_pinned, tuple) or not set(self.cost_pinned) <= set(CostModel.__dataclass_fields__):
            raise SpecError(src, "cost_pinned", self.cost_pinned, "a tuple of CostModel field names")
        if self.attention is AttentionKind.MLA:
            positive(src, "kv_lora_rank", self.kv_lora_rank, integer=True)
        else:
            positive(src, "num_kv_heads", self.num_kv_heads, integer=True)
            if self.num_heads % self.num_kv_heads:
                raise SpecError(src, "num_kv_heads", self.num_kv_heads, f"a divisor of num_heads {self.num_heads}")

    @property
    def attention_kv_bytes_per_token_per_layer(self) -> int:
        d = self.kv_dtype_bytes
        if self.attention is AttentionKind.MLA:
            # FlashMLA's FP8 cache: fp8 latent, one fp32 scale per 128-wide tile, RoPE part kept in bf16.
            if d == 1:
                return self.kv_lora_rank + 4 * (self.kv_lora_rank // 128) + 2 * self.qk_rope_head_dim
            return d * (self.kv_lora_rank + self.qk_rope_head_dim)
        return 2 * self.num_kv_heads * self.head_dim * d

    @property
    def indexer_bytes_per_token_per_layer(self) -> int:
        # DeepSeek sparse attention's indexer caches one fp8 key per token plus its fp32 scale.
        return self.indexer_head_dim + 4 if self.indexer_head_dim else 0

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        """Everything cached per token per layer: attention KV plus the indexer's keys."""
        return self.attention_kv_bytes_per_token_per_layer + self.indexer_bytes_per_token_per_layer

    @property
    def kv_bytes_per_token(self) -> int:
        return self.num_layers * self.kv_bytes_per_token_per_layer

    def layout(self, block_tokens: int = PAPER_BLOCK_TOKENS) -> KVLayout:
        return KVLayout(self.num_layers, self.kv_bytes_per_token_per_layer, block_tokens)

    @property
    def expert_parallel(self) -> bool:
        """Served expert parallel: an MoE model activates a small share of its weights per token
        (DeepSeek-V3.2 5.5%, DS 27B 16%), a dense one all but its embedding table (Qwen2.5-32B 98%).
        LLMSpec has no expert count, so the ratio decides."""
        return self.total_params > MOE_TOTAL_OVER_ACTIVE * self.active_params

    # ---- compute ----------------------------------------------------------------------------
    # The simulator asks these millions of times per run: the products of the spec's fields are taken
    # once, into `step_costs`, which holds the formulas (and is compiled when a build exists). Integer
    # products are exact, and the float ones are the same expressions in the same order, so every result
    # is the float the formulas gave when they were spelled out per call.
    @cached_property
    def step_costs(self) -> StepCosts:
        """This model's cost formulas over its rates: what executors call per step (see `dualpath.step_costs`)."""
        cost = self.cost
        width = (2 * self.kv_lora_rank + self.qk_rope_head_dim if self.attention is AttentionKind.MLA
                 else 2 * self.head_dim)  # absorbed MLA: QK over latent+rope, AV over latent
        return StepCosts(
            num_layers=self.num_layers,
            num_moe_layers=self.num_moe_layers,
            index_topk_tokens=self.index_topk_tokens,
            score_flops=2 * self.num_heads * width,
            indexer_flops=2 * self.indexer_heads * self.indexer_head_dim,
            dense_flops=2.0 * self.active_params,
            prefill_flops_per_s=cost.peak_tflops * 1e12 * cost.prefill_mfu * self.gpus_per_engine,
            decode_flops_per_s=cost.peak_tflops * 1e12 * cost.decode_mfu * self.gpus_per_engine,
            hbm_bytes_per_s=cost.hbm_gb_per_s * 1e9 * cost.hbm_efficiency,
            a2a_bytes_per_token=self.experts_per_token * self.hidden_size * (1 + 2),
            a2a_bytes_per_s=cost.a2a_gb_per_s * 1e9,
            a2a_latency_s=cost.a2a_latency_s,
            kv_bytes_per_token_per_layer=self.attention_kv_bytes_per_token_per_layer,
            indexer_bytes_per_token_per_layer=self.indexer_bytes_per_token_per_layer,
            prefill_overhead_s=cost.prefill_overhead_s,
            decode_overhead_s=cost.decode_overhead_s,
        )

    def __getstate__(self) -> dict[str, object]:
        # Pickles carry the fields alone: `step_costs` is rebuilt on first use (a compiled build's
        # object is not picklable, and it is a function of the fields).
        state = dict(self.__dict__)
        state.pop("step_costs", None)
        return state

    def attended_tokens(self, context_tokens: float) -> float:
        return self.step_costs.attended_tokens(context_tokens)

    def prefill_flops(self, cached_tokens: int, new_tokens: int) -> float:
        """FLOPs to compute `new_tokens` on top of `cached_tokens` (causal: mean context at midpoint)."""
        return self.step_costs.prefill_flops(cached_tokens, new_tokens)

    def attention_flops(self, cached_tokens: int, new_tokens: int) -> float:
        return self.step_costs.attention_flops(cached_tokens, new_tokens)

    def prefill_time_s(self, batch: Sequence[tuple[int, int]]) -> float:
        """Seconds for one forward batch of (cached_tokens, new_tokens) pairs on one engine."""
        return self.step_costs.prefill_and_attention_s(batch)[0]

    def attention_time_s(self, batch: Sequence[tuple[int, int]]) -> float:
        """The attention share of `prefill_time_s`, what the paper's 300 ms batch quota limits."""
        return self.step_costs.prefill_and_attention_s(batch)[1]

    def chunk_attention_s(self, cached_tokens: int, new_tokens: int) -> float:
        """`attention_time_s([(cached_tokens, new_tokens)])` without building the batch."""
        return self.step_costs.chunk_attention_s(cached_tokens, new_tokens)

    def prefill_and_attention_s(self, batch: Sequence[tuple[int, int]]) -> tuple[float, float]:
        """(`prefill_time_s`, `attention_time_s`) of one batch in one pass over it."""
        return self.step_costs.prefill_and_attention_s(batch)

    @property
    def prefill_flops_per_s(self) -> float:
        """What one engine computes per second in prefill: the rate every prefill prediction uses."""
        return self.step_costs.prefill_flops_per_s

    def a2a_s(self, tokens: int, ep_gpus: int = 1) -> float:
        """Expert-parallel all-to-all of one decode step (`StepCosts.a2a_s`)."""
        return self.step_costs.a2a_s(tokens, ep_gpus)

    def decode_step_s(self, batch_size: int, total_context_tokens: int, weight_bytes_per_gpu: float,
                      ep_gpus: int = 1) -> float:
        """One decode step for `batch_size` sequences holding `total_context_tokens` in all, on a GPU of
        an expert-parallel group of `ep_gpus` (1: no all-to-all)."""
        return self.step_costs.decode_step_s(batch_size, total_context_tokens, weight_bytes_per_gpu, ep_gpus)
