"""`dualpath demo`: the bundled tour, each step on the paper's defaults, small enough for a minute."""

from __future__ import annotations

import argparse
import time

from dualpath import cli


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="folder for the demo's plots and reports")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (used by tests)")


def _step(title: str, argv: list[str]) -> int:
    print(f"\n== {title}\n$ dualpath {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = cli.main(argv)
    print(f"({time.perf_counter() - started:.1f} s)", flush=True)
    return code


def run(name: str, args: argparse.Namespace) -> int:
    steps = [
        ("The paper's 2P4D cluster serving DeepSeek-V3.2", ["info", "--cluster", "2P4D", "--model", "deepseek-v3.2"]),
        ("The agentic-64k workload against the paper's trace table",
         ["workload", "--workload", "agentic-64k", "--agents", "100" if args.quick else "500", "--stats"]),
    ]
    from dualpath.proofs.example_files import example

    paper = example("paper")
    steps.append(("Verify the paper's QoS configuration and the transfer protocol",
                  ["verify", "--opensm", str(paper["opensm"]), "--traffic", str(paper["traffic"]),
                   "--roce", str(paper["roce"]), "--quiet", "--html", f"{args.out}/verify.html"]))
    worst = 0
    for title, argv in steps:
        code = _step(title, argv)
        if code not in (0,):
            print(f"demo step failed with exit code {code}")
            worst = max(worst, code)
    return worst
