"""The engine's command line and process: `dualpath engine` / `python -m dualpath.runtime.engine`.

`add_arguments` puts one flag per `EngineOptions` field on a parser (checked at parse time, one line
naming the flag and its cap), `parse_args` turns them into options, the cluster secret and the ready
file, and `main` runs one engine until it is told to stop or its launcher is gone.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from dualpath import flags
from dualpath.errors import DualpathError, InputError
from dualpath.runtime.engine import PRESETS, ROLES, TRANSPORTS, EngineOptions, create_engine, transport_unavailable
from dualpath.runtime.transports.auth import DEFAULT_BIND_HOST, SECRET_ENV, check_secret, secret_from_env

if TYPE_CHECKING:
    from dualpath.runtime.engines.worker import EngineBase

LOG = logging.getLogger("dualpath.runtime.engine")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The engine's flags on `p` (also how `dualpath engine` gets them)."""
    # Every value is checked here, at parse time, in one line naming the flag and its cap (`dualpath.flags`).
    threads = flags.integer(1, flags.MAX_THREADS, "flags.MAX_THREADS")
    rate = flags.number(0.0, flags.MAX_BYTES_PER_S, low_open=True, cap="flags.MAX_BYTES_PER_S")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", required=True, type=flags.name)
    p.add_argument("--store", required=True, type=flags.out_dir, help="block store directory shared by all engines")
    p.add_argument("--node", default="", type=flags.optional(flags.name))
    p.add_argument("--host", default=DEFAULT_BIND_HOST, type=flags.host, help="bind address (default loopback)")
    p.add_argument("--port", type=flags.port, default=0, help="control port (0 picks one, printed when ready)")
    p.add_argument("--data-port", type=flags.port, default=0)
    p.add_argument("--model", default="tiny", type=flags.name,
                   help="preset (" + ", ".join(PRESETS) + ") or a JSON config file")
    p.add_argument("--checkpoint", default="", type=flags.optional(flags.name),
                   help="local safetensors checkpoint directory")
    p.add_argument("--seed", type=flags.seed, default=0)
    p.add_argument("--dtype", default="float32", type=flags.name)
    p.add_argument("--device", default="cpu", type=flags.device)
    p.add_argument("--block-tokens", type=flags.run_block_tokens, default=16)
    p.add_argument("--kv-dtype", default="", type=flags.optional(flags.name))
    p.add_argument("--max-context-tokens", default=4096,
                   type=flags.integer(1, flags.MAX_CONTEXT_TOKENS, "flags.MAX_CONTEXT_TOKENS"))
    p.add_argument("--buffer-blocks", default=1024,
                   type=flags.integer(1, flags.MAX_BUFFER_BLOCKS, "flags.MAX_BUFFER_BLOCKS"))
    p.add_argument("--num-slots", type=threads, default=2)
    p.add_argument("--send-credits", type=threads, default=4)
    p.add_argument("--hbm-bytes", type=flags.integer(1, flags.MAX_HBM_BYTES, "flags.MAX_HBM_BYTES"),
                   default=1 << 30)
    p.add_argument("--snic-bytes-per-s", type=rate, default=None)
    p.add_argument("--cnic-bytes-per-s", type=rate, default=None)
    p.add_argument("--cnic-centric", action="store_true")
    p.add_argument("--transport", default="tcp", choices=TRANSPORTS, help="KV transport (default tcp)")
    p.add_argument("--cpu-threads", type=threads, default=1, help="torch threads on CPU (default 1)")
    p.add_argument("--corrupt-block-rate", type=flags.fraction, default=0.0,
                   help="fault injection: corrupt this share of the block files read (checksums catch it)")
    p.add_argument("--fault-seed", type=flags.seed, default=0)
    p.add_argument("--scheduler", default="", type=flags.optional(flags.address),
                   help="HOST:PORT of the scheduler to fetch the group's work from")
    p.add_argument("--secret-file", default="", type=flags.optional(flags.in_file),
                   help=f"file holding the cluster secret (else ${SECRET_ENV})")
    p.add_argument("--ready-file", default="", type=flags.optional(flags.out_file),
                   help="write 'host port' here once listening")
    p.add_argument("--log-level", default="INFO", type=flags.log_level, help="one of " + ", ".join(flags.LOG_LEVELS))
    return p


class _Parser(argparse.ArgumentParser):
    """`python -m dualpath.runtime.engine`'s parser: a bad flag is one line (an `InputError`), as in `dualpath`."""

    def error(self, message: str) -> NoReturn:
        raise InputError(self.prog, message)


def _read_secret(path: str) -> bytes:
    """The cluster secret in `path` (hex or plain text); a file too large to be one is refused unread."""
    from dualpath.validate import read_text

    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise InputError(path, f"cannot read the cluster secret: {exc.strerror}") from exc
    if size > flags.MAX_SECRET_BYTES:
        raise InputError(path, f"{size:,} bytes: a cluster secret has at most {flags.MAX_SECRET_BYTES:,} "
                               "(MAX_SECRET_BYTES)")
    raw = read_text(path).strip()
    try:
        return check_secret(bytes.fromhex(raw))
    except ValueError:
        return check_secret(raw)


def parse_args(argv: list[str] | None, args: argparse.Namespace | None = None) -> tuple[EngineOptions, bytes, str]:
    """Options, secret and ready-file of a command line (or of flags `add_arguments` already parsed)."""
    if args is None:
        p = _Parser(prog="dualpath engine", description="Run one prefill or decode engine.")
        args = add_arguments(p).parse_args(argv)
    options = EngineOptions(
        role=args.role, name=args.name, store_dir=args.store, node=args.node, host=args.host, port=args.port,
        data_port=args.data_port, model=args.model, checkpoint=args.checkpoint, seed=args.seed,
        dtype=args.dtype, device=args.device, block_tokens=args.block_tokens, kv_dtype=args.kv_dtype,
        max_context_tokens=args.max_context_tokens, buffer_blocks=args.buffer_blocks,
        num_slots=args.num_slots, send_credits=args.send_credits, hbm_bytes=args.hbm_bytes,
        snic_bytes_per_s=args.snic_bytes_per_s, cnic_bytes_per_s=args.cnic_bytes_per_s,
        cnic_centric=args.cnic_centric, transport=args.transport,
        cpu_threads=args.cpu_threads, corrupt_block_rate=args.corrupt_block_rate, fault_seed=args.fault_seed,
        scheduler=args.scheduler)
    secret = _read_secret(args.secret_file) if args.secret_file else secret_from_env()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return options, secret, args.ready_file


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None,
         exit_process: bool = False) -> int:
    """Run an engine until `shutdown`, SIGTERM or SIGINT, or until the launcher that started it is
    gone (`dualpath.runtime.engines.lifeline`). Prints `READY host port` when listening.

    `args`: flags already parsed by a parser that `add_arguments` built (`dualpath engine`). `exit_process`:
    after a clean stop, end the process at once (engine processes; never a caller that goes on)."""
    from dualpath.runtime.engines.lifeline import Lifeline

    try:
        options, secret, ready_file = parse_args(argv, args)
    except DualpathError as exc:
        print(f"dualpath engine: {exc}", file=sys.stderr)
        return exc.exit_code
    unavailable = transport_unavailable(options.transport) if options.transport != "tcp" else None
    if unavailable:
        print(f"dualpath engine: --transport {options.transport}: {unavailable}", file=sys.stderr)
        return 2
    # Stop requests count from here, before the (slow) model build: a launcher killed meanwhile
    # must not leave an engine behind.
    stop = threading.Event()
    engines: list[EngineBase] = []

    def request_stop(*_: object) -> None:
        stop.set()
        for started in engines:
            started.stopped.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    lifeline = Lifeline()
    if not lifeline.start(request_stop):
        print(f"dualpath engine: {options.name}: the launcher is gone; not starting", file=sys.stderr)
        lifeline.cleanup()
        return 1
    try:
        engine = create_engine(options, secret)
        engines.append(engine)
        if stop.is_set():
            engine.stopped.set()
        host, port = engine.start()
    except DualpathError as exc:
        print(f"dualpath engine: {exc}", file=sys.stderr)
        lifeline.cleanup()
        return exc.exit_code
    if ready_file:
        tmp = Path(ready_file + ".tmp")
        tmp.write_text(f"{host} {port}\n")
        os.replace(tmp, ready_file)
    print(f"READY {host} {port}", flush=True)
    engine.stopped.wait()
    engine.close()
    lifeline.cleanup()
    LOG.info("%s stopped", options.name)
    if exit_process:
        # Everything the engine owns is closed and flushed: end here rather than in interpreter
        # finalization, where torch's native threads can abort the process (SIGABRT, "terminate called
        # without an active exception") after a clean stop.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
