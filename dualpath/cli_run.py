"""`dualpath run`: a workload on real engines, one run per policy; `dualpath engine`: one engine process.

`run` starts the cluster's engines on this machine (NIC bandwidths emulated at the cluster file's
values), scales the workload to the model's size, runs each policy in turn on the same engines and
the same agents, and prints JCT, throughput, TTFT, TPOT and per-node SNIC bytes. `--predict` also
runs the simulator on the same cluster, workload and policy, calibrated from a profile of the engines
taken first (`profile_engines`), and prints the measured JCT beside the predicted one. Exit code 1
when a turn was lost, (with `--verify`) a completed turn differs from a full recompute, or an
`--inject` fault never fired (the run did not test what was asked). Lost and wrong turns are
counted apart. SIGTERM and SIGHUP stop the engines and remove the run's directory before exiting.
`--transport` picks how engines move KV (tcp; verbs or nixl where this machine can run them, else one
line and exit 2 before any engine starts). `--engines HOST:PORT,...` attaches to engines started
elsewhere instead (`cli_run_engines`; `--engine-commands DIR` prints what to start).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from dualpath import flags
from dualpath.cli_help import add_slo_arguments
from dualpath.cli_run_engines import add_engines_arguments, check_attach_flags, engine_commands, runtime_of
from dualpath.cli_run_profile import profile_engines

if TYPE_CHECKING:
    from dualpath.plan import Plan


DEFAULT_POLICIES = "layerwise,dualpath"
RUN_SCHEMA_VERSION = 1  # of the `run` JSON document


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "engine":
        from dualpath.runtime.engine_cli import add_arguments as engine_arguments

        engine_arguments(parser)
        return
    parser.add_argument("--cluster", type=flags.name, required=True,
                        help="cluster TOML (e.g. examples/clusters/local-1p1d.toml) or xPyD")
    parser.add_argument("--model", type=flags.name, default="tiny",
                        help="a dense model preset or LLM TOML (default tiny)")
    parser.add_argument("--workload", type=flags.name, default="agentic-64k",
                        help="generator name or JSONL file (default agentic-64k)")
    parser.add_argument("--agents", type=flags.agents, default=16, help="agents of the workload")
    parser.add_argument("--policy", type=flags.names, default=DEFAULT_POLICIES,
                        help=f"comma-separated policies (default {DEFAULT_POLICIES})")
    parser.add_argument("--plan", metavar="FILE", type=flags.in_file,
                        help="replay a plan from `dualpath plan` (of this run's scaled workload) instead of --policy")
    parser.add_argument("--scale", type=flags.scale, default=64.0, help="divide every token count by this (default 64)")
    parser.add_argument("--turns", type=flags.turns, default=4, help="keep each agent's last N turns (default 4)")
    parser.add_argument("--warm-turns", type=flags.integer(0, flags.MAX_TURNS, "flags.MAX_TURNS"), default=1,
                        help="first turns of each agent run untimed to fill storage with its history (default 1)")
    parser.add_argument("--block-tokens", type=flags.run_block_tokens, default=64,
                        help="tokens per KV block (default 64, the paper's)")
    parser.add_argument("--aps", type=flags.aps, help="online: Poisson arrivals at this many agents per second")
    add_slo_arguments(parser)
    parser.add_argument("--inject", action="append", default=[], metavar="FAULT", type=_fault,
                        help="kill-engine:DE0@5s or corrupt-block:0.01 (repeatable)")
    parser.add_argument("--seed", type=flags.seed, default=0, help="seed of the workload, faults and policies")
    parser.add_argument("--predict", action="store_true", help="also simulate each policy and print both JCTs")
    parser.add_argument("--verify", action="store_true", help="check every turn against a full recompute")
    parser.add_argument("--json", metavar="FILE", type=flags.out_file,
                        help="write the results (with each run's Trace) as JSON; - is stdout")
    parser.add_argument("--out", metavar="DIR", type=flags.out_dir, help="write traces and the simulator's plots here")
    parser.add_argument("--timeout-s", type=flags.seconds, default=600.0, help="fail a run not done by then")
    parser.add_argument("--device", type=flags.device, default="cpu", help="cpu, or cuda[:N] for the engines' HBM")
    parser.add_argument("--transport", default="tcp", choices=("tcp", "verbs", "nixl"),
                        help="how engines move KV (default tcp; verbs needs an RDMA device, nixl the nixl extra)")
    parser.add_argument("--in-process", action="store_true",
                        help="engines as threads of this process, not OS processes (quick checks)")
    add_engines_arguments(parser)

def _fault(text: str) -> str:
    """One --inject value, checked at parse time (whether a killed engine exists is checked once the
    cluster is known)."""
    from dualpath.errors import DualpathError
    from dualpath.runtime.engines.faults import parse_faults

    try:
        parse_faults([text])
    except DualpathError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def run(name: str, args: argparse.Namespace) -> int:
    if name == "engine":
        from dualpath.runtime.engine_cli import main

        return main(args=args, exit_process=True)  # returns only when the engine never started
    from dualpath.jsonio import json_owns_stdout

    with json_owns_stdout(args.json), _exit_on_termination():
        return _run(args)


@contextlib.contextmanager
def _exit_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run as an exception would: the engines are stopped and the run's
    directory removed on the way out (the engines also watch this process: see `runtime.engines.lifeline`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace) -> int:
    from dualpath.cluster import Role
    from dualpath.errors import SpecError
    from dualpath.jsonio import versioned, write_json_atomic
    from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
    from dualpath.plan import Plan
    from dualpath.runtime.engines.faults import parse_faults
    from dualpath.runtime.scheduling.agents import scale_workload
    from dualpath.runtime.scheduling.realrun import run_real

    check_attach_flags(args)
    _check_transport(args.transport)
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
    from dualpath.cli_rollout import rollout_policy_of  # a rollout plan: its rules and directives, as a policy

    rollout = rollout_policy_of(args.plan, cluster, llm, bt) if args.plan else None
    plan = Plan.load(args.plan) if args.plan and rollout is None else None
    runs: list[tuple[str, Plan | None]] = [(plan.solver, plan)] if plan else [(n, None) for n in names]
    policies = {n: _policy(n, cluster, llm, bt) for n, _ in runs if plan is None and rollout is None}  # fail early
    if rollout is not None:
        if args.predict:
            raise SpecError("dualpath run", "--predict", "with a rollout plan",
                            "no --predict: `dualpath simulate --plan` predicts a rollout plan")
        runs, policies = [(rollout.name, None)], {rollout.name: rollout}
    if args.in_process and args.transport == "nixl" and "ortools" in sys.modules:
        # NIXL's bundled libraries and OR-Tools' abort a process that loads both (free(): invalid pointer).
        raise SpecError("dualpath run", "--in-process", f"with --transport nixl and {', '.join(policies)}",
                        "engines as processes (no --in-process): these policies load OR-Tools, which cannot "
                        "share a process with NIXL")
    if args.engine_commands:  # what to start on each machine; the run itself is --engines
        print(engine_commands(args, cluster, llm, workload))
        return 0
    results, traces = [], []
    print(f"{cluster.name or cluster.shorthand} ({cluster.num_pe} PE, {cluster.num_de} DE), {llm.name}, "
          f"{workload.name}: {args.agents} agents, {len(workload.requests)} turns ({args.warm_turns} warm-up per agent)"
          + (f", online at {args.aps:g} agents/s" if args.aps else "")
          + (f", faults {faults.describe()}" if not faults.empty else ""), flush=True)
    with runtime_of(args, cluster, llm, workload, faults) as runtime:
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
        write_json_atomic(args.json, versioned("run", {
            "cluster": cluster.name or cluster.shorthand, "model": llm.name, "workload": workload.name,
            "agents": args.agents, "aps": args.aps, "slo_ttft_s": args.slo_ttft_s, "slo_tpot_s": args.slo_tpot_s,
            "faults": faults.describe(), "results": results}, RUN_SCHEMA_VERSION))
    if args.out:
        _write_out(args.out, traces)
    bad = [r for r in results if r["lost_turns"] or r["wrong_turns"] or r["faults_unfired"]]
    for r in bad:
        unfired = f"; injected but never fired: {', '.join(r['faults_unfired'])}" if r["faults_unfired"] else ""
        print(f"{r['policy']}: {r['lost_turns']} turns lost, {len(r['wrong_turns'])} wrong{unfired}", file=sys.stderr)
    return 1 if bad else 0


def _check_transport(kind: str) -> None:
    """Refuse, in one line and before any engine starts, a transport this machine cannot run."""
    from dualpath.errors import DualpathError
    from dualpath.runtime.engine import transport_unavailable

    reason = transport_unavailable(kind) if kind != "tcp" else None
    if reason:
        raise DualpathError(f"--transport {kind}: {reason}")


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
           "snic_read_bytes": meta.get("snic_read_bytes", {}), "snic_write_bytes": meta.get("snic_write_bytes", {}),
           "read_bytes_pe_de": list(trace.read_bytes_by_side()),
           "recomputed_turns": sum(1 for r in trace.records if r.status == "recomputed"),
           "retried": meta.get("retried", []), "faults_fired": meta.get("faults_fired", []),
           "faults_unfired": meta.get("faults_unfired", []),
           "lost_turns": meta.get("turns_expected", 0) - meta.get("turns_done", 0),
           "wrong_turns": meta.get("wrong_turns", [])}
    from dualpath.runtime.capacity import SLO, latency_summary, online_summary

    slo = SLO(slo_ttft_s, slo_tpot_s)
    row.update(latency_summary(trace, slo))  # the same latency and goodput fields as `dualpath simulate`
    if meta.get("online"):
        row["online"] = online_summary(trace, slo)
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
    if r["faults_unfired"]:
        text += f"; NEVER FIRED: {', '.join(r['faults_unfired'])}"
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
