"""Transport benchmark: loopback throughput for 1 MiB and 64 KiB writes, and per-write overhead.

The receiver runs in its own process (as an engine would), so sender and receiver do not share a GIL.

    .venv/bin/python benchmarks/transport.py [--kind tcp] [--mac both] [--total-mib 512] [--json out.json]

Figures printed: GB/s (10^9 bytes per second) and MB/s for each write size with up to `--window`
posts in flight; microseconds per small write (a) one write per post, waited each time (latency),
(b) one write per post, pipelined (submission cost), (c) `--batch` writes per post (doorbell batching).
tcp only: `--mac both` (the default) runs everything with the per-frame MAC on, then off (tags
dropped on both ends, `TcpTransport(frame_mac=False)`), in the same run, and prints what the MAC costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import deque

from dualpath.jsonio import versioned, write_json_atomic
from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.transports.transport import WriteOp, create_transport

SECRET = b"benchmark-secret-not-for-production"
REGION_BYTES = 64 << 20

RECEIVER = """
import json, sys, threading
from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.transports.transport import create_transport
t = create_transport(sys.argv[1], "receiver", sys.argv[2].encode(), **json.loads(sys.argv[4]))
t.register("kv", Memory.allocate(int(sys.argv[3])))
host, port = t.listen()
print(port, flush=True)
sys.stdin.read()  # run until the parent closes our stdin
t.close()
"""


def _throughput(transport, remote, src, write_bytes: int, total_bytes: int, window: int) -> float:
    """GB/s moving `total_bytes` in writes of `write_bytes`, with at most `window` posts in flight."""
    slots = REGION_BYTES // write_bytes
    inflight: deque = deque()
    began = time.perf_counter()
    for i in range(total_bytes // write_bytes):
        if len(inflight) >= window:
            inflight.popleft().wait(60)
        inflight.append(transport.post([WriteOp(remote, (i % slots) * write_bytes, src, 0, write_bytes)]))
    while inflight:
        inflight.popleft().wait(60)
    return total_bytes / (time.perf_counter() - began) / 1e9


def _per_write_us(transport, remote, src, write_bytes: int, count: int, batch: int | None, wait_each: bool) -> float:
    slots = REGION_BYTES // write_bytes
    ops = [WriteOp(remote, (i % slots) * write_bytes, src, 0, write_bytes) for i in range(count)]
    began = time.perf_counter()
    if batch is None:
        tickets = []
        for op in ops:
            ticket = transport.post([op])
            if wait_each:
                ticket.wait(60)
            else:
                tickets.append(ticket)
        for ticket in tickets:
            ticket.wait(60)
    else:
        tickets = [transport.post(ops[i : i + batch]) for i in range(0, count, batch)]
        for ticket in tickets:
            ticket.wait(60)
    return (time.perf_counter() - began) / count * 1e6


def run(kind: str, total_mib: int, window: int, small_bytes: int, count: int, batch: int,
        frame_mac: bool | None = None) -> dict:
    """One backend's figures; `frame_mac` (tcp only): tags on or off at both ends, None: the default."""
    options = {} if frame_mac is None else {"frame_mac": frame_mac}
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, kind, SECRET.decode(), str(REGION_BYTES),
                                 json.dumps(options)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert receiver.stdin is not None and receiver.stdout is not None  # both are pipes
    sender = create_transport(kind, "sender", SECRET, **options)
    try:
        port = int(receiver.stdout.readline())
        peer = sender.connect(("127.0.0.1", port))
        remote = sender.remote_region(peer, "kv")
        src = sender.register("src", Memory.allocate(1 << 20))
        results: dict = {"kind": kind, "frame_mac": frame_mac, "throughput_gbps": {}, "per_write_us": {}}
        _throughput(sender, remote, src, 1 << 20, 64 << 20, window)  # warm up
        for label, size in (("1MiB", 1 << 20), ("64KiB", 64 << 10)):
            total = (total_mib << 20) if size >= 1 << 20 else (total_mib << 20) // 4
            results["throughput_gbps"][label] = _throughput(sender, remote, src, size, total, window)
        results["per_write_us"] = {
            "write_bytes": small_bytes,
            "one_per_post_waited": _per_write_us(sender, remote, src, small_bytes, count // 4, None, True),
            "one_per_post_pipelined": _per_write_us(sender, remote, src, small_bytes, count, None, False),
            f"batched_{batch}_per_post": _per_write_us(sender, remote, src, small_bytes, count, batch, False),
        }
        return results
    finally:
        sender.close()
        receiver.stdin.close()
        receiver.wait(timeout=10)


def _print(results: dict) -> None:
    mac = {None: "", True: ", per-frame MAC on", False: ", per-frame MAC off"}[results["frame_mac"]]
    print(f"transport: {results['kind']} loopback, receiver in a separate process{mac}")
    for label, gbps in results["throughput_gbps"].items():
        print(f"  throughput, {label:>5} writes: {gbps:6.2f} GB/s ({gbps * 1e3:7.1f} MB/s)")
    per = results["per_write_us"]
    print(f"  per-write cost, {per['write_bytes']} B writes:")
    for key, value in per.items():
        if key != "write_bytes":
            print(f"    {key:<26} {value:8.2f} us")


def _median(runs: list[dict]) -> dict:
    """Figure by figure, the median of repeated runs of one setting (`runs[0]`'s shape)."""
    out = {**runs[0], "repeats": len(runs)}
    for section in ("throughput_gbps", "per_write_us"):
        out[section] = {key: statistics.median(r[section][key] for r in runs) for key in runs[0][section]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="tcp", help="transport backend (tcp or verbs)")
    parser.add_argument("--mac", choices=("on", "off", "both"), default="both",
                        help="tcp: per-frame MAC on, off, or both in turn (default both)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per setting, interleaved (on, off, on, ...); medians printed")
    parser.add_argument("--total-mib", type=int, default=512, help="MiB moved per 1 MiB throughput run")
    parser.add_argument("--window", type=int, default=8, help="posts in flight in throughput runs")
    parser.add_argument("--small-bytes", type=int, default=4096, help="write size for the overhead runs")
    parser.add_argument("--count", type=int, default=20000, help="writes per overhead run")
    parser.add_argument("--batch", type=int, default=256, help="writes per post in the batched run")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    settings: list[bool | None] = [None]
    if args.kind == "tcp":
        settings = [mac for mac in (True, False) if args.mac in ("both", "on" if mac else "off")]
    raw: dict[bool | None, list[dict]] = {mac: [] for mac in settings}
    for _ in range(max(1, args.repeats)):  # interleaved: a shared machine's load drifts alike for both
        for mac in settings:
            raw[mac].append(run(args.kind, args.total_mib, args.window, args.small_bytes, args.count, args.batch,
                                mac))
    runs = [_median(raw[mac]) for mac in settings]
    for results in runs:
        _print(results)
    if len(runs) == 2:
        on, off = runs
        print(f"  what the MAC costs (on vs off, this run, median of {len(raw[True])}):")
        for label in on["throughput_gbps"]:
            a, b = on["throughput_gbps"][label] * 1e3, off["throughput_gbps"][label] * 1e3
            spread = ", ".join(f"{r['throughput_gbps'][label] * 1e3:.0f}/{o['throughput_gbps'][label] * 1e3:.0f}"
                               for r, o in zip(raw[True], raw[False]))
            print(f"    {label:>5} writes: {a:7.1f} MB/s vs {b:7.1f} MB/s ({(a / b - 1) * 100:+.0f}%); "
                  f"each pair on/off: {spread}")
        for key, value in on["per_write_us"].items():
            if key != "write_bytes":
                print(f"    {key:<26} {value:8.2f} us vs {off['per_write_us'][key]:8.2f} us")
    if args.json:
        doc = runs[0] if len(runs) == 1 else {"runs": runs, "raw": [raw[mac] for mac in settings]}
        write_json_atomic(args.json, versioned("benchmark.transport", doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
