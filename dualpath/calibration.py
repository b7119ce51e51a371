"""The simulator's constants: one set for every configuration, all but one from public measurements.

The cost model is `dualpath.llm.CostModel` (its docstring cites each number); the LLM presets carry
the same object, so the solver's predictions and the simulator's durations agree. ONE constant is
fitted: `prefill_mfu`, to the paper's DualPath JCT at 2,048 agents (5,400 s), by
`benchmarks/calibrate_sim.py`; every other figure `benchmarks/reproduce_paper.py` prints is a
prediction. `benchmarks/sensitivity.py` moves each constant by +-25%.

Copies (the paper, section 3 of design.md): submitting an RDMA write costs about 1 us
(`rdma_submit_s`), a cudaMemcpyAsync 5-7 us (`cuda_copy_submit_s` = 6 us, the middle). Without
layerwise prefill (Basic) the batch's KV is copied into HBM before the forward pass, and a Full Block
(all layers of 64 tokens, contiguous in DRAM) lands in L per-layer KV pages, so each block costs L
cudaMemcpyAsync submissions: ~505 blocks x 61 = 30,800 copies, 0.18 s, per 32K-token request. The
copies are asynchronous: an engine copies its next batch while the current one computes, as far as the
HBM the running batch leaves free allows (`runtime/sim/prefill_groups.py`). With layerwise prefill
every Layer Block is an RDMA write through the CNIC, 1 us each, overlapped with compute layer by layer.

SNIC: 3FS's published KVCache benchmark peaks at 40 GiB/s per client with one 400 Gb/s NIC, 0.86 of
line rate (`snic_read_efficiency`; writes are taken alike, they are small here).

Storage arithmetic. KV is 61 layers x (656 + 132) B = 48,068 B per token. `agentic-64k` at 2,048
agents: 118,845 requests, 98 M new tokens (most in the resampled agents' first turns, which prefill
their history), 210 TB of hits: 2,440 s on Basic's 2 PE SNICs at 0.86 of line rate, 810 s on all 6.
Both runs are bound by prefill compute (Oracle is ~1% faster than DualPath); Basic loses its extra time
to its copies where HBM leaves no room to overlap them, and to round-robin batches in lockstep groups.

Others, not fitted and moved by the sensitivity table: 10% of HBM is kept for activations and
workspace (as the solver assumes); group leaders fetch work at most every 50 ms (the paper gives no
period; well below its 300 ms attention quota). Weights are counted in the KV dtype (FP8 for
DeepSeek, BF16 for Qwen2.5). Engines take the policy's batch as is (`max_batch_new_tokens` None).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dualpath.llm import CostModel, LLMSpec
from dualpath.validate import fraction, non_negative, positive

PAPER_HOPPER_COST = CostModel()  # the core defaults: the presets' own cost model


@dataclass(frozen=True)
class Calibration:
    """Simulator constants; `cost_model=None` keeps each LLM's own cost model (e.g. a fitted profile)."""

    cost_model: CostModel | None = PAPER_HOPPER_COST
    snic_read_efficiency: float = 0.86
    snic_write_efficiency: float = 0.86
    cuda_copy_submit_s: float = 6e-6
    rdma_submit_s: float = 1e-6
    hbm_reserve_fraction: float = 0.1
    max_batch_new_tokens: int | None = None  # an engine's own per-step budget; None: the policy's batch
    weight_bytes_per_param: float | None = None
    schedule_interval_s: float = 0.05
    # Per Full Block and layer of a DE's buffer -> HBM load; None: the PE's (`rdma_submit_s` layerwise,
    # `cuda_copy_submit_s` without). The real engines gather a request's blocks in one copy under one
    # CNIC grant, so their profile sets 0.
    de_load_submit_s: float | None = None

    def __post_init__(self) -> None:
        fraction("Calibration", "snic_read_efficiency", self.snic_read_efficiency)
        fraction("Calibration", "snic_write_efficiency", self.snic_write_efficiency)
        fraction("Calibration", "hbm_reserve_fraction", self.hbm_reserve_fraction, allow_zero=True)
        for name in ("cuda_copy_submit_s", "rdma_submit_s", "schedule_interval_s"):
            non_negative("Calibration", name, getattr(self, name))
        if self.de_load_submit_s is not None:
            non_negative("Calibration", "de_load_submit_s", self.de_load_submit_s)
        if self.max_batch_new_tokens is not None:
            positive("Calibration", "max_batch_new_tokens", self.max_batch_new_tokens, integer=True)
        if self.weight_bytes_per_param is not None:
            positive("Calibration", "weight_bytes_per_param", self.weight_bytes_per_param)

    def apply(self, llm: LLMSpec) -> LLMSpec:
        """`llm` with the calibrated cost model (unchanged when `cost_model` is None), except the fields the
        model pins (`LLMSpec.cost_pinned`: an LLM file's [cost] keys, a profile's fit): what the user set
        for this model wins over the calibration, field by field."""
        if self.cost_model is None:
            return llm
        cost = replace(self.cost_model, **{name: getattr(llm.cost, name) for name in llm.cost_pinned})
        return llm if cost == llm.cost else replace(llm, cost=cost)

    def weight_bytes_per_param_of(self, llm: LLMSpec) -> float:
        return self.weight_bytes_per_param or float(llm.kv_dtype_bytes)


PAPER_CALIBRATION = Calibration()


def calibrated_llm(llm: LLMSpec, calibration: Calibration = PAPER_CALIBRATION) -> LLMSpec:
    """What callers hand both the policy and the simulator, so the 300 ms quota is measured alike."""
    return calibration.apply(llm)
