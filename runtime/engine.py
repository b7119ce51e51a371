"""Engine processes: `python -m dualpath.runtime.engine --role prefill|decode ...` (or `dualpath engine`).

An engine is addressed by the host:port of its control server (loopback unless `--host` names one
of this machine's addresses: never a wildcard, as peers dial what an engine announces); its data
transport listens on a second port of the same address, announced in `hello`. Both accept only
peers that prove the cluster secret (`DUALPATH_SECRET` or `--secret-file`). The storage directory is
shared by all engines (a 3FS mount or local NVMe). With `--scheduler HOST:PORT` (or the `Lead`
control message) the engine's `GroupLeader` fetches its group's work from that scheduler. This module
holds the options (one field per CLI flag), the model presets and which transports run here;
`engine_cli` the command line and the process; `worker.EngineBase` is what both roles share.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualpath.errors import InputError, SpecError, require
from dualpath.protocol import ALL_STEP_NAMES
from dualpath.runtime.transports.auth import DEFAULT_BIND_HOST

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
        if self.host in ("0.0.0.0", "::"):
            # Peers dial the addresses an engine announces (`READY`, `hello`'s data address): a wildcard is none.
            raise SpecError("engine", "host", self.host, "one address of this machine that its peers can reach")
        if self.transport not in TRANSPORTS:
            raise SpecError("engine", "transport", self.transport, "one of " + ", ".join(TRANSPORTS))
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


TRANSPORTS = ("tcp", "verbs", "nixl")  # what `--transport` offers; `transport_unavailable` says which run here
# A backend module's `unavailable_reason()` says why it cannot run here; those without one are probed here.
_PROBES = {"verbs": ("dualpath.runtime.transports.verbs_qp", "device_unavailable_reason")}


def transport_unavailable(kind: str) -> str | None:
    """Why the `kind` transport cannot run on this machine (None when it can): its backend missing
    from this build, its Python package not installed, or no device to run it on. Checked before
    engines start, so that a missing extra is one line rather than an engine's failed start."""
    import importlib

    from dualpath.runtime.transports.transport import BACKENDS

    if kind not in BACKENDS:
        return f"this build has no {kind!r} transport backend (it has {', '.join(sorted(BACKENDS))})"
    module_name = BACKENDS[kind].split(":")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # MissingExtraError included: its message names the extra
        return str(exc)
    probe = getattr(module, "unavailable_reason", None)
    if probe is None and kind in _PROBES:
        probe = getattr(importlib.import_module(_PROBES[kind][0]), _PROBES[kind][1])
    return probe() if probe is not None else None


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


def create_engine(options: EngineOptions, secret: bytes | str) -> EngineBase:
    """A `PrefillEngine` or `DecodeEngine` (not started)."""
    if options.role == "prefill":
        from dualpath.runtime.engines.prefill_engine import PrefillEngine

        return PrefillEngine(options, secret)
    from dualpath.runtime.engines.decode_engine import DecodeEngine

    return DecodeEngine(options, secret)


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None,
         exit_process: bool = False) -> int:
    """The engine process (`dualpath.runtime.engine_cli.main`), kept here for `python -m dualpath.runtime.engine`."""
    from dualpath.runtime.engine_cli import main as engine_main

    return engine_main(argv, args, exit_process)


if __name__ == "__main__":
    sys.exit(main(exit_process=True))
