"""`LocalRuntime`: the engines of a `ClusterSpec` on this machine, one per GPU of the cluster model.

Engines are named as the cluster model names them (PE0.. on nodes P0.., DE0.. on D0..), each running
a decoder built from the `LLMSpec` (dense Llama-style, random weights from the seed), with the node's
NICs emulated by rate limiters at the cluster's bandwidths (an SNIC per node, shared evenly by its
engines; a CNIC per GPU, CNIC-centric) and DRAM buffers sized to what the run can use, at most the
node's. Engines are OS processes (`in_process=True`: threads of this process, for quick tests).
`scheduling(policy)` starts a `Scheduler` and points the engines' group leaders at it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Self

from dualpath.cluster import ClusterSpec, Engine, Role
from dualpath.errors import DualpathError, SpecError
from dualpath.kvlayout import chain_block_ids
from dualpath.llm import AttentionKind, LLMSpec
from dualpath.policy import Policy
from dualpath.runtime.engines.faults import FaultPlan
from dualpath.runtime.engines.lifeline import mark_run_dir, sweep_stale_runs
from dualpath.runtime.engines.messages import Lead
from dualpath.runtime.scheduling.client import ClusterClient
from dualpath.runtime.scheduling.scheduler import EngineHandle, Scheduler

if TYPE_CHECKING:
    from dualpath.runtime.engine import EngineOptions
    from dualpath.runtime.engines.worker import EngineBase

HBM_RESERVE = 0.1  # as the simulator's default calibration keeps back


def decoder_fields(llm: LLMSpec) -> dict:
    """DecoderConfig fields of a dense Llama/Qwen2-style `llm`; the FFN width is recovered from its
    parameter count (the count `models` derives from the architecture)."""
    if llm.attention is AttentionKind.MLA:
        raise SpecError(f"model {llm.name}", "attention", llm.attention.value,
                        "a dense GQA/MHA model for the real runtime (the tiny model, for instance)")
    dtypes = {4: "float32", 2: "bfloat16"}
    if llm.kv_dtype_bytes not in dtypes:
        raise SpecError(f"model {llm.name}", "kv_dtype_bytes", llm.kv_dtype_bytes, "4 (float32) or 2 (bfloat16)")
    h, q, kv = llm.hidden_size, llm.num_heads * llm.head_dim, llm.num_kv_heads * llm.head_dim
    per_layer = (llm.active_params - h - llm.vocab_size * h) / llm.num_layers
    for bias in (False, True):
        attention = 2 * h * q + 2 * h * kv + ((q + 2 * kv) if bias else 0)
        ffn = (per_layer - attention - 2 * h) / (3 * h)
        if ffn >= 1 and abs(ffn - round(ffn)) < 1e-6:
            return {"vocab_size": llm.vocab_size, "hidden_size": h, "intermediate_size": round(ffn),
                    "num_layers": llm.num_layers, "num_heads": llm.num_heads, "num_kv_heads": llm.num_kv_heads,
                    "head_dim": llm.head_dim, "attention_bias": bias, "dtype": dtypes[llm.kv_dtype_bytes]}
    raise SpecError(f"model {llm.name}", "active_params", llm.active_params,
                    "the parameter count of a Llama/Qwen2-style decoder of this shape")


class LocalRuntime:
    """Engines of `cluster` on this machine; a context manager. See the module docstring."""

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, *, block_tokens: int = 16, max_context_tokens: int = 4096,
                 max_prompt_blocks: int = 0, work_dir: str | Path | None = None, seed: int = 0, device: str = "cpu",
                 faults: FaultPlan | None = None, in_process: bool = False, log_level: str = "WARNING",
                 engine_overrides: dict | None = None) -> None:
        from dualpath.runtime.engines.blockstore import BlockStore
        from dualpath.runtime.engines.decoder import DecoderConfig
        from dualpath.runtime.engines.kvcodec import KVCodec
        from dualpath.runtime.transports.auth import generate_secret

        engines = cluster.engines(Role.PREFILL) + cluster.engines(Role.DECODE)
        if len(engines) > 16:
            raise SpecError(f"cluster {cluster.name or cluster.shorthand}", "engines", len(engines),
                            "at most 16 engines for a run on one machine")
        self.cluster, self.llm, self.block_tokens, self.seed = cluster, llm, block_tokens, seed
        self.fields = decoder_fields(llm)
        self.config = DecoderConfig(**self.fields)
        self.layout = KVCodec.for_model(self.config, block_tokens).layout
        self.own_dir = work_dir is None
        # Storage speed is the emulated SNIC's, not the disk's: by default the store lives in memory.
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        if self.own_dir:  # what engines killed outright (with their launcher) could not remove
            sweep_stale_runs(Path(shm or tempfile.gettempdir()))
        self.work = Path(work_dir or tempfile.mkdtemp(prefix="dualpath-run-", dir=shm))
        if self.own_dir:
            mark_run_dir(self.work)
        self.store_dir, self.log_dir = self.work / "store", self.work / "logs"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.work / "model.json").write_text(json.dumps({k: v for k, v in self.fields.items() if k != "dtype"}))
        self.secret = generate_secret()
        self.in_process, self.device, self.log_level = in_process, device, log_level
        self.faults = faults or FaultPlan(seed=seed)
        self.max_context_tokens = max_context_tokens
        self.engine_overrides = dict(engine_overrides or {})  # EngineOptions fields (tiny buffers for stress)
        node = cluster.node
        node_buffer_blocks = node.dram_buffer_bytes // node.num_gpus // self.layout.full_block_bytes
        self.buffer_blocks = max(1, min(node_buffer_blocks, max_prompt_blocks or node_buffer_blocks))
        self.specs = {e.name: e for e in engines}
        self.handles: dict[str, EngineHandle] = {}
        self._running: dict[str, EngineBase | subprocess.Popen] = {}  # an OS process, or in-process: the engine
        self._client: ClusterClient | None = None  # once started
        self._store = BlockStore(self.store_dir, self.layout, scan=False)

    @property
    def client(self) -> ClusterClient:
        """The client the runtime drives its engines with (the scheduler's too)."""
        if self._client is None:
            raise DualpathError("LocalRuntime: not started (call start(), or use it as a context manager)")
        return self._client

    # -- engines ---------------------------------------------------------------------------------
    def options(self, engine: Engine) -> EngineOptions:
        from dataclasses import replace

        from dualpath.runtime.engine import EngineOptions

        node, llm = self.cluster.node, self.llm
        weights = llm.total_params * llm.kv_dtype_bytes / llm.gpus_per_engine
        options = EngineOptions(
            role=engine.role.value, name=engine.name, node=engine.node, store_dir=str(self.store_dir),
            model=str(self.work / "model.json"), seed=self.seed, dtype=self.fields["dtype"], device=self.device,
            block_tokens=self.block_tokens, max_context_tokens=self.max_context_tokens,
            buffer_blocks=self.buffer_blocks, num_slots=max(2, llm.num_layers),
            hbm_bytes=max(1, int(node.hbm_bytes_per_gpu * (1 - HBM_RESERVE) - weights)),
            snic_bytes_per_s=node.snic_bytes_per_s / node.num_gpus,
            cnic_bytes_per_s=node.cnic_bytes_per_s * node.cnic_kv_share, cnic_centric=True,
            corrupt_block_rate=self.faults.corrupt_block_rate, fault_seed=self.faults.seed)
        return replace(options, **self.engine_overrides)

    def start(self) -> Self:
        self._client = ClusterClient(self.secret, "scheduler")
        try:
            self._start(list(self.specs))
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, names: list[str]) -> None:
        if self.in_process:
            from dualpath.runtime.engine import create_engine

            for name in names:
                engine = create_engine(self.options(self.specs[name]), self.secret)
                self._running[name] = engine
                self._handle(name, engine.start())
            return
        from dualpath.runtime.scheduling.launcher import spawn_engine, wait_ready

        spawned = []
        for name in names:
            args = [*self.options(self.specs[name]).to_args()[6:], "--log-level", self.log_level]
            process, log_path = spawn_engine(self.specs[name].role.value, name, self.store_dir, self.log_dir,
                                             self.secret, args, self.work if self.own_dir else None)
            self._running[name] = process
            spawned.append((name, process, log_path))
        for name, process, log_path in spawned:
            self._handle(name, wait_ready(self.specs[name].role.value, name, process, log_path).address)

    def _handle(self, name: str, address: tuple[str, int]) -> None:
        spec = self.specs[name]
        self.handles[name] = EngineHandle(name, spec.role, spec.node, spec.group, (str(address[0]), int(address[1])))

    def kill(self, name: str) -> None:
        """Stop engine `name` abruptly (SIGKILL; in-process: its servers closed)."""
        running = self._running.get(name)
        if isinstance(running, subprocess.Popen):
            running.kill()
            running.wait()
        elif running is not None:
            running.close()

    def dead(self) -> list[str]:
        return [n for n, r in self._running.items()
                if (r.poll() is not None if isinstance(r, subprocess.Popen) else r.stopped.is_set())]

    def respawn_dead(self) -> list[str]:
        names = self.dead()
        if names:
            self._start(names)
        return names

    def lead(self, scheduler: tuple[str, int] | None) -> None:
        """Point every running engine's group leader at `scheduler` (None: stop fetching)."""
        dead = set(self.dead())
        for name, handle in self.handles.items():
            if name not in dead:  # one that does not answer gets no work: the scheduler sees no report from it
                with suppress(DualpathError):
                    self.client.channel(handle.address).call(Lead(scheduler), timeout_s=10)

    @contextmanager
    def scheduling(self, policy: Policy, **kwargs) -> Iterator[Scheduler]:
        """A started `Scheduler` of `policy` over these engines, their leaders fetching from it."""
        scheduler = Scheduler(list(self.handles.values()), policy, self.client, block_tokens=self.block_tokens,
                              hit_blocks=self.hit_blocks, secret=self.secret, **kwargs).start()
        try:
            self.lead(scheduler.address)
            yield scheduler
        finally:
            scheduler.close()
            self.lead(None)

    def clear_store(self) -> None:
        for child in self.store_dir.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)

    def hit_blocks(self, tokens: list[int]) -> int:
        """Leading Full Blocks of `tokens` in storage (at least one token is always computed)."""
        hit = 0
        for block_id in chain_block_ids(tokens, self.block_tokens)[: (len(tokens) - 1) // self.block_tokens]:
            if block_id not in self._store:
                break
            hit += 1
        return hit

    def reference_decoder(self):
        """The engines' model in this process (one torch thread, as each engine runs)."""
        from dualpath.errors import require
        from dualpath.runtime.engines.decoder import Decoder

        require("torch", "runtime").set_num_threads(1)
        return Decoder.from_seed(self.config, self.seed)

    def close(self) -> None:
        for name in list(self._running):
            if name not in self.dead():
                with suppress(DualpathError, KeyError, AttributeError):
                    self.client.shutdown(self.handles[name].address)
        for running in self._running.values():
            if not isinstance(running, subprocess.Popen):
                running.close()
                continue
            try:
                running.wait(10)
            except Exception:
                running.kill()
                running.wait()
        self._running.clear()
        if self._client is not None:
            self._client.close()
        if self.own_dir:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start() if self._client is None else self

    def __exit__(self, *exc) -> None:
        self.close()
