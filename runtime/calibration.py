"""The simulator's calibrated constants: one set, fitted once to the paper, used for every configuration.

(The arithmetic behind each value is filled in below once calibrated.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dualpath.llm import CostModel, LLMSpec
from dualpath.validate import fraction, non_negative, positive

PAPER_HOPPER_COST = CostModel(
    peak_tflops=989.0,
    prefill_mfu=0.27,
    decode_mfu=0.2,
    hbm_gb_per_s=3350.0,
    hbm_efficiency=0.7,
    prefill_overhead_s=0.01,
    decode_overhead_s=0.005,
)


@dataclass(frozen=True)
class Calibration:
    """Simulator constants; `cost_model=None` keeps each LLM's own cost model (e.g. a fitted profile)."""

    cost_model: CostModel | None = PAPER_HOPPER_COST
    snic_read_efficiency: float = 0.6
    snic_write_efficiency: float = 0.6
    cuda_copy_submit_s: float = 6e-6
    rdma_submit_s: float = 1e-6
    hbm_reserve_fraction: float = 0.1
    weight_bytes_per_param: float | None = None
    schedule_interval_s: float = 0.05

    def __post_init__(self) -> None:
        fraction("Calibration", "snic_read_efficiency", self.snic_read_efficiency)
        fraction("Calibration", "snic_write_efficiency", self.snic_write_efficiency)
        fraction("Calibration", "hbm_reserve_fraction", self.hbm_reserve_fraction, allow_zero=True)
        for name in ("cuda_copy_submit_s", "rdma_submit_s", "schedule_interval_s"):
            non_negative("Calibration", name, getattr(self, name))
        if self.weight_bytes_per_param is not None:
            positive("Calibration", "weight_bytes_per_param", self.weight_bytes_per_param)

    def apply(self, llm: LLMSpec) -> LLMSpec:
        """`llm` with the calibrated cost model (unchanged when `cost_model` is None)."""
        if self.cost_model is None or llm.cost == self.cost_model:
            return llm
        return replace(llm, cost=self.cost_model)

    def weight_bytes_per_param_of(self, llm: LLMSpec) -> float:
        # LLMSpec has no weight dtype; the paper's models keep weights in their KV dtype (FP8 for
        # DeepSeek, BF16 for Qwen2.5), so that is the default.
        return self.weight_bytes_per_param or float(llm.kv_dtype_bytes)


PAPER_CALIBRATION = Calibration()


def calibrated_llm(llm: LLMSpec, calibration: Calibration = PAPER_CALIBRATION) -> LLMSpec:
    """What callers hand both the policy and the simulator, so the 300 ms quota is measured alike."""
    return calibration.apply(llm)
