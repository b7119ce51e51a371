"""Sensitivity of the paper's headline to every simulator constant: each moved by -25% and +25%.

    python benchmarks/sensitivity.py --jobs 2 --markdown sensitivity.md

For each constant of `dualpath.llm.CostModel` and `dualpath.calibration.Calibration`
that a run depends on, Basic JCT, DualPath JCT and their ratio at 1,024 and 2,048 agents (DeepSeek-V3.2,
2P4D, agentic-64k), as changes against the unmoved constants. Fractions are capped at 1.0 (an
efficiency of 1.075 means nothing); `peak_tflops` and `hbm_gb_per_s` are left out because they only
ever appear multiplied by `prefill_mfu`/`decode_mfu` and `hbm_efficiency`, which are moved.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from dataclasses import asdict

from reproduce_paper import calibration_with, run_one

from dualpath.calibration import PAPER_CALIBRATION

CONSTANTS = ("cost.prefill_mfu", "cost.decode_mfu", "cost.hbm_efficiency", "cost.a2a_gb_per_s",
             "cost.a2a_latency_s", "cuda_copy_submit_s", "rdma_submit_s", "snic_read_efficiency",
             "snic_write_efficiency", "hbm_reserve_fraction", "schedule_interval_s")
FRACTIONS = {"cost.prefill_mfu", "cost.decode_mfu", "cost.hbm_efficiency", "snic_read_efficiency",
             "snic_write_efficiency", "hbm_reserve_fraction"}
UNUSED_BY = {"dualpath": {"cuda_copy_submit_s"}}  # runs a constant cannot change reuse the base run
POLICIES, SIZES, STEPS = ("basic", "dualpath"), (1024, 2048), (-0.25, 0.25)


def base_value(name: str) -> float:
    cal = calibration_with([])
    fields = asdict(cal.cost_model) if name.startswith("cost.") and cal.cost_model else asdict(PAPER_CALIBRATION)
    return float(fields[name.removeprefix("cost.")])


def moved(name: str, step: float) -> str:
    value = base_value(name) * (1 + step)
    if name in FRACTIONS:
        value = min(value, 1.0)
    return f"{name}={value:.6g}"


def jobs() -> list[tuple[str, int, int, tuple[str, ...]]]:
    out: list[tuple[str, int, int, tuple[str, ...]]] = [(p, a, 0, ()) for p in POLICIES for a in SIZES]
    for name in CONSTANTS:
        for step in STEPS:
            out += [(p, a, 0, (moved(name, step),)) for p in POLICIES for a in SIZES
                    if name not in UNUSED_BY.get(p, set())]
    return sorted(out, key=lambda j: -j[1])


def table(results: dict[tuple, float]) -> str:
    def jct(policy: str, agents: int, override: str) -> float:
        return results.get((policy, agents, override), results[policy, agents, ""])

    head = "| constant | base | moved to |" + "".join(
        f" Basic {a:,} | DualPath {a:,} | ratio {a:,} |" for a in SIZES)
    lines = [head, "|---|---:|---:|" + "---:|" * 3 * len(SIZES)]
    base_cells = "".join(f" {jct('basic', a, ''):,.0f} s | {jct('dualpath', a, ''):,.0f} s | "
                         f"{jct('basic', a, '') / jct('dualpath', a, ''):.2f} |" for a in SIZES)
    lines.append(f"| (none) | | |{base_cells}")
    for name in CONSTANTS:
        for step in STEPS:
            override = moved(name, step)
            cells = ""
            for a in SIZES:
                b0, d0 = jct("basic", a, ""), jct("dualpath", a, "")
                b, d = jct("basic", a, override), jct("dualpath", a, override)
                cells += f" {b / b0 - 1:+.1%} | {d / d0 - 1:+.1%} | {b / d:.2f} ({(b / d) / (b0 / d0) - 1:+.1%}) |"
            lines.append(f"| `{name}` | {base_value(name):.4g} | {override.partition('=')[2]} ({step:+.0%}) |{cells}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    todo = jobs()
    results: dict[tuple, float] = {}
    with multiprocessing.get_context("fork").Pool(min(args.jobs, len(todo))) as pool:
        for job, r in zip(todo, pool.imap(run_one, todo)):
            results[job[0], job[1], job[3][0] if job[3] else ""] = r["jct_s"]
            print(f"{job[0]:<9} {job[1]:>5} {job[3][0] if job[3] else 'base':<36} JCT {r['jct_s']:>8,.0f} s",
                  file=sys.stderr, flush=True)
    text = table(results)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
