"""NIXL agent: loading nixl_cu12, and one opened agent (`NixlAgent`: UCX backend, memory registration,
peer metadata, write requests with a notification, progress).

nixl_cu12 (the "nixl" extra, PyPI `nixl-cu12`) is imported lazily, never by `import dualpath`. It
ships its own typing, but its bindings module has none, so handles are `Any` here.

Three choices differ from NIXL's defaults:
- no NIXL progress thread: it spins a core even when idle (measured: 0.55-0.67 of a core for two
  agents). The transport's poller drives progress instead (every status check and notification
  fetch progresses UCX), backing off when idle.
- STRICT thread sync: the poller and posting threads share one agent (NIXL's default without its
  listener thread is no locking at all).
- UCX error handling "none" instead of "peer": "peer" rules out the shared-memory transports, so on
  one host notifications and flushes went over TCP loopback and every write waited for the target
  to progress (a 4 KiB write took ~50 us in one process, ~300 us across two; with "none", 11 us,
  written by cross-memory attach and flushed without the target). A lost peer is still noticed: its
  authenticated side channel closes, as with verbs.
UCX picks its transports itself (cma, shared memory and TCP on this box, RDMA where a NIC exists); no
UCX_* variable is needed on a machine without RDMA.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import secrets
from typing import Any

from dualpath.errors import require
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.transport_types import TransportError

LOG = logging.getLogger("dualpath.runtime.nixl")
EXTRA = "nixl"
BACKEND = "UCX"
DRAM, VRAM = "DRAM", "VRAM"


def nixl_module(name: str = "nixl_cu12") -> Any:
    """Import nixl_cu12 (or one of its modules), or raise `MissingExtraError` naming the "nixl" extra."""
    module = require(name, EXTRA)
    if not os.environ.get("NIXL_LOG_LEVEL"):
        # nixl logs every agent and backend creation at INFO on stdout; keep its warnings only.
        logging.getLogger("nixl").setLevel(logging.WARNING)
    return module


def nixl_unavailable_reason() -> str | None:
    """Why the nixl backend cannot run here (None when nixl_cu12 imports and has the UCX plugin)."""
    if importlib.util.find_spec("nixl_cu12") is None:
        return "nixl_cu12 is not installed (pip install 'dualpath[nixl]')"
    try:
        agent = NixlAgent("probe")
    except (ImportError, RuntimeError, TransportError) as exc:  # a library that cannot load, no UCX plugin
        return f"nixl_cu12 cannot start an agent: {exc}"
    agent.close()
    return None


def segment(memory: Memory) -> tuple[str, int]:
    """The NIXL memory type and device id of `memory` (VRAM for a CUDA tensor, DRAM otherwise)."""
    if memory.on_device:
        index = memory.tensor.device.index
        return VRAM, 0 if index is None else int(index)
    return DRAM, 0


class NixlAgent:
    """One NIXL agent with the UCX backend. Its agent name is `owner` plus a random suffix: two
    transports of one name (an engine that restarts) must not clash in a peer's metadata table."""

    def __init__(self, owner: str) -> None:
        nixl = nixl_module()
        self.owner = owner
        self.agent_name = f"{owner}-{os.getpid()}-{secrets.token_hex(4)}"
        config = nixl.nixl_agent_config(enable_prog_thread=False, backends=[],
                                        sync_mode=nixl.nixl_thread_sync_t.NIXL_THREAD_SYNC_STRICT)
        self.agent = nixl.nixl_agent(self.agent_name, config)
        if BACKEND not in self.agent.get_plugin_list():
            raise TransportError(f"{owner}: NIXL has no {BACKEND} plugin (plugins: {self.agent.get_plugin_list()})")
        try:
            self.agent.create_backend(BACKEND, {"ucx_error_handling_mode": "none"})
        except Exception as exc:  # UCX found no usable transport
            raise self.error(f"{BACKEND} backend creation", exc) from exc
        self._bind = nixl_module("nixl_cu12._bindings")
        self._remote_refs: dict[str, int] = {}  # remote agent -> connections using its metadata

    def error(self, what: str, exc: Exception) -> TransportError:
        return TransportError(f"{self.owner}: NIXL {what} failed: {type(exc).__name__}: {exc}")

    # -- memory ------------------------------------------------------------------------------------
    def register(self, name: str, memory: Memory) -> Any:
        """Register `memory` with UCX; returns the registration list (for deregister and metadata)."""
        kind, device = segment(memory)
        try:
            return self.agent.register_memory([(memory.ptr, memory.nbytes, device, name)], kind)
        except Exception as exc:  # nixl raises its own exception types from the bindings
            hint = " (GPU memory needs UCX built with CUDA)" if kind == VRAM else ""
            raise self.error(f"registration of region {name!r}{hint}", exc) from exc

    def deregister(self, registration: Any) -> None:
        try:
            self.agent.deregister_memory(registration)
        except Exception as exc:  # logged: a region that cannot be deregistered must not stop a close
            LOG.warning("%s", self.error("deregistration", exc))

    # -- metadata ------------------------------------------------------------------------------------
    def connection_info(self) -> bytes:
        """What a peer loads to reach this agent (no region in it)."""
        empty = self._bind.nixlRegDList(self._bind.DRAM_SEG)
        return bytes(self.agent.get_partial_agent_metadata(empty, True))

    def region_info(self, registration: Any) -> bytes:
        """What a peer loads to write into one registered region."""
        return bytes(self.agent.get_partial_agent_metadata(registration, False))

    def load(self, metadata: bytes, expected: str, first: bool = False) -> None:
        """Load a peer's metadata (connection info when `first`, which counts one more connection)."""
        try:
            loaded = self.agent.add_remote_agent(metadata)
        except Exception as exc:
            raise self.error(f"loading metadata of {expected}", exc) from exc
        loaded = loaded.decode() if isinstance(loaded, bytes) else str(loaded)
        if loaded != expected:
            raise TransportError(f"{self.owner}: metadata names agent {loaded!r}, the peer said {expected!r}")
        if first:
            self._remote_refs[expected] = self._remote_refs.get(expected, 0) + 1

    def unload(self, remote: str) -> None:
        """One connection to `remote` is gone; forget its metadata when it was the last."""
        left = self._remote_refs.get(remote, 0) - 1
        if left > 0:
            self._remote_refs[remote] = left
            return
        self._remote_refs.pop(remote, None)
        try:
            self.agent.remove_remote_agent(remote)
        except Exception as exc:  # already gone: nothing to forget
            LOG.debug("%s", self.error(f"forgetting {remote}", exc))

    # -- data path -----------------------------------------------------------------------------------
    def write(self, remote: str, local: list[tuple[int, int, int]], local_kind: str,
              dest: list[tuple[int, int, int]], dest_kind: str, notice: bytes | None) -> Any:
        """Create and post one WRITE request of descriptors (addr, nbytes, device); returns its handle.
        `notice` reaches the peer after every byte landed (the UCX backend flushes before sending it)."""
        try:
            handle = self.agent.initialize_xfer("WRITE", self.agent.get_xfer_descs(local, local_kind),
                                                self.agent.get_xfer_descs(dest, dest_kind), remote,
                                                notice if notice is not None else b"")
        except Exception as exc:
            raise self.error(f"write request to {remote}", exc) from exc
        if self.agent.transfer(handle) == "ERR":
            self.release(handle)
            raise TransportError(f"{self.owner}: NIXL refused to post a write to {remote}")
        return handle

    def notify(self, remote: str, notice: bytes) -> None:
        """A notice with no bytes before it (a post of empty writes)."""
        try:
            self.agent.send_notif(remote, notice)
        except Exception as exc:
            raise self.error(f"notification to {remote}", exc) from exc

    def state(self, handle: Any) -> str:
        """"DONE", "PROC" or "ERR" (progresses UCX)."""
        try:
            return str(self.agent.check_xfer_state(handle))
        except Exception as exc:  # a request whose peer vanished
            LOG.debug("%s", self.error("status check", exc))
            return "ERR"

    def release(self, handle: Any) -> bool:
        """Free a request; False when NIXL could not (still in flight and not cancellable)."""
        try:
            handle.release()
        except Exception as exc:
            LOG.debug("%s", self.error("release", exc))
            return False
        return True

    def notifications(self) -> dict[str, list[bytes]]:
        """Notifications received since the last call, by sending agent (progresses UCX)."""
        try:
            got = self.agent.get_new_notifs()
        except Exception as exc:
            LOG.warning("%s", self.error("notification fetch", exc))
            return {}
        return {(k.decode() if isinstance(k, bytes) else str(k)): list(v) for k, v in got.items()}

    def close(self) -> None:
        for remote in list(self._remote_refs):
            self._remote_refs[remote] = 1
            self.unload(remote)
