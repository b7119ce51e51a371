"""Transport benchmark: tcp, nixl and verbs side by side, loopback, throughput and per-post latency.

The receiver runs in its own process (as an engine would), so sender and receiver do not share a GIL.
Every backend available here runs by default: tcp always, nixl when nixl_cu12 is installed (the
"nixl" extra), verbs when pyverbs and an RDMA device are present (`make test-rdma`, in the VM).

    .venv/bin/python benchmarks/transport.py [--kinds tcp,nixl,verbs] [--mac both] [--repeats 1] [--json out.json]

Figures, per backend: MB/s (10^6 bytes per second) moving `--total-mib` in writes of 4 KiB, 64 KiB
and 1 MiB with up to `--window` posts in flight; the latency of one post of one write, waited each
time (median and p99, microseconds), for the same sizes; and the cost per write of a chain of
`--batch` 4 KiB writes in one post (doorbell batching) and of one-write posts pipelined. tcp only:
`--mac both` (the default) runs tcp with its per-frame MAC on and off (`frame_mac=False`, tags dropped
on both ends); nixl and verbs carry no per-frame MAC (their side channel is authenticated, their data
path is the NIC's). `--repeats N` interleaves N runs of every setting and prints medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import deque

from dualpath.jsonio import versioned, write_json_atomic
from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.transports.nixl_agent import nixl_unavailable_reason
from dualpath.runtime.transports.transport import WriteOp, create_transport
from dualpath.runtime.transports.verbs_qp import device_unavailable_reason

SECRET = b"benchmark-secret-not-for-production"
REGION_BYTES = 64 << 20
SIZES = (("4KiB", 4 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20))

RECEIVER = """
import json, logging, sys
logging.getLogger("dualpath").setLevel(logging.ERROR)  # the sender leaving at the end is no news
from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.transports.transport import create_transport
t = create_transport(sys.argv[1], "receiver", sys.argv[2].encode(), **json.loads(sys.argv[4]))
t.register("kv", Memory.allocate(int(sys.argv[3])))
host, port = t.listen()
print(port, flush=True)
sys.stdin.read()  # run until the parent closes our stdin
t.close()
"""


def _throughput_mbps(transport, remote, src, write_bytes: int, total_bytes: int, window: int) -> float:
    """MB/s moving `total_bytes` in one-write posts of `write_bytes`, at most `window` in flight."""
    slots = REGION_BYTES // write_bytes
    inflight: deque = deque()
    began = time.perf_counter()
    for i in range(max(1, total_bytes // write_bytes)):
        if len(inflight) >= window:
            inflight.popleft().wait(60)
        inflight.append(transport.post([WriteOp(remote, (i % slots) * write_bytes, src, 0, write_bytes)]))
    while inflight:
        inflight.popleft().wait(60)
    return max(write_bytes, total_bytes) / (time.perf_counter() - began) / 1e6


def _latency_us(transport, remote, src, write_bytes: int, count: int) -> tuple[float, float]:
    """(median, p99) microseconds of one post of one write, each waited before the next."""
    samples = []
    for i in range(count):
        began = time.perf_counter()
        transport.post([WriteOp(remote, (i % 16) * write_bytes, src, 0, write_bytes)]).wait(60)
        samples.append((time.perf_counter() - began) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.99 * len(samples)))]


def _per_write_us(transport, remote, src, write_bytes: int, count: int, batch: int) -> float:
    """Microseconds per write: `batch` writes per post (1: one-write posts, pipelined), all waited at the end."""
    slots = REGION_BYTES // write_bytes
    ops = [WriteOp(remote, (i % slots) * write_bytes, src, 0, write_bytes) for i in range(count)]
    began = time.perf_counter()
    tickets = [transport.post(ops[i : i + batch]) for i in range(0, count, batch)]
    for ticket in tickets:
        ticket.wait(60)
    return (time.perf_counter() - began) / count * 1e6


def run(kind: str, frame_mac: bool | None, args: argparse.Namespace) -> dict:
    """One backend's figures; `frame_mac` (tcp only): tags on or off at both ends, None for other backends."""
    options = {} if frame_mac is None else {"frame_mac": frame_mac}
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, kind, SECRET.decode(), str(REGION_BYTES),
                                 json.dumps(options)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert receiver.stdin is not None and receiver.stdout is not None  # both are pipes
    sender = create_transport(kind, "sender", SECRET, **options)
    try:
        port = int(receiver.stdout.readline())
        remote = sender.remote_region(sender.connect(("127.0.0.1", port)), "kv")
        src = sender.register("src", Memory.allocate(1 << 20))
        _throughput_mbps(sender, remote, src, 1 << 20, 32 << 20, args.window)  # warm up
        total = args.total_mib << 20
        figures: dict[str, float] = {}
        for label, size in SIZES:
            moved = total if size >= 1 << 20 else total // (4 if size >= 64 << 10 else 32)
            figures[f"throughput_mbps_{label}"] = _throughput_mbps(sender, remote, src, size, moved, args.window)
        for label, size in SIZES:
            median, p99 = _latency_us(sender, remote, src, size, args.latency_count if size < 1 << 20 else 100)
            figures[f"latency_us_p50_{label}"], figures[f"latency_us_p99_{label}"] = median, p99
        figures["per_write_us_pipelined_4KiB"] = _per_write_us(sender, remote, src, 4096, args.count, 1)
        figures[f"per_write_us_chain{args.batch}_4KiB"] = _per_write_us(sender, remote, src, 4096, args.count,
                                                                         args.batch)
        return {"kind": kind, "frame_mac": frame_mac, "figures": figures}
    finally:
        sender.close()
        receiver.stdin.close()
        receiver.wait(timeout=30)


def _label(setting: tuple[str, bool | None]) -> str:
    kind, mac = setting
    return kind if mac is None else f"{kind} (MAC {'on' if mac else 'off'})"


def _proc_field(path: str, key: str) -> str:
    """A "key: value" line's value from a /proc file ("" when absent, e.g. not on Linux)."""
    try:
        with open(path) as lines:
            return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "")
    except OSError:
        return ""


def machine() -> dict:
    """What ran the benchmark: host, CPUs, memory, load."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor()
    mem_kib = int((_proc_field("/proc/meminfo", "MemTotal") or "0 kB").split()[0])
    return {"host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu,
            "memory_gib": round(mem_kib / 2**20, 1), "load_average": [round(x, 1) for x in os.getloadavg()],
            "python": platform.python_version()}


def _settings(args: argparse.Namespace) -> list[tuple[str, bool | None]]:
    out: list[tuple[str, bool | None]] = []
    for kind in args.kinds.split(","):
        if kind == "tcp":
            out += [("tcp", mac) for mac in (True, False) if args.mac in ("both", "on" if mac else "off")]
            continue
        reason = {"nixl": nixl_unavailable_reason, "verbs": device_unavailable_reason}.get(kind)
        why = reason() if reason else f"unknown backend {kind!r}"
        if why is None:
            out.append((kind, None))
        elif kind in args.kinds_given:
            raise SystemExit(f"benchmarks/transport.py: --kinds {kind}: {why}")
        else:
            print(f"skipping {kind}: {why}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", help="comma-separated backends (default: tcp,nixl,verbs, those available here)")
    parser.add_argument("--mac", choices=("on", "off", "both"), default="both",
                        help="tcp: per-frame MAC on, off, or both in turn (default both)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting, interleaved; medians printed")
    parser.add_argument("--total-mib", type=int, default=256, help="MiB moved per 1 MiB throughput run")
    parser.add_argument("--window", type=int, default=8, help="posts in flight in throughput runs")
    parser.add_argument("--latency-count", type=int, default=500, help="waited posts per latency figure")
    parser.add_argument("--count", type=int, default=8192, help="writes per per-write-cost run")
    parser.add_argument("--batch", type=int, default=256, help="writes per post in the chain run")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    args.kinds_given = set(args.kinds.split(",")) if args.kinds else set()
    args.kinds = args.kinds or "tcp,nixl,verbs"
    host = machine()
    print(f"machine: {host['host']}, {host['cpus']} CPUs ({host['cpu']}), {host['memory_gib']} GiB, kernel "
          f"{host['kernel']}, load average {host['load_average']}; receiver in a separate process, loopback")
    settings = _settings(args)
    raw: dict[tuple[str, bool | None], list[dict]] = {setting: [] for setting in settings}
    for _ in range(max(1, args.repeats)):  # interleaved: a shared machine's load drifts alike for all
        for setting in settings:
            raw[setting].append(run(setting[0], setting[1], args))
    keys = list(raw[settings[0]][0]["figures"]) if settings else []
    medians = {s: {k: statistics.median(r["figures"][k] for r in raw[s]) for k in keys} for s in settings}
    width = max([len(_label(s)) for s in settings] + [8])
    print(f"{'figure':<30}" + "".join(f"{_label(s):>{width + 2}}" for s in settings))
    for key in keys:
        print(f"{key:<30}" + "".join(f"{medians[s][key]:>{width + 2}.1f}" for s in settings))
    if args.repeats > 1:
        print(f"(medians of {args.repeats} interleaved runs)")
    if args.json:
        rows = [{"kind": s[0], "frame_mac": s[1], "figure": key, "value": medians[s][key],
                 "runs": [r["figures"][key] for r in raw[s]]} for s in settings for key in keys]
        write_json_atomic(args.json, versioned("benchmark.transport", {"machine": host, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
