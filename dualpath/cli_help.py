"""Help output of the `dualpath` command line (every default shown, examples per subcommand) and shared options."""

from __future__ import annotations

import argparse

DESCRIPTION = ("Plan, simulate, run and verify DualPath-style KV-cache loading (storage reads on both the "
               "prefill and the decode side) for agentic LLM inference.")

EPILOG = """\
exit codes: 0 success; 1 a verification found a violation (or a run lost turns); 2 bad input;
3 a verification could not decide.

examples:
  dualpath demo --quick
  dualpath info --cluster 2P4D --model deepseek-v3.2
  dualpath simulate --cluster 2P4D --agents 200 --policy basic,dualpath --json -
  dualpath COMMAND --help     (each command lists its own examples)
"""

EXAMPLES = {
    "info": ["dualpath info --cluster 2P4D --model deepseek-v3.2",
             "dualpath info --cluster examples/clusters/local-1p1d.toml --json info.json"],
    "workload": ["dualpath workload --workload agentic-32k --agents 100 --stats",
                 "dualpath workload --workload agentic-64k --aps 2 --jsonl online.jsonl"],
    "simulate": ["dualpath simulate --cluster 2P4D --agents 200 --policy basic,dualpath",
                 "dualpath simulate --aps 0.5 --slo-ttft-s 4 --slo-tpot-s 0.05 --json - | jq '.results[0]'",
                 "dualpath simulate --find-capacity --policy basic,dualpath,oracle --jobs 3",
                 "dualpath simulate --agents 100 --out out/sim --chrome-window 0:30"],
    "plan": ["dualpath plan --cluster 2P4D --batch 500 --solver ortools --json plan.json",
             "dualpath simulate --plan plan.json",
             "dualpath plan --sweep pd --gpus 48 --json sweep.json"],
    "run": ["dualpath run --cluster examples/clusters/local-1p1d.toml --agents 8 --in-process",
            "dualpath run --cluster examples/clusters/local-1p1d.toml --aps 1 --predict --json run.json",
            "dualpath run --cluster examples/clusters/local-1p1d.toml --inject kill-engine:DE0@5s --verify"],
    "engine": ["dualpath engine --role prefill --name PE0 --store /tmp/kv --ready-file /tmp/pe0.ready"],
    "verify": ["dualpath verify --opensm opensm.conf --traffic traffic.toml --roce roce.toml",
               "dualpath verify --synthesize out/opensm.conf --traffic traffic.toml --json report.json"],
    "serve": ["dualpath serve --cluster 2P4D --model deepseek-v3.2 --port 8200"],
    "demo": ["dualpath demo --out out/demo", "dualpath demo --quick"],
}


def _empty(default: object) -> bool:
    """Defaults not worth printing: unset, off or empty (0 and 0.0 are worth it)."""
    return default is None or default is False or default in ("", [], argparse.SUPPRESS)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends `(default: X)` to each option with a meaningful default the help text does not already name."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help or "", action.default
        if "default" in text or _empty(default) or not action.option_strings or action.help == argparse.SUPPRESS:
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def decorate(name: str, parser: argparse.ArgumentParser) -> None:
    """Give a subcommand's parser the defaults-showing formatter and its examples as the epilog."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:  # argparse prints nothing for an option without help: give it its default
        if action.help is None and action.option_strings and not _empty(action.default):
            action.help = "(default: %(default)s)"
    examples = EXAMPLES.get(name)
    if examples and not parser.epilog:
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)


def add_slo_arguments(parser: argparse.ArgumentParser) -> None:
    """`--slo-ttft-s`/`--slo-tpot-s`, shared with `dualpath run`; the old `--ttft-slo`/`--tpot-slo`
    spellings still parse (hidden) so existing scripts keep working."""
    from dualpath.flags import seconds

    parser.add_argument("--slo-ttft-s", type=seconds, default=4.0, help="SLO on time to first token, s")
    parser.add_argument("--slo-tpot-s", type=seconds, default=0.05, help="SLO on time per output token, s")
    parser.add_argument("--ttft-slo", dest="slo_ttft_s", type=seconds, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    parser.add_argument("--tpot-slo", dest="slo_tpot_s", type=seconds, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
