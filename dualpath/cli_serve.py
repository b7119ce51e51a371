"""`dualpath serve`: the online scheduler as an HTTP service (FastAPI + uvicorn, the `serve` extra).

Bound to 127.0.0.1 unless --host says otherwise; it will not start without an API key, so an exposed
port never schedules for whoever finds it.
"""

from __future__ import annotations

import argparse
import os
import sys

from dualpath import flags
from dualpath.errors import SpecError

API_KEY_ENV = "DUALPATH_API_KEY"


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", type=flags.name, default="2P4D",
                        help="the real cluster's model: xPyD shorthand or .toml "
                        "(engines register into its PE/DE slots; default 2P4D)")
    parser.add_argument("--model", type=flags.name, default="deepseek-v3.2", help="model preset or .toml")
    parser.add_argument("--host", type=flags.host, default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=flags.port, default=8200, help="port (default 8200)")
    parser.add_argument("--api-key", help=f"bearer token every endpoint but /healthz requires "
                        f"(default: ${API_KEY_ENV}; one of the two is required)")
    parser.add_argument("--block-tokens", type=flags.block_tokens, default=64, help="tokens per KV block (default 64)")
    parser.add_argument("--window", type=flags.integer(1, flags.MAX_WINDOW, "flags.MAX_WINDOW"), default=64,
                        help="requests decided per tick at most (default 64)")
    parser.add_argument("--budget-ms", type=flags.number(0.0, 60_000.0, low_open=True), default=15.0,
                        help="per-decision time budget, ms (default 15)")
    parser.add_argument("--slo-ttft-s", type=flags.seconds, default=4.0,
                        help="TTFT SLO the /metrics attainment estimate uses, s (default 4)")
    parser.add_argument("--whole-reads", action="store_true", help="read each request on one side only")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")


def build(args: argparse.Namespace):  # -> (FastAPI app, Router); untyped: fastapi is an optional extra
    """The app for `args`, validated; the tests and the benchmark build it the same way."""
    from dualpath.models.registry import resolve_cluster, resolve_model
    from dualpath.serve.app import create_app
    from dualpath.serve.metrics import ServeMetrics
    from dualpath.serve.router import Router
    from dualpath.solver.online import OnlineOptions

    key = args.api_key or os.environ.get(API_KEY_ENV, "")
    if not key:
        raise SpecError("--api-key", "api_key", "", f"a bearer token (or set {API_KEY_ENV})")
    for flag, value in (("--block-tokens", args.block_tokens), ("--window", args.window)):
        if value < 1:
            raise SpecError(flag, flag[2:].replace("-", "_"), value, "a positive integer")
    if not args.budget_ms > 0 or not args.slo_ttft_s > 0:
        raise SpecError("--budget-ms/--slo-ttft-s", "value", (args.budget_ms, args.slo_ttft_s), "positive numbers")
    if not 0 <= args.port <= 65535:
        raise SpecError("--port", "port", args.port, "0..65535")
    cluster, llm = resolve_cluster(args.cluster), resolve_model(args.model)
    metrics = ServeMetrics(slo_ttft_s=args.slo_ttft_s)
    options = OnlineOptions(window=args.window, budget_s=args.budget_ms / 1e3, split_reads=not args.whole_reads)
    router = Router(cluster, llm, args.block_tokens, options, metrics)
    return create_app(router, key, metrics), router


def run(name: str, args: argparse.Namespace) -> int:
    from dualpath.errors import require

    app, router = build(args)
    uvicorn = require("uvicorn", "serve")
    print(f"dualpath serve: cluster {router.cluster.shorthand} ({router.cluster.num_pe} PE / "
          f"{router.cluster.num_de} DE slots), model {router.llm.name}, http://{args.host}:{args.port}",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=args.access_log)
    return 0
