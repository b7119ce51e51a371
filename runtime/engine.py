"""Engine processes: `python -m dualpath.runtime.engine --role prefill|decode ...` (or `dualpath engine`).

An engine is addressed by the host:port of its control server (loopback unless `--host` says
otherwise); its data transport listens on a second port it announces in `hello`. Both accept only
peers that prove the cluster secret (`DUALPATH_SECRET` or `--secret-file`). The storage directory is
shared by all engines (a 3FS mount or local NVMe). With `--scheduler HOST:PORT` (or the `Lead`
control message) the engine's `GroupLeader` fetches its group's work from that scheduler. This module
holds the options (one field per CLI flag), the model presets and the process entry point;
`worker.EngineBase` is what both roles share.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dualpath import flags
from dualpath.errors import DualpathError, InputError, SpecError, require
from dualpath.protocol import ALL_STEP_NAMES
from dualpath.runtime.transports.auth import DEFAULT_BIND_HOST, SECRET_ENV, check_secret, secret_from_env

if TYPE_CHECKING:
    from dualpath.runtime.engines.worker import EngineBase

LOG = logging.getLogger("dualpath.runtime.engine")

ROLES = ("prefill", "decode")
# Every protocol step an engine takes, by name: the runtime uses exactly the protocol's steps.
ENGINE_STEP_NAMES = ALL_STEP_NAMES
PRESETS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
             "num_kv_heads": 2, "head_dim": 16},
    # KV-heavy: 8 KV heads x 32 dims over 4 layers = 8 KiB of KV per token for a hidden size of 128.
    "kvheavy": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_layers": 4,
                "num_heads": 8, "num_kv_heads": 8, "head_dim": 32},
}


@dataclass(frozen=True)
class EngineOptions:
    """Everything an engine process is started with (the CLI flags, one to one)."""

    role: str
    name: str
    store_dir: str
    node: str = ""  # node name for buffers and SNIC; defaults to the engine name
    host: str = DEFAULT_BIND_HOST
    port: int = 0
    data_port: int = 0
    model: str = "tiny"  # preset name, or a JSON file of DecoderConfig fields
    checkpoint: str = ""  # a local HF checkpoint directory (overrides model and seed)
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    block_tokens: int = 16
    kv_dtype: str = ""  # defaults to the model dtype
    max_context_tokens: int = 4096
    buffer_blocks: int = 1024  # DRAM buffer of the node, in Full Blocks
    num_slots: int = 2  # PE HBM layer slots
    send_credits: int = 4
    hbm_bytes: int = 1 << 30  # DE HBM for KV
    snic_bytes_per_s: float | None = None
    cnic_bytes_per_s: float | None = None
    cnic_centric: bool = False
    transport: str = "tcp"
    read_threads: int = 2
    trace_steps: int = 200_000  # most recent protocol steps kept for `trace`
    cpu_threads: int = 1  # torch threads on CPU: one engine is one GPU's worth of compute
    corrupt_block_rate: float = 0.0  # fault injection: share of block reads that find a corrupted file
    fault_seed: int = 0
    scheduler: str = ""  # HOST:PORT of the scheduler whose `fetch` this engine's group leader calls
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise SpecError("engine", "role", self.role, "one of " + ", ".join(ROLES))
        for name in ("block_tokens", "max_context_tokens", "buffer_blocks", "num_slots", "send_credits",
                     "hbm_bytes", "read_threads", "trace_steps", "cpu_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise SpecError("engine", name, value, "a positive integer")
        for name in ("snic_bytes_per_s", "cnic_bytes_per_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SpecError("engine", name, value, "a positive number or None (unlimited)")
        if not 0.0 <= self.corrupt_block_rate <= 1.0:
            raise SpecError("engine", "corrupt_block_rate", self.corrupt_block_rate, "a fraction in [0, 1]")
        if self.scheduler:
            self.scheduler_address  # noqa: B018 -- validates HOST:PORT

    @property
    def scheduler_address(self) -> tuple[str, int] | None:
        if not self.scheduler:
            return None
        host, _, port = self.scheduler.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()) or int(port) > 65_535:
            raise SpecError("engine", "scheduler", self.scheduler, "HOST:PORT of the scheduler")
        return host, int(port)

    def to_args(self) -> list[str]:
        """The `dualpath engine` command line of these options (role, name and store first; the
        secret never: it travels in the environment)."""
        args = ["--role", self.role, "--name", self.name, "--store", self.store_dir, "--node", self.node,
                "--host", self.host, "--port", str(self.port), "--data-port", str(self.data_port),
                "--model", self.model, "--seed", str(self.seed), "--dtype", self.dtype, "--device", self.device,
                "--block-tokens", str(self.block_tokens), "--max-context-tokens", str(self.max_context_tokens),
                "--buffer-blocks", str(self.buffer_blocks), "--num-slots", str(self.num_slots),
                "--send-credits", str(self.send_credits), "--hbm-bytes", str(self.hbm_bytes),
                "--transport", self.transport, "--cpu-threads", str(self.cpu_threads),
                "--corrupt-block-rate", repr(self.corrupt_block_rate), "--fault-seed", str(self.fault_seed)]
        args += ["--checkpoint", self.checkpoint] if self.checkpoint else []
        args += ["--kv-dtype", self.kv_dtype] if self.kv_dtype else []
        args += ["--scheduler", self.scheduler] if self.scheduler else []
        for flag, value in (("--snic-bytes-per-s", self.snic_bytes_per_s),
                            ("--cnic-bytes-per-s", self.cnic_bytes_per_s)):
            args += [flag, repr(value)] if value is not None else []
        return args + (["--cnic-centric"] if self.cnic_centric else [])

    @property
    def node_name(self) -> str:
        return self.node or self.name

    def model_id(self) -> str:
        """What PE and DE must agree on to exchange KV."""
        source = f"ckpt:{os.path.abspath(self.checkpoint)}" if self.checkpoint else f"{self.model}:{self.seed}"
        return f"{source}:{self.dtype}:{self.block_tokens}:{self.kv_dtype or self.dtype}"


def build_decoder(options: EngineOptions):
    from dualpath.runtime.engines.checkpoint import load_checkpoint
    from dualpath.runtime.engines.decoder import Decoder, DecoderConfig

    if options.device == "cpu":
        # Several engines share the cores of one machine; torch's own thread pool per engine would
        # oversubscribe them (tens of times slower under load).
        require("torch", "runtime").set_num_threads(options.cpu_threads)
    else:
        torch = require("torch", "runtime")
        if not options.device.startswith("cuda") or not torch.cuda.is_available():
            raise SpecError("engine", "device", options.device, "cpu, or cuda[:N] on a machine with a CUDA device")
    if options.checkpoint:
        return load_checkpoint(options.checkpoint, device=options.device, dtype=options.dtype)
    fields: Any  # a preset's, or whatever the JSON file holds (checked below)
    if options.model in PRESETS:
        fields = PRESETS[options.model]
    else:
        try:
            fields = json.loads(Path(options.model).read_text())
        except OSError as exc:
            raise SpecError("engine", "model", options.model,
                            "a preset (" + ", ".join(PRESETS) + ") or a JSON file of DecoderConfig fields") from exc
        except json.JSONDecodeError as exc:
            raise InputError(options.model, f"not JSON: {exc.msg}", line=exc.lineno) from exc
    known = set(DecoderConfig.__dataclass_fields__)
    if not isinstance(fields, dict) or set(fields) - known:
        unknown = sorted(set(fields) - known) if isinstance(fields, dict) else type(fields).__name__
        raise SpecError(options.model, "fields", unknown, "DecoderConfig fields: " + ", ".join(sorted(known)))
    return Decoder.from_seed(DecoderConfig(**{**fields, "dtype": options.dtype}), options.seed, options.device)


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
    p.add_argument("--transport", default="tcp", type=flags.name)
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


def create_engine(options: EngineOptions, secret: bytes | str) -> EngineBase:
    """A `PrefillEngine` or `DecodeEngine` (not started)."""
    if options.role == "prefill":
        from dualpath.runtime.engines.prefill_engine import PrefillEngine

        return PrefillEngine(options, secret)
    from dualpath.runtime.engines.decode_engine import DecodeEngine

    return DecodeEngine(options, secret)


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Run an engine until `shutdown`, SIGTERM or SIGINT, or until the launcher that started it is
    gone (`dualpath.runtime.engines.lifeline`). Prints `READY host port` when listening.

    `args`: flags already parsed by a parser that `add_arguments` built (`dualpath engine`)."""
    from dualpath.runtime.engines.lifeline import Lifeline

    try:
        options, secret, ready_file = parse_args(argv, args)
    except DualpathError as exc:
        print(f"dualpath engine: {exc}", file=sys.stderr)
        return exc.exit_code
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
