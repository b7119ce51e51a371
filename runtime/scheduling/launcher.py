"""Local launcher: start a small cluster of engine processes on this machine.

Each engine is `python -m dualpath.runtime.engine ...`, bound to loopback on a port it picks and
announces (`READY host port`); the cluster secret reaches it through `DUALPATH_SECRET`, never argv.
Engines run in their own process group (a terminal's Ctrl-C reaches the launcher, which stops them in
order) and die with the launcher however it ends (`dualpath.runtime.engines.lifeline`).
Logs go to `<log_dir>/<name>.log`. Engines on other hosts are started by any launcher (ssh, Slurm,
Kubernetes) with `dualpath engine --host ADDRESS` and attached to by host:port (`attached_runtime`,
`dualpath run --engines`); only this local variant lives here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from dualpath.errors import DualpathError, SpecError
from dualpath.runtime.engines.lifeline import launcher_env
from dualpath.runtime.scheduling.client import ClusterClient
from dualpath.runtime.transports.auth import SECRET_ENV, check_secret, generate_secret, secret_from_env

START_TIMEOUT_S = 60.0


@dataclass
class EngineProcess:
    name: str
    role: str
    process: subprocess.Popen
    address: tuple[str, int]
    log_path: Path


@dataclass
class LocalCluster:
    """A running xPyD cluster of local engine processes. Use as a context manager."""

    secret: bytes
    store_dir: Path
    log_dir: Path
    engines: list[EngineProcess] = field(default_factory=list)

    @property
    def prefill(self) -> list[tuple[str, int]]:
        return [e.address for e in self.engines if e.role == "prefill"]

    @property
    def decode(self) -> list[tuple[str, int]]:
        return [e.address for e in self.engines if e.role == "decode"]

    def client(self, name: str = "client") -> ClusterClient:
        return ClusterClient(self.secret, name)

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask every engine to stop, then terminate (and at last kill) the ones still running."""
        with self.client("launcher") as client:
            for engine in self.engines:
                if engine.process.poll() is None:
                    with contextlib.suppress(DualpathError):
                        client.shutdown(engine.address)
        deadline = time.monotonic() + timeout_s
        for engine in self.engines:
            try:
                engine.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                engine.process.terminate()
                try:
                    engine.process.wait(5)
                except subprocess.TimeoutExpired:
                    engine.process.kill()
                    engine.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def spawn_engine(role: str, name: str, store_dir: Path, log_dir: Path, secret: bytes,
                 engine_args: list[str] | None = None, run_dir: Path | None = None) -> tuple[subprocess.Popen, Path]:
    """Start one engine process (not yet waited for), tied to this process; `run_dir`: a directory
    this process owns (`lifeline.mark_run_dir`) that the engines remove if this process dies first."""
    log_path = log_dir / f"{name}.log"
    env = {**os.environ, SECRET_ENV: secret.hex(), **launcher_env(run_dir)}
    cmd = [sys.executable, "-m", "dualpath.runtime.engine", "--role", role, "--name", name,
           "--store", str(store_dir), *(engine_args or [])]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                                   start_new_session=True)
    return process, log_path


def wait_ready(role: str, name: str, process: subprocess.Popen, log_path: Path) -> EngineProcess:
    """Wait for an engine's `READY host port` line; a failed start raises with its log's tail."""
    deadline = time.monotonic() + START_TIMEOUT_S
    stdout = process.stdout  # a pipe: `spawn_engine` asks for one
    while stdout is not None and time.monotonic() < deadline:
        line = stdout.readline()
        if line.startswith("READY "):
            _, host, port = line.split()
            return EngineProcess(name, role, process, (host, int(port)), log_path)
        if not line and process.poll() is not None:
            break
    if process.poll() is None:
        process.kill()
        process.wait()
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise DualpathError(f"engine {name} did not start (exit {process.returncode}); log {log_path}:\n{tail}")


def launch_local(num_prefill: int = 1, num_decode: int = 1, store_dir: str | os.PathLike | None = None,
                 log_dir: str | os.PathLike | None = None, secret: bytes | str | None = None,
                 engine_args: list[str] | None = None, prefill_args: list[str] | None = None,
                 decode_args: list[str] | None = None) -> LocalCluster:
    """Start `num_prefill` PEs and `num_decode` DEs (each its own node) sharing one block store."""
    for name, value in (("num_prefill", num_prefill), ("num_decode", num_decode)):
        if not isinstance(value, int) or value < 1:
            raise SpecError("launch_local", name, value, "a positive integer")
    secret = check_secret(secret) if secret is not None else generate_secret()
    store = Path(store_dir) if store_dir else Path(tempfile.mkdtemp(prefix="dualpath-store-"))
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="dualpath-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(secret, store, logs)
    spawned = []
    try:
        for role, count, extra in (("decode", num_decode, decode_args), ("prefill", num_prefill, prefill_args)):
            for i in range(count):
                name = f"{role[0]}e{i}"
                process, log_path = spawn_engine(role, name, store, logs, secret,
                                                 [*(engine_args or []), *(extra or [])])
                spawned.append((role, name, process, log_path))
        for role, name, process, log_path in spawned:  # all start in parallel; wait for each in turn
            cluster.engines.append(wait_ready(role, name, process, log_path))
    except BaseException:
        cluster.close()
        for _, _, process, _ in spawned:
            if process.poll() is None:
                process.kill()
                process.wait()
        raise
    return cluster


def main(argv: list[str] | None = None) -> int:
    """`python -m dualpath.runtime.scheduling.launcher --prefill 1 --decode 2 -- <engine flags>`: start and wait."""
    p = argparse.ArgumentParser(prog="dualpath launch", description="Start a local cluster of engines.")
    p.add_argument("--prefill", type=int, default=1)
    p.add_argument("--decode", type=int, default=1)
    p.add_argument("--store", default="")
    p.add_argument("--log-dir", default="")
    p.add_argument("engine_args", nargs=argparse.REMAINDER, help="flags passed to every engine (after --)")
    args = p.parse_args(argv)
    extra = args.engine_args[1:] if args.engine_args[:1] == ["--"] else args.engine_args
    try:
        secret = secret_from_env() if os.environ.get(SECRET_ENV) else None
        cluster = launch_local(args.prefill, args.decode, args.store or None, args.log_dir or None, secret, extra)
    except DualpathError as exc:
        print(f"dualpath launch: {exc}", file=sys.stderr)
        return exc.exit_code
    for engine in cluster.engines:
        print(f"{engine.role} {engine.name} {engine.address[0]}:{engine.address[1]} log {engine.log_path}")
    if secret is None:  # a generated secret goes to an owner-only file, never to the terminal
        secret_path = cluster.log_dir / "secret"
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cluster.secret.hex() + "\n")
        print(f"store {cluster.store_dir}; cluster secret in {secret_path} (mode 600)", flush=True)
    else:
        print(f"store {cluster.store_dir}; cluster secret from ${SECRET_ENV}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # never leave engines orphaned
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and all(e.process.poll() is None for e in cluster.engines):
        stop.wait(0.5)
    cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
