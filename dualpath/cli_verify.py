"""`dualpath verify`: QoS lane and deadlock-freedom proofs of a configuration, as an operator report.

`--synthesize OUT` instead writes an opensm.conf QoS section to OUT and the library settings to OUT's
`.env` sibling for the traffic plan, then verifies what it wrote with the same checker (exit 1 and the
conflicting requirements when no configuration can satisfy the plan).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dualpath import flags


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--opensm", metavar="FILE", type=flags.in_file,
                        help="OpenSM options file (opensm.conf); required unless --synthesize")
    parser.add_argument("--traffic", required=True, metavar="FILE", type=flags.in_file,
                        help="traffic plan TOML (classes, SLs, libraries)")
    parser.add_argument("--roce", metavar="FILE", type=flags.in_file, help="RoCE QoS TOML (DSCP, PFC, ETS)")
    parser.add_argument("--overrides", metavar="FILE", type=flags.in_file, help="per-switch/per-port overrides TOML")
    parser.add_argument("--qos-policy", metavar="FILE", type=flags.in_file,
                        help="OpenSM QoS policy file (default: opensm.conf's qos_policy_file)")
    parser.add_argument("--env", action="append", default=[], metavar="FILE", type=flags.in_file,
                        help="KEY=VALUE environment of a process (repeatable; replaces the plan's env_file)")
    parser.add_argument("--pod", action="append", default=[], metavar="FILE", type=flags.in_file,
                        help="Kubernetes pod spec, YAML or JSON: each container's env (repeatable)")
    parser.add_argument("--mlnx-qos", metavar="FILE", type=flags.in_file,
                        help="`mlnx_qos -i <if>` output: the NIC's RoCE state")
    parser.add_argument("--sonic", metavar="FILE", type=flags.in_file,
                        help="SONiC config_db.json: the switches' RoCE QoS tables")
    parser.add_argument("--synthesize", metavar="OUT", type=flags.out_file,
                        help="write an opensm.conf for the plan to OUT (and OUT's .env sibling), then verify it")
    parser.add_argument("--protocol", type=flags.name, default="default",
                        help="transfer protocol variant to prove (default)")
    parser.add_argument("--json", metavar="FILE", type=flags.out_file, help="write the report as JSON; - is stdout")
    parser.add_argument("--html", metavar="FILE", type=flags.out_file, help="write the report as HTML")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")


def _synthesize(args: argparse.Namespace) -> int | None:
    """Write the synthesized files and point args at them; an exit code when there is nothing to verify."""
    from dualpath.jsonio import write_text_atomic
    from dualpath.proofs.roce_spec import load_roce
    from dualpath.proofs.synthesis import synthesize
    from dualpath.proofs.traffic import load_traffic, with_sources

    plan = with_sources(load_traffic(args.traffic), args.env, args.pod)
    roce = load_roce(args.roce, args.mlnx_qos, args.sonic) if args.roce else None
    result = synthesize(plan, roce)
    if isinstance(result, list):
        for conflict in result:
            print(conflict)
        if all(c.exact for c in result):
            print(f"synthesize: no configuration satisfies {args.traffic}: {len(result)} conflict(s)")
            return 1
        print(f"synthesize: no configuration found for {args.traffic}, and none proved impossible")
        return 3
    out = Path(args.synthesize)
    env = out.with_suffix(".env")
    write_text_atomic(out, result.opensm_text)
    write_text_atomic(env, result.env_text)
    print(f"synthesize: wrote {out} and {env}: qos_high_limit {result.high_limit}, every KV VL guaranteed "
          f"{float(result.kv_share):.6g} of the link (no table gives more than {float(result.kv_ceiling):.6g})")
    args.opensm, args.env, args.pod, args.qos_policy = str(out), [str(env)], [], None
    return None


def run(name: str, args: argparse.Namespace) -> int:
    from dualpath.jsonio import json_owns_stdout

    with json_owns_stdout(args.json):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from dualpath.jsonio import write_json_atomic, write_text_atomic
    from dualpath.proofs.report import verify

    if args.synthesize:
        code = _synthesize(args)
        if code is not None:
            return code
    elif not args.opensm:
        from dualpath.errors import InputError

        raise InputError("dualpath verify", "--opensm FILE is required (or --synthesize OUT)")
    report = verify(args.opensm, args.traffic, roce_path=args.roce, protocol=args.protocol,
                    overrides_path=args.overrides, qos_policy_path=args.qos_policy, env_paths=args.env,
                    pod_paths=args.pod, mlnx_qos_path=args.mlnx_qos, sonic_path=args.sonic)
    if not args.quiet:
        print(report.to_text())
    if args.json:
        write_json_atomic(args.json, report.to_json())
    if args.html:
        write_text_atomic(args.html, report.to_html())
    print(report.summary)
    return report.exit_code()
