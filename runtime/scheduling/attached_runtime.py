"""`AttachedRuntime`: the engines of a `ClusterSpec` that some other launcher started (by hand, ssh,
Slurm, Kubernetes), on this machine or others, addressed by their control HOST:PORTs.

Each engine's `hello` must match the cluster file: its name one of the cluster's engines (PE0.., DE0..),
with that engine's role and node; its block size, seed and dtype the run's; its model the run's (a
preset, or a DecoderConfig JSON file this machine can read: engines and scheduler share a filesystem);
and the data address it announces reachable from elsewhere (not loopback when its control address
is not). Every engine of the cluster must be there, once. The block store the engines share must be
mounted here too: the scheduler counts each turn's hits in it, and empties it between runs (block
files only). The scheduler listens on the address from which this machine reaches the first engine,
unless told otherwise. Engines are never killed or restarted: a fault plan that kills one is
refused, and an engine that stops answering ends the run. `close` leaves the engines running unless
`shutdown_engines`.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from contextlib import suppress
from pathlib import Path
from typing import Self

from dualpath.cluster import ClusterSpec, Role
from dualpath.errors import DualpathError, SpecError
from dualpath.llm import LLMSpec
from dualpath.runtime.engines.messages import Hello
from dualpath.runtime.scheduling.client import ClusterClient
from dualpath.runtime.scheduling.runtime_base import RuntimeBase
from dualpath.runtime.scheduling.scheduler import EngineHandle

Address = tuple[str, int]
HELLO_TIMEOUT_S = 10.0


def parse_addresses(text: str) -> list[Address]:
    """`HOST:PORT,HOST:PORT,...` (an IPv6 host in brackets) as addresses; one line on a bad entry."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        host, _, port = part.rpartition(":")
        host = host.strip("[]")
        if not part or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65_535:
            raise SpecError("--engines", "address", part, "HOST:PORT of a running engine's control server")
        out.append((host, int(port)))
    if len(set(out)) != len(out):
        raise SpecError("--engines", "addresses", text, "each engine once")
    return out


def route_source(address: Address) -> str:
    """The local address this machine reaches `address` from (a UDP `connect` sends nothing)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(address)
        except OSError as exc:
            raise DualpathError(f"engine at {address[0]}:{address[1]}: no route from this machine ({exc})") from exc
        return str(probe.getsockname()[0])


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class AttachedRuntime(RuntimeBase):
    """Engines of `cluster` already running at `addresses`; a context manager. See the module docstring."""

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, addresses: list[Address], store_dir: str | Path,
                 secret: bytes, *, block_tokens: int = 16, max_context_tokens: int = 4096, seed: int = 0,
                 scheduler_host: str = "", shutdown_engines: bool = False) -> None:
        if not Path(store_dir).is_dir():
            raise SpecError("--store", "directory", str(store_dir),
                            "the engines' block store as mounted on this machine (an existing directory)")
        self.addresses = list(addresses)
        super().__init__(cluster, llm, Path(store_dir), secret, block_tokens=block_tokens,
                         max_context_tokens=max_context_tokens, seed=seed,
                         scheduler_host=scheduler_host or route_source(self.addresses[0]))
        self.specs = {e.name: e for role in Role for e in cluster.engines(role)}
        self.shutdown_engines = shutdown_engines
        self.hellos: dict[str, dict] = {}  # what each engine said of itself

    def start(self) -> Self:
        self._client = ClusterClient(self.secret, "scheduler")
        try:
            for address in self.addresses:
                self._attach(address)
            missing = [n for n in self.specs if n not in self.handles]
            if missing:
                c = self.cluster
                raise DualpathError(f"cluster {c.name or c.shorthand} has {c.num_pe} PE and {c.num_de} DE engines; "
                                    f"--engines lacks {', '.join(missing)}")
        except BaseException:
            self._client.close()
            raise
        return self

    def _attach(self, address: Address) -> None:
        where = f"engine at {address[0]}:{address[1]}"
        try:
            hello = self.client.channel(address).call(Hello(), timeout_s=HELLO_TIMEOUT_S)[0]
        except DualpathError as exc:
            raise DualpathError(f"{where} does not answer: {exc}") from None
        name = hello["name"]
        spec = self.specs.get(name)
        if spec is None:
            raise SpecError(where, "name", name, "one of the cluster's engines: " + ", ".join(self.specs))
        if name in self.handles:
            raise SpecError(where, "name", name, f"an engine not already at {self.handles[name].address}")
        if hello["role"] != spec.role.value:
            raise SpecError(f"{where} ({name})", "role", hello["role"], f"{spec.role.value}, as the cluster says")
        if hello["node"] != spec.node:
            raise SpecError(f"{where} ({name})", "node", hello["node"], f"{spec.node}, as the cluster says (--node)")
        if hello["block_tokens"] != self.block_tokens:
            raise SpecError(f"{where} ({name})", "block_tokens", hello["block_tokens"],
                            f"the run's --block-tokens, {self.block_tokens}")
        self._check_model(f"{where} ({name})", hello["model_id"])
        data_host = str(hello["data"][0])
        if _loopback(data_host) and not _loopback(address[0]):
            raise SpecError(f"{where} ({name})", "data address", f"{data_host}:{hello['data'][1]}",
                            "an address its peers can reach: start it with --host set to one of its interfaces")
        self.hellos[name] = hello
        self.handles[name] = EngineHandle(name, spec.role, spec.node, spec.group, address)

    def _check_model(self, where: str, model_id: str) -> None:
        """The engine runs the run's model: `EngineOptions.model_id` is `model:seed:dtype:bt:kv_dtype`."""
        from dualpath.runtime.engine import PRESETS

        if model_id.startswith("ckpt:"):
            raise SpecError(where, "model", model_id.rsplit(":", 3)[0],
                            f"the run's seeded model {self.llm.name} (--verify recomputes it from --seed)")
        parts = model_id.rsplit(":", 4)
        source, seed, dtype = parts[0], parts[1], parts[2]
        if seed != str(self.seed):
            raise SpecError(where, "seed", seed, f"the run's --seed, {self.seed}")
        if dtype != self.fields["dtype"] or parts[4] != dtype:
            raise SpecError(where, "dtype", f"{dtype} (KV {parts[4]})", f"{self.fields['dtype']}, the model's")
        expected = {k: v for k, v in self.fields.items() if k != "dtype"}
        if source in PRESETS:
            fields = PRESETS[source]
        else:
            try:
                fields = json.loads(Path(source).read_text())
            except (OSError, ValueError):
                raise SpecError(where, "model", source, "a DecoderConfig JSON file this machine can read too "
                                "(on the shared filesystem, at the same path everywhere)") from None
        if {**{"attention_bias": False}, **fields} != expected:
            raise SpecError(where, "model", source, f"the run's model {self.llm.name}: {json.dumps(expected)}")

    def dead(self) -> list[str]:
        """Engines whose control connection is gone (the ones this run found, not restarted ones)."""
        out = []
        for name, handle in self.handles.items():
            try:
                self.client.channel(handle.address).call(Hello(), timeout_s=HELLO_TIMEOUT_S)
            except DualpathError:
                out.append(name)
        return out

    def kill(self, name: str) -> None:
        raise DualpathError(f"{name}: engines this run attached to are never killed by it (no kill-engine faults)")

    def respawn_dead(self) -> list[str]:
        """Nothing is restarted: a dead engine ends the run, naming it."""
        dead = self.dead()
        if dead:
            raise DualpathError("attached engines stopped answering: " + ", ".join(
                f"{n} at {self.handles[n].address[0]}:{self.handles[n].address[1]}" for n in dead))
        return []

    def clear_store(self) -> None:
        """Remove the store's block files, and nothing else that may live in the directory."""
        for block_id in list(self._store.ids()):
            self._store.delete(block_id)

    def close(self) -> None:
        if self._client is None:
            return
        if self.shutdown_engines:
            for handle in self.handles.values():
                with suppress(DualpathError):
                    self._client.shutdown(handle.address)
        self._client.close()
