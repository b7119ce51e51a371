"""Real runtime, I/O-bound 1PxD on one machine: PE-only reading vs dual-path reading, side by side.

Engine processes (one PE node and x DE nodes) share a block store; each node's CNIC is emulated at 8x
its SNIC, the paper's node shape (8 x 400 Gbps CNIC, 1 x 400 Gbps SNIC), and the model is KV-heavy
(8 KiB of KV per token for a hidden size of 128), so a turn costs more to read than to compute. Many
agents run multi-turn conversations concurrently (each turn: the previous context plus appended
tokens, a few generated), spread round-robin over the DEs. Two agent groups of the same shape but
different tokens run one after the other in the same cluster: group A reads only on the PE side (path
"pe", the paper's baseline), group B lets the PE pick the side with the shorter storage read queue per
request (path "auto", DualPath). Prints completed turns/s for both and the ratio beside its ceiling:
1 + x, the number of SNICs dual-path reading can use against PE-only reading's one.

    .venv/bin/python benchmarks/runtime_dualpath.py [--clusters 1P1D,1P2D] [--snic-mb-s 25] [--json F]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

from dualpath.jsonio import versioned, write_json_atomic
from dualpath.runtime.scheduling.client import turn_record
from dualpath.runtime.scheduling.launcher import launch_local
from dualpath.trace import Trace

MB = 1_000_000


def run_group(client, pe, des: list, contexts: list[list[int]], turns: int, path: str, append_tokens: int,
              new_tokens: int, seed: int, vocab: int) -> dict:
    """Every agent runs `turns` turns back to back; returns throughput and where the bytes were read."""
    results, errors = [], []
    records = []
    lock = threading.Lock()

    def agent(index: int) -> None:
        rng = random.Random(seed * 100_003 + index)
        context = contexts[index]
        try:
            for turn in range(turns):
                context = context + [rng.randrange(vocab) for _ in range(append_tokens)]
                result = client.submit(pe, des[index % len(des)], context, new_tokens, path=path)
                with lock:
                    results.append(result)
                    records.append(turn_record(result, index, turn, len(context)))
                context = context + result.tokens
            contexts[index] = context
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(len(contexts))]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    elapsed = max(r.times["finish"] for r in results) - started
    by_path = {p: sum(1 for r in results if r.path == p) for p in ("pe", "de")}
    read = {p: sum(r.read_bytes for r in results if r.path == p) for p in ("pe", "de")}
    return {"turns": len(results), "elapsed_s": elapsed, "turns_per_s": len(results) / elapsed,
            "turns_by_path": by_path, "read_mb_by_path": {p: b / MB for p, b in read.items()},
            "mean_hit_tokens": sum(r.hit_tokens for r in results) / len(results), "records": records}


def run_cluster(args, num_decode: int, work: Path) -> dict:
    """One 1PxD cluster: warm-up, then the PE-only group and the dual-path group; the row of the JSON."""
    max_ctx = args.context_tokens + 2 * args.turns * (args.append_tokens + args.new_tokens) + 64
    blocks = args.agents * (-(-max_ctx // args.block_tokens)) + 16
    cnic_mb_s = args.snic_mb_s * args.cnic_to_snic
    engine_args = ["--model", args.model, "--seed", str(args.seed), "--block-tokens", str(args.block_tokens),
                   "--max-context-tokens", str(max_ctx), "--buffer-blocks", str(blocks),
                   "--snic-bytes-per-s", str(args.snic_mb_s * MB), "--cnic-bytes-per-s", str(cnic_mb_s * MB),
                   "--device", args.device, "--log-level", "WARNING"]
    from dualpath.runtime.engine import PRESETS

    vocab = PRESETS[args.model]["vocab_size"] if args.model in PRESETS else 256
    rng = random.Random(args.seed)
    groups = {name: [[rng.randrange(vocab) for _ in range(args.context_tokens)] for _ in range(args.agents)]
              for name in ("pe-only", "dual-path")}
    cluster_name = f"1P{num_decode}D"
    with launch_local(1, num_decode, work / "store", work / "logs", engine_args=engine_args) as cluster, \
            cluster.client("bench") as client:
        pe, des = cluster.prefill[0], cluster.decode
        print(f"{cluster_name}, model {args.model}, {args.agents} agents x {args.turns} turns per group, "
              f"context {args.context_tokens}+ tokens, SNIC {args.snic_mb_s:g} MB/s and CNIC {cnic_mb_s:g} MB/s "
              f"per node ({args.cnic_to_snic:g}:1)")
        for contexts in groups.values():  # warm-up: first turns compute everything and fill storage
            run_group(client, pe, des, contexts, 1, "pe", 0, args.new_tokens, args.seed + 7, vocab)
        report = {}
        for index, (name, path) in enumerate((("pe-only", "pe"), ("dual-path", "auto"))):
            report[name] = run_group(client, pe, des, groups[name], args.turns, path, args.append_tokens,
                                     args.new_tokens, args.seed + 11 + index, vocab)
            r = report[name]
            print(f"  {name:9s}: {r['turns']} turns in {r['elapsed_s']:.2f} s = {r['turns_per_s']:.2f} turns/s; "
                  f"turns read via PE/DE {r['turns_by_path']['pe']}/{r['turns_by_path']['de']}, "
                  f"MB read via PE/DE {r['read_mb_by_path']['pe']:.0f}/{r['read_mb_by_path']['de']:.0f}, "
                  f"mean hit {r['mean_hit_tokens']:.0f} tokens")
            if args.trace_out:
                Trace("runtime", path, r["records"], meta={"group": name, "cluster": cluster_name}).save(
                    f"{args.trace_out}-{cluster_name}-{name}.json")
    ratio = report["dual-path"]["turns_per_s"] / report["pe-only"]["turns_per_s"]
    ceiling = 1.0 + num_decode  # SNICs dual-path reading can use, against PE-only reading's one
    print(f"  dual-path / pe-only completed-turn throughput: {ratio:.2f}x of a {ceiling:.0f}x ceiling "
          f"({ratio / ceiling:.0%})")
    return {"cluster": cluster_name, "ratio": ratio, "ceiling": ceiling, "snic_mb_s": args.snic_mb_s,
            "cnic_mb_s": cnic_mb_s, "agents": args.agents, "turns": args.turns,
            "turns_per_s": {name: r["turns_per_s"] for name, r in report.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clusters", default="1P1D,1P2D", help="comma-separated 1PxD shapes")
    p.add_argument("--agents", type=int, default=12)
    p.add_argument("--turns", type=int, default=3, help="timed turns per agent and group")
    p.add_argument("--context-tokens", type=int, default=1024, help="first-turn context (untimed warm-up)")
    p.add_argument("--append-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=4)
    p.add_argument("--snic-mb-s", type=float, default=25.0, help="emulated SNIC bandwidth per node (MB/s)")
    p.add_argument("--cnic-to-snic", type=float, default=8.0, help="CNIC bandwidth per node over its SNIC's")
    p.add_argument("--model", default="kvheavy")
    p.add_argument("--block-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cuda: HBM layer slots on the GPU, pinned DRAM buffers")
    p.add_argument("--work-dir", default="", help="store and logs go here (default: a temp dir)")
    p.add_argument("--trace-out", default="", help="write runtime Traces as <prefix>-<cluster>-<group>.json")
    p.add_argument("--json", default="", help='write {"rows": [{"cluster", "ratio", "ceiling", ...}]} here')
    args = p.parse_args(argv)
    shapes = [s.strip().upper() for s in args.clusters.split(",") if s.strip()]
    for shape in shapes:
        if not (shape.startswith("1P") and shape.endswith("D") and shape[2:-1].isdigit() and int(shape[2:-1]) >= 1):
            p.error(f"--clusters: {shape!r} is not 1PxD (one PE, x >= 1 DEs)")
    rows = []
    for shape in shapes:
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="dualpath-bench-")) / shape
        work.mkdir(parents=True, exist_ok=True)
        try:
            rows.append(run_cluster(args, int(shape[2:-1]), work))
        finally:
            if not args.work_dir:
                shutil.rmtree(work.parent, ignore_errors=True)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    for row in rows:
        print(f"{row['cluster']}: {row['ratio']:.2f}x of {row['ceiling']:.0f}x ({row['ratio'] / row['ceiling']:.0%})")
    if args.json:
        write_json_atomic(args.json, versioned("benchmark.runtime_dualpath", {"rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
