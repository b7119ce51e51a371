"""`dualpath run`: a workload on real engines, one run per policy; `dualpath engine`: one engine process.

`run` starts the cluster's engines on this machine (NIC bandwidths emulated at the cluster file's
values), scales the workload to the model's size, runs each policy in turn on the same engines and
the same agents, and prints JCT, throughput, TTFT, TPOT and per-node SNIC bytes. `--predict` also
runs the simulator on the same cluster, workload and policy, calibrated from a profile of the engines
taken first (`profile_engines`), and prints the measured JCT beside the predicted one. Exit code 1
when a turn was lost or (with `--verify`) differs from a full recompute.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dualpath.llm import CostModel
    from dualpath.plan import Plan

DEFAULT_POLICIES = "layerwise,dualpath"


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "engine":
        from dualpath.runtime.engine import add_arguments as engine_arguments

        engine_arguments(parser)
        return
    parser.add_argument("--cluster", required=True,
                        help="cluster TOML (e.g. examples/clusters/local-1p1d.toml) or xPyD")
    parser.add_argument("--model", default="tiny", help="a dense model preset or LLM TOML (default tiny)")
    parser.add_argument("--workload", default="agentic-64k", help="generator name or JSONL file (default agentic-64k)")
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--policy", default=DEFAULT_POLICIES,
                        help=f"comma-separated policies (default {DEFAULT_POLICIES})")
    parser.add_argument("--plan", metavar="FILE",
                        help="replay a plan from `dualpath plan` (of this run's scaled workload) instead of --policy")
    parser.add_argument("--scale", type=float, default=64.0, help="divide every token count by this (default 64)")
    parser.add_argument("--turns", type=int, default=4, help="keep each agent's last N turns (default 4)")
    parser.add_argument("--warm-turns", type=int, default=1,
                        help="first turns of each agent run untimed to fill storage with its history (default 1)")
    parser.add_argument("--block-tokens", type=int, default=64, help="tokens per KV block (default 64, the paper's)")
    parser.add_argument("--aps", type=float, help="online: Poisson arrivals at this many agents per second")
    parser.add_argument("--slo-ttft-s", type=float, default=4.0)
    parser.add_argument("--slo-tpot-s", type=float, default=0.05)
    parser.add_argument("--inject", action="append", default=[], metavar="FAULT",
                        help="kill-engine:DE0@5s or corrupt-block:0.01 (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predict", action="store_true", help="also simulate each policy and print both JCTs")
    parser.add_argument("--verify", action="store_true", help="check every turn against a full recompute")
    parser.add_argument("--json", metavar="FILE", help="write the results (with each run's Trace) as JSON")
    parser.add_argument("--out", metavar="DIR", help="write traces and the simulator's plots here")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="fail a run not done by then")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:N] for the engines' HBM")
    parser.add_argument("--in-process", action="store_true",
                        help="engines as threads of this process, not OS processes (quick checks)")


def run(name: str, args: argparse.Namespace) -> int:
    if name == "engine":
        from dualpath.runtime.engine import main

        return main(args=args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from dualpath.cluster import Role
    from dualpath.errors import SpecError
    from dualpath.jsonio import write_json_atomic
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.plan import Plan
    from dualpath.runtime.engines.faults import parse_faults
    from dualpath.runtime.scheduling.agents import scale_workload
    from dualpath.runtime.scheduling.realrun import run_real, runtime_for

    bt = args.block_tokens
    for flag in ("agents", "turns", "block_tokens"):
        if getattr(args, flag) < 1:
            raise SpecError("dualpath run", f"--{flag.replace('_', '-')}", getattr(args, flag), "a positive integer")
    if not 0 <= args.warm_turns < args.turns:
        raise SpecError("dualpath run", "--warm-turns", args.warm_turns, f"0 .. --turns - 1 ({args.turns - 1})")
    cluster, llm = resolve_cluster(args.cluster), resolve_model(args.model)
    workload = resolve_workload(args.workload, args.agents, args.seed, block_tokens=bt, aps=args.aps)
    workload = scale_workload(workload, args.scale, args.turns, bt)
    engines = [e.name for role in Role for e in cluster.engines(role)]
    faults = parse_faults(args.inject, args.seed, engines)
    names = [n.strip() for n in args.policy.split(",") if n.strip()]
    plan = Plan.load(args.plan) if args.plan else None
    runs: list[tuple[str, Plan | None]] = [(plan.solver, plan)] if plan else [(n, None) for n in names]
    policies = {n: _policy(n, cluster, llm, bt) for n, _ in runs if plan is None}  # unknown names fail early
    results, traces = [], []
    print(f"{cluster.name or cluster.shorthand} ({cluster.num_pe} PE, {cluster.num_de} DE), {llm.name}, "
          f"{workload.name}: {args.agents} agents, {len(workload.requests)} turns ({args.warm_turns} warm-up per agent)"
          + (f", online at {args.aps:g} agents/s" if args.aps else "")
          + (f", faults {faults.describe()}" if not faults.empty else ""), flush=True)
    with runtime_for(cluster, llm, workload, bt, seed=args.seed, faults=faults, device=args.device,
                     in_process=args.in_process) as runtime:
        profile = profile_engines(runtime, llm) if args.predict else None
        if profile is not None:
            print(profile.describe(llm), flush=True)
        for label, replay in runs:
            policy = replay if replay is not None else policies[label]
            trace = run_real(cluster, llm, workload, policy, runtime=runtime, online=args.aps is not None,
                             faults=faults, seed=args.seed, timeout_s=args.timeout_s, verify=args.verify,
                             warm_turns=args.warm_turns)
            result = summarise(trace, args.slo_ttft_s, args.slo_tpot_s)
            if profile is not None:
                result["predicted"] = predict(cluster, llm, profile, workload, label, replay, bt, args)
            results.append({**result, "trace": trace.to_json()})
            traces.append(trace)
            print(_line(result), flush=True)
    if args.json:
        write_json_atomic(args.json, {"kind": "run", "cluster": cluster.name or cluster.shorthand, "model": llm.name,
                                      "workload": workload.name, "agents": args.agents, "aps": args.aps,
                                      "faults": faults.describe(), "results": results})
    if args.out:
        _write_out(args.out, traces)
    bad = [r for r in results if r["lost_turns"] or r["wrong_turns"]]
    for r in bad:
        print(f"{r['policy']}: {r['lost_turns']} turns lost, {len(r['wrong_turns'])} wrong", file=sys.stderr)
    return 1 if bad else 0


def _policy(name: str, cluster, llm, block_tokens: int):
    """A fresh policy by name (one per run: policies keep round-robin pointers)."""
    from dualpath.solver.policies import make_policy

    return make_policy(name, cluster, llm, block_tokens)


def summarise(trace, slo_ttft_s: float, slo_tpot_s: float) -> dict:
    """The `results` row of one run (without its trace)."""
    m = trace.metrics()
    meta = trace.meta
    row = {"policy": trace.policy, "jct_s": m.jct_s, "tokens_per_s": m.tokens_per_s, "turns": m.num_requests,
           "ttft_p50_s": m.ttft_p50_s, "ttft_p99_s": m.ttft_p99_s, "ttst_p50_s": m.ttst_p50_s,
           "tpot_mean_s": m.tpot_mean_s, "tpot_p99_s": m.tpot_p99_s,
           "slo_attainment": trace.slo_attainment(slo_ttft_s, slo_tpot_s),
           "snic_read_bytes": meta.get("snic_read_bytes", {}), "snic_write_bytes": meta.get("snic_write_bytes", {}),
           "read_bytes_pe_de": list(trace.read_bytes_by_side()),
           "recomputed_turns": sum(1 for r in trace.records if r.status == "recomputed"),
           "retried": meta.get("retried", []), "faults_fired": meta.get("faults_fired", []),
           "lost_turns": meta.get("turns_expected", 0) - meta.get("turns_done", 0),
           "wrong_turns": meta.get("wrong_turns", [])}
    if meta.get("online"):
        from dualpath.runtime.capacity import SLO, online_summary

        row["online"] = online_summary(trace, SLO(slo_ttft_s, slo_tpot_s))
    return row


def predict(cluster, llm, profile, workload, label: str, replay, block_tokens: int, args) -> dict:
    """The simulator's run of the same timed turns, calibrated by the engines' profile."""
    from dualpath.runtime.scheduling.agents import timed_workload
    from dualpath.runtime.sim.simulator import simulate

    fitted = replace(llm, cost=profile.cost)
    policy = replay if replay is not None else _policy(label, cluster, fitted, block_tokens)
    trace = simulate(cluster, fitted, timed_workload(workload, args.warm_turns, block_tokens), policy,
                     online=args.aps is not None, calibration=profile.calibration(), progress=False, seed=args.seed)
    m = trace.metrics()
    return {"jct_s": m.jct_s, "tokens_per_s": m.tokens_per_s, "ttft_p50_s": m.ttft_p50_s, "tpot_mean_s": m.tpot_mean_s,
            "snic_read_bytes": trace.meta.get("snic_read_bytes", {})}


def _line(r: dict) -> str:
    snic = ", ".join(f"{n} {b / 1e6:,.1f} MB" for n, b in r["snic_read_bytes"].items())
    text = (f"{r['policy']:>12}: JCT {r['jct_s']:.2f} s, {r['tokens_per_s']:,.1f} tokens/s, TTFT p50 "
            f"{r['ttft_p50_s'] * 1e3:,.0f} ms p99 {r['ttft_p99_s'] * 1e3:,.0f} ms, "
            f"TPOT {r['tpot_mean_s'] * 1e3:,.1f} ms; SNIC read {snic}")
    if "predicted" in r:
        p = r["predicted"]["jct_s"]
        text += f"; simulated JCT {p:.2f} s ({(p / r['jct_s'] - 1) * 100:+.0f}%)"
    if "online" in r:
        text += f"; SLO attainment {r['online']['slo_attainment']:.0%}"
    if r["lost_turns"] or r["recomputed_turns"] or r["retried"]:
        text += f"; {r['lost_turns']} lost, {r['recomputed_turns']} recomputed, {len(r['retried'])} retried"
    return text


def _write_out(out: str, traces: list) -> None:
    from pathlib import Path

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for trace in traces:
        trace.save(str(folder / f"runtime_{trace.policy.replace(':', '_')}.trace.json"))
    try:
        from dualpath.runtime.plots import write_plots
    except ImportError:
        return
    write_plots(traces, folder)


@dataclass(frozen=True)
class EngineProfile:
    """What the simulator needs to know about this machine's engines (see `profile_engines`)."""

    cost: CostModel  # the model's, fitted to the engines
    rdma_submit_s: float  # per Layer Block moved in or out of a PE: the fixed cost beyond the bytes
    interval_s: float = 0.05  # the scheduler's tick
    rows: list = field(default_factory=list)  # (kind, tokens or hit blocks, path, seconds) measured

    def calibration(self):
        """The simulator's constants for the emulated cluster: NICs at their line rate (the runtime's
        limiters are exact), the profiled cost, per-block cost and scheduler tick."""
        from dualpath.runtime.sim.calibration import Calibration

        return Calibration(cost_model=None, snic_read_efficiency=1.0, snic_write_efficiency=1.0,
                           weight_bytes_per_param=4.0, rdma_submit_s=self.rdma_submit_s,
                           cuda_copy_submit_s=self.rdma_submit_s, schedule_interval_s=self.interval_s)

    def describe(self, llm) -> str:
        c = self.cost
        step_ms = 2 * llm.active_params / (c.peak_tflops * 1e12 * c.decode_mfu) * 1e3
        return (f"engine profile: prefill {c.prefill_overhead_s * 1e3:.1f} ms + FLOPs at {c.prefill_mfu:.3g} x "
                f"{c.peak_tflops:g} TFLOPS, decode {step_ms:.2f} ms per token, {self.rdma_submit_s * 1e6:.0f} us "
                f"per layer block moved")


def profile_engines(runtime, llm, *, sizes=(16, 64, 128, 256, 384), hit_blocks=(8, 24, 48), new_tokens: int = 32,
                    decode_tokens: int = 8, repeats: int = 3, interval_s: float = 0.05) -> EngineProfile:
    """Measure this machine's engines once and fit the simulator's constants to them.

    Fresh prompts of `sizes` tokens give prefill seconds per FLOP and per batch (`CostModel.fit`) and
    decode seconds per token (charged per sequence: a DE runs no batches); prompts of `new_tokens`
    on `hit_blocks` cached blocks, on both read paths, give the per-Layer-Block cost of moving KV in
    and out of a PE, fitted to the simulator's layerwise step. Each point is the median of `repeats`
    runs. Storage is emptied afterwards."""
    from dualpath.cluster import Role
    from dualpath.errors import SpecError
    from dualpath.llm import CostModel
    from dualpath.runtime.scheduling.agents import append_tokens

    room = runtime.max_context_tokens - decode_tokens
    sizes = [n for n in sizes if n <= room]
    hit_blocks = [h for h in hit_blocks if h * runtime.block_tokens + 3 + new_tokens <= room]
    if len(sizes) < 2 or not hit_blocks:
        raise SpecError("profile", "max_context_tokens", runtime.max_context_tokens,
                        "room for the profile's prompts (sizes and hits) in the engines' context")
    pe = next(h for h in runtime.handles.values() if h.role is Role.PREFILL)
    de = next(h for h in runtime.handles.values() if h.role is Role.DECODE)
    vocab, bt, rows = runtime.config.vocab_size, runtime.block_tokens, []

    def submit(tokens, path="pe", new=decode_tokens):
        return runtime.client.submit(pe.address, de.address, tokens, new, path=path)

    fresh, steps = [], []
    for n in sizes:
        runs = [submit(append_tokens(runtime.seed + 101 * rep, n, rep, n, vocab)) for rep in range(repeats + 1)][1:]
        seconds = _median([r.times["first_token"] - r.times["prefill_start"] for r in runs])  # first: warm-up
        fresh.append((llm.prefill_flops(0, n), seconds))
        steps += [(r.times["finish"] - r.times["second_token"]) / (decode_tokens - 2) for r in runs]
        rows.append(("fresh", n, "pe", seconds))
    cost = CostModel.fit(fresh, llm.cost)
    # t(b) = b x step_s: all compute, no fixed part, memory never binding.
    cost = replace(cost, decode_mfu=min(1.0, 2.0 * llm.active_params / (cost.peak_tflops * 1e12 * _median(steps))),
                   decode_overhead_s=0.0, hbm_gb_per_s=1e6, hbm_efficiency=1.0)
    hits = []
    for path in ("pe", "de"):
        for h in hit_blocks:
            times, hit, new = [], 0, 0
            for rep in range(repeats):
                base = append_tokens(runtime.seed + 7 + rep, h, path == "de", h * bt + 1, vocab)
                first = submit(base, new=2)  # stores h blocks
                r = submit(base + first.tokens + append_tokens(runtime.seed + 8, h, rep, new_tokens, vocab), path)
                times.append(r.times["first_token"] - r.times["prefill_start"])
                hit, new = r.hit_tokens // bt, len(base) + 2 + new_tokens - r.hit_tokens
            hits.append((hit, new, path, _median(times)))
            rows.append(("hit", hit, path, _median(times)))
    runtime.clear_store()
    fitted = replace(llm, cost=cost)
    submit_s = _fit_submit(fitted, runtime.cluster.node, bt, hits)
    return EngineProfile(cost, submit_s, interval_s, rows)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _fit_submit(llm, node, block_tokens: int, hits: list) -> float:
    """The per-Layer-Block cost that makes the simulator's layerwise step (load, compute, send in a
    pipeline over the layers) match the measured prefills with hits, by least squares on a grid."""
    layers, kv = llm.num_layers, llm.kv_bytes_per_token
    cnic = node.cnic_bytes_per_s * node.cnic_kv_share

    def step(submit_s: float, hit: int, new: int, path: str) -> float:
        c = llm.prefill_time_s([(hit * block_tokens, new)]) / layers
        t = max(hit * block_tokens * kv / cnic, hit * layers * submit_s) / layers
        out_blocks = -(-new // block_tokens) + (hit if path == "pe" else 0)
        out_bytes = new * kv + (hit * block_tokens * kv if path == "pe" else 0)
        o = max(out_bytes / cnic, out_blocks * layers * submit_s) / layers
        return t + c + o + (layers - 1) * max(t, c, o)

    grid = [0.0] + [1e-7 * 1.05**i for i in range(260)]  # 0.1 us .. 30 ms
    return min(grid, key=lambda s: sum((step(s, h, n, p) - sec) ** 2 for h, n, p, sec in hits))
