"""Fit the simulator's one fitted constant: `CostModel.prefill_mfu`, to the paper's DualPath JCT.

    python benchmarks/calibrate_sim.py                  # prints the fitted value; paste it into dualpath/llm.py

Target: DeepSeek-V3.2 on 2P4D, agentic-64k, 2,048 agents, the paper's scheduler (`dualpath`): JCT
5,400 s. Every other constant comes from a public measurement (`dualpath.llm.CostModel`,
`dualpath.calibration`), and every other figure `reproduce_paper.py` prints is a
prediction of this one fit. DualPath is compute bound at this size (Oracle is ~1% faster), so its JCT
scales like 1 / MFU: a fixed-point iteration `mfu <- mfu x JCT / target` converges in 2-3 runs. The
grid search that used to live here (fitting several constants against every reported figure) is
gone; `sensitivity.py` moves each constant by +-25% instead.
"""

from __future__ import annotations

import argparse
import sys

from reproduce_paper import run_one

TARGET_POLICY, TARGET_AGENTS, TARGET_JCT_S = "dualpath", 2048, 5_400.0


def fit_prefill_mfu(start: float, tolerance: float = 0.002, max_runs: int = 6) -> tuple[float, float]:
    """(prefill_mfu, JCT it gives) with JCT within `tolerance` of the target."""
    mfu, jct = start, 0.0
    for _ in range(max_runs):
        jct = run_one((TARGET_POLICY, TARGET_AGENTS, 0, (f"cost.prefill_mfu={mfu:.5f}",)))["jct_s"]
        print(f"prefill_mfu {mfu:.5f}: {TARGET_POLICY} JCT at {TARGET_AGENTS:,} agents {jct:,.0f} s", flush=True)
        if abs(jct / TARGET_JCT_S - 1) <= tolerance:
            break
        mfu = round(mfu * jct / TARGET_JCT_S, 5)
    return mfu, jct


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=float, default=0.2, help="initial prefill_mfu")
    args = parser.parse_args(argv)
    mfu, jct = fit_prefill_mfu(args.start)
    print(f"fitted prefill_mfu = {mfu:.4f} ({jct:,.0f} s vs the paper's {TARGET_JCT_S:,.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
