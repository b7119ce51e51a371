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
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Self

from dualpath.cluster import ClusterSpec, Engine, Role
from dualpath.errors import DualpathError, SpecError
from dualpath.llm import LLMSpec
from dualpath.runtime.engines.faults import FaultPlan
from dualpath.runtime.engines.lifeline import mark_run_dir, sweep_stale_runs
from dualpath.runtime.scheduling.client import ClusterClient
from dualpath.runtime.scheduling.runtime_base import RuntimeBase, decoder_fields
from dualpath.runtime.scheduling.scheduler import EngineHandle

if TYPE_CHECKING:
    from dualpath.runtime.engine import EngineOptions
    from dualpath.runtime.engines.worker import EngineBase

__all__ = ["HBM_RESERVE", "LocalRuntime", "decoder_fields"]

HBM_RESERVE = 0.1  # as the simulator's default calibration keeps back
# HBM layer slots for this many requests per PE forward (one slot per layer each): the forward's cap
# in real runs, set above what the policies' 300 ms quota puts in one batch of these small models.
BATCH_REQUESTS = 8


class LocalRuntime(RuntimeBase):
    """Engines of `cluster` on this machine; a context manager. See the module docstring."""

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, *, block_tokens: int = 16, max_context_tokens: int = 4096,
                 max_prompt_blocks: int = 0, work_dir: str | Path | None = None, seed: int = 0, device: str = "cpu",
                 faults: FaultPlan | None = None, in_process: bool = False, log_level: str = "WARNING",
                 engine_overrides: dict | None = None, transport: str = "tcp") -> None:
        from dualpath.runtime.transports.auth import generate_secret

        engines = cluster.engines(Role.PREFILL) + cluster.engines(Role.DECODE)
        if len(engines) > 16:
            raise SpecError(f"cluster {cluster.name or cluster.shorthand}", "engines", len(engines),
                            "at most 16 engines for a run on one machine")
        decoder_fields(llm)  # a model the runtime cannot run fails before any directory is made
        self.own_dir = work_dir is None
        # Storage speed is the emulated SNIC's, not the disk's: by default the store lives in memory.
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        if self.own_dir:  # what engines killed outright (with their launcher) could not remove
            sweep_stale_runs(Path(shm or tempfile.gettempdir()))
        self.work = Path(work_dir or tempfile.mkdtemp(prefix="dualpath-run-", dir=shm))
        if self.own_dir:
            mark_run_dir(self.work)
        store_dir, self.log_dir = self.work / "store", self.work / "logs"
        store_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(cluster, llm, store_dir, generate_secret(), block_tokens=block_tokens,
                         max_context_tokens=max_context_tokens, seed=seed)
        (self.work / "model.json").write_text(json.dumps({k: v for k, v in self.fields.items() if k != "dtype"}))
        self.in_process, self.device, self.log_level = in_process, device, log_level
        self.transport = transport  # the engines' KV transport (`dualpath.runtime.engine.TRANSPORTS`)
        self.faults = faults or FaultPlan(seed=seed)
        self.engine_overrides = dict(engine_overrides or {})  # EngineOptions fields (tiny buffers for stress)
        node = cluster.node
        node_buffer_blocks = node.dram_buffer_bytes // node.num_gpus // self.layout.full_block_bytes
        self.buffer_blocks = max(1, min(node_buffer_blocks, max_prompt_blocks or node_buffer_blocks))
        self.specs = {e.name: e for e in engines}
        self._running: dict[str, EngineBase | subprocess.Popen] = {}  # an OS process, or in-process: the engine

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
            buffer_blocks=self.buffer_blocks, num_slots=BATCH_REQUESTS * llm.num_layers,
            hbm_bytes=max(1, int(node.hbm_bytes_per_gpu * (1 - HBM_RESERVE) - weights)),
            snic_bytes_per_s=node.snic_bytes_per_s / node.num_gpus,
            cnic_bytes_per_s=node.cnic_bytes_per_s * node.cnic_kv_share, cnic_centric=True,
            corrupt_block_rate=self.faults.corrupt_block_rate, fault_seed=self.faults.seed, transport=self.transport)
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
