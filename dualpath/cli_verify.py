"""`dualpath verify`: QoS lane and deadlock-freedom proofs of a configuration, as an operator report."""

from __future__ import annotations

import argparse


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--opensm", required=True, metavar="FILE", help="OpenSM options file (opensm.conf)")
    parser.add_argument("--traffic", required=True, metavar="FILE", help="traffic plan TOML (classes, SLs, libraries)")
    parser.add_argument("--roce", metavar="FILE", help="RoCE QoS TOML (DSCP, PFC, ETS)")
    parser.add_argument("--overrides", metavar="FILE", help="per-switch/per-port overrides TOML")
    parser.add_argument("--protocol", default="default", help="transfer protocol variant to prove (default)")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--html", metavar="FILE", help="write the report as HTML")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")


def run(name: str, args: argparse.Namespace) -> int:
    from dualpath.jsonio import write_json_atomic, write_text_atomic
    from dualpath.proofs.report import verify

    report = verify(args.opensm, args.traffic, roce_path=args.roce, protocol=args.protocol,
                    overrides_path=args.overrides)
    if not args.quiet:
        print(report.to_text())
    if args.json:
        write_json_atomic(args.json, report.to_json())
    if args.html:
        write_text_atomic(args.html, report.to_html())
    print(report.summary)
    return report.exit_code()
