"""The `dualpath` command line: `main(argv) -> int`. Subcommands live in `cli_*` modules.

Exit codes: 0 success; 1 a verification found a violation; 2 bad input (one line on stderr, no
traceback); 3 a verification could not decide.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from dualpath import __version__
from dualpath.errors import DualpathError

COMMANDS = {
    "info": ("dualpath.cli_model", "print a cluster and model's derived numbers"),
    "workload": ("dualpath.cli_model", "generate or import a workload, print statistics, write JSONL"),
    "simulate": ("dualpath.cli_simulate", "run the discrete-event simulator under one or more policies"),
    "plan": ("dualpath.cli_plan", "optimise PE/DE/path assignments for a batch of requests"),
    "run": ("dualpath.cli_run", "run a workload on real engines, one run per policy"),
    "engine": ("dualpath.cli_run", "start one prefill or decode engine process"),
    "verify": ("dualpath.cli_verify", "prove QoS lane and deadlock-freedom properties of a configuration"),
    "serve": ("dualpath.cli_serve", "the online scheduler as an HTTP service (engines, reports, KV events, routes)"),
    "demo": ("dualpath.demo", "the bundled tour: model, workload, simulation, verification, real run"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` returns the code (tests call it in-process)."""

    def error(self, message: str) -> NoReturn:
        raise DualpathError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from dualpath.cli_help import DESCRIPTION, EPILOG, HelpFormatter, decorate

    parser = _Parser(prog="dualpath", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"dualpath {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(name, command)
        decorate(name, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    import importlib

    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args.command, args) or 0)
    except DualpathError as err:
        print(f"dualpath: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("dualpath: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)


def main_entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # `dualpath ... | head` closed the pipe: not an error of ours. Point stdout at /dev/null so the
        # interpreter's own flush at exit does not raise again, and exit as a shell does on SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)


if __name__ == "__main__":
    main_entry()
