"""`dualpath run --engines`: a run on engines some other launcher started, on this machine or others.

`--engine-commands DIR` prints what to start: one `dualpath engine` command per engine of the
cluster, configured as a local run configures it (names, nodes, emulated NICs, buffers, context),
its model file written to DIR and its block store under DIR: DIR is a directory every machine
mounts at the same path (3FS, NFS). Each command binds `$HOST`, the machine's own address, on
fixed ports from `--base-port`; the last line is the `dualpath run --engines` that attaches to them.
`runtime_of` starts the engines or attaches to them (`AttachedRuntime`), and `check_attach_flags`
refuses what an attached run cannot do: faults, in-process engines, a device or transport (each
engine's own flags decide those).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from dualpath import flags
from dualpath.errors import DualpathError

# What a run attached to engines cannot do: they are not this run's to configure, kill or restart.
_LOCAL_ONLY = {"inject": ("--inject", []), "in_process": ("--in-process", False), "device": ("--device", "cpu"),
               "transport": ("--transport", "tcp")}
_ATTACH_ONLY = ("store", "scheduler_host", "shutdown_engines")
DEFAULT_BASE_PORT = 7100


def add_engines_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engines", metavar="HOST:PORT,...", type=flags.name,
                        help="attach to running engines (their control addresses) instead of starting them; "
                             "the cluster secret comes from $DUALPATH_SECRET")
    parser.add_argument("--store", metavar="DIR", type=flags.name,
                        help="with --engines: the engines' shared block store as mounted here")
    parser.add_argument("--scheduler-host", type=flags.host,
                        help="with --engines: the address engines reach the scheduler at "
                             "(default: this machine's address toward the first engine)")
    parser.add_argument("--shutdown-engines", action="store_true", help="with --engines: stop them at the end")
    parser.add_argument("--engine-commands", metavar="DIR", type=flags.out_dir,
                        help="print the engine commands of this run for other machines (model file and "
                             "store in DIR, shared by all of them) and exit")
    parser.add_argument("--base-port", type=flags.integer(1, 65_000, "65,000"), default=DEFAULT_BASE_PORT,
                        help=f"with --engine-commands: engine i's control port is this + i "
                             f"(default {DEFAULT_BASE_PORT})")


def check_attach_flags(args: argparse.Namespace) -> None:
    """One line for a flag that does not fit how this run gets its engines."""
    if args.engines and args.engine_commands:
        raise DualpathError("--engine-commands prints the engines to start; --engines attaches to them: one at a time")
    if not args.engines:
        for flag in _ATTACH_ONLY:
            if getattr(args, flag):
                raise DualpathError(f"--{flag.replace('_', '-')} goes with --engines (attaching to running engines)")
        return
    for flag, (name, default) in _LOCAL_ONLY.items():
        if getattr(args, flag) != default:
            raise DualpathError(f"{name} cannot be used with --engines: the run attaches to engines it did not start "
                                "(each engine's own flags apply)")
    if not args.store:
        raise DualpathError("--engines needs --store DIR: the engines' shared block store as mounted on this "
                            "machine (the scheduler counts each turn's hits in it)")


def runtime_of(args: argparse.Namespace, cluster, llm, workload, faults):
    """The engines of this run: started here, or (--engines) attached to."""
    from dualpath.runtime.scheduling.realrun import context_tokens_for, runtime_for

    bt = args.block_tokens
    if not args.engines:
        return runtime_for(cluster, llm, workload, bt, seed=args.seed, faults=faults, device=args.device,
                           in_process=args.in_process, transport=args.transport)
    from dualpath.runtime.scheduling.attached_runtime import AttachedRuntime, parse_addresses
    from dualpath.runtime.transports.auth import SECRET_ENV, secret_from_env

    addresses = parse_addresses(args.engines)
    try:
        secret = secret_from_env()
    except DualpathError:
        raise DualpathError(f"--engines: set ${SECRET_ENV} to the cluster secret the engines were started with"
                            ) from None
    return AttachedRuntime(cluster, llm, addresses, args.store, secret, block_tokens=bt,
                           max_context_tokens=context_tokens_for(workload, bt), seed=args.seed,
                           scheduler_host=args.scheduler_host or "", shutdown_engines=args.shutdown_engines)


def engine_commands(args: argparse.Namespace, cluster, llm, workload) -> str:
    """The shell lines that start this run's engines elsewhere, then the run that attaches to them."""
    from dataclasses import replace

    from dualpath.cluster import Role
    from dualpath.runtime.scheduling.realrun import runtime_for

    # A LocalRuntime that never starts: it writes DIR/model.json and DIR/store, and sizes each engine.
    shared = Path(args.engine_commands).resolve()  # the same absolute path on every machine
    runtime = runtime_for(cluster, llm, workload, args.block_tokens, seed=args.seed, work_dir=shared)
    engines = cluster.engines(Role.PREFILL) + cluster.engines(Role.DECODE)
    if args.base_port + len(engines) > 65_535:
        raise DualpathError(f"--base-port {args.base_port}: {len(engines)} engines need ports up to 65,535")
    lines = [f"# on each machine: export {_secret_env()}=<the cluster secret> HOST=<this machine's address>"]
    targets = []
    for i, engine in enumerate(engines):
        options = replace(runtime.options(engine), host="HOST", port=args.base_port + i)
        command = shlex.join(["dualpath", "engine", *options.to_args()]).replace(" --host HOST ", ' --host "$HOST" ')
        lines.append(f"# {engine.name} on node {engine.node}\n{command}")
        targets.append(f"<{engine.node}>:{args.base_port + i}")
    run = ["dualpath", "run", "--cluster", args.cluster, "--model", args.model, "--workload", args.workload,
           "--agents", str(args.agents), "--scale", f"{args.scale:g}", "--turns", str(args.turns),
           "--warm-turns", str(args.warm_turns), "--block-tokens", str(args.block_tokens), "--seed", str(args.seed),
           "--policy", args.policy,
           "--engines", ",".join(targets), "--store", str(runtime.store_dir)]
    lines.append("# then, from any machine that mounts the store (<node>: that node's address)\n" + shlex.join(run))
    return "\n".join(lines)


def _secret_env() -> str:
    from dualpath.runtime.transports.auth import SECRET_ENV

    return SECRET_ENV
