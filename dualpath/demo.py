"""`dualpath demo`: the bundled tour, each step on the paper's defaults, small enough for a minute."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dualpath import cli, flags


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", type=flags.out_dir, help="folder for the demo's plots and reports")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (used by tests)")


def _step(title: str, argv: list[str]) -> int:
    print(f"\n== {title}\n$ dualpath {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = cli.main(argv)
    print(f"({time.perf_counter() - started:.1f} s)", flush=True)
    return code


def run(name: str, args: argparse.Namespace) -> int:
    from dualpath.proofs.example_files import example

    out, quick = args.out, args.quick
    paper = example("paper")
    steps = [
        ("The paper's 2P4D cluster serving DeepSeek-V3.2", ["info", "--cluster", "2P4D", "--model", "deepseek-v3.2"]),
        ("The agentic-64k workload against the paper's trace table",
         ["workload", "--workload", "agentic-64k", "--agents", "100" if quick else "500", "--stats"]),
        ("Simulated offline run: PE-only reading vs DualPath vs the zero-I/O Oracle",
         ["simulate", "--cluster", "2P4D", "--model", "deepseek-v3.2", "--workload", "agentic-64k",
          "--agents", "32" if quick else "256", "--policy", "basic,layerwise,dualpath,oracle",
          "--json", f"{out}/simulate.json", "--out", f"{out}/simulate"]),
        ("An offline plan for a rollout batch, against its lower bound",
         ["plan", "--cluster", "2P4D", "--model", "deepseek-v3.2", "--workload", "agentic-64k",
          "--batch", "50" if quick else "200", "--solver", "ortools", "--time-limit", "5",
          "--json", f"{out}/plan.json", "--out", f"{out}/plan"]),
        ("Verify the paper's QoS configuration and the transfer protocol",
         ["verify", "--opensm", str(paper["opensm"]), "--traffic", str(paper["traffic"]),
          "--roce", str(paper["roce"]), "--quiet", "--html", f"{out}/verify.html"]),
    ]
    cluster_file = Path(__file__).resolve().parent.parent / "examples" / "clusters" / "local-1p1d.toml"
    if not quick and cluster_file.exists():
        steps.append(("A short real run on local engines beside the simulator's prediction",
                      ["run", "--cluster", str(cluster_file), "--model", "tiny", "--agents", "4",
                       "--policy", "layerwise,dualpath", "--predict", "--out", f"{out}/run"]))
    elif not quick:
        print(f"(no {cluster_file}: the real-run step needs a source checkout; skipped)")
    worst = 0
    for title, argv in steps:
        code = _step(title, argv)
        if code != 0:
            print(f"demo step failed with exit code {code}")
            worst = max(worst, code)
    print(f"\nplots and reports are in {out}/")
    return worst
