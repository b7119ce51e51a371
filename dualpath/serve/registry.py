"""Engines registered with `dualpath serve`, under their own ids and URLs, mapped onto the model's slots.

The cluster model (`--cluster 2P4D`) has PE0.. and DE0.. on nodes P0.. and D0..; the scheduler decides
in those names. A real engine registers with its own id, its URL, its role and, optionally, its host
(`node`): engines naming the same host share a model node (and so its storage NIC and read queue), a
new host takes the next free model node of its role. An engine the model has no slot for is refused
with the count the model has, so the model is fixed rather than the decisions silently wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.cluster import ClusterSpec, Engine, Role
from dualpath.errors import DualpathError

# The service's typed errors (here because most are the registry's): each is one line and carries the
# HTTP status the service answers; as `DualpathError`s a library caller sees the same messages.


class ServeError(DualpathError):
    """A request the service refuses; `http_status` is what the endpoint answers."""

    http_status = 400


class NotFoundError(ServeError):
    """An engine or request id the service does not know."""

    http_status = 404

    def __init__(self, kind: str, name: str):
        self.kind = kind
        self.name = name
        super().__init__(f"unknown {kind} {name!r}")


class DoesNotFitError(ServeError):
    """An engine the cluster model has no slot for: the model must describe the real cluster."""

    http_status = 409


class ConflictError(ServeError):
    """A request that contradicts the service's state (a duplicate id, no engine of a role yet)."""

    http_status = 409


@dataclass(frozen=True)
class RegisteredEngine:
    id: str  # the engine's own id, as the client names it
    url: str
    role: Role
    host: str  # the client's node label (the model node's name when it gave none)
    slot: Engine  # the model engine the scheduler decides in


class EngineRegistry:
    """External engine ids <-> model engines; hosts <-> model nodes."""

    def __init__(self, cluster: ClusterSpec):
        self.cluster = cluster
        self.by_id: dict[str, RegisteredEngine] = {}
        self.by_slot: dict[str, RegisteredEngine] = {}
        self.node_of_host: dict[str, str] = {}  # client host label -> model node
        self.host_of_node: dict[str, str] = {}
        self._slots = {role: cluster.engines(role) for role in Role}

    def register(self, engine_id: str, url: str, role: Role, host: str | None = None) -> RegisteredEngine:
        """Map an engine to a free slot; registering an id again with the same role updates its URL."""
        old = self.by_id.get(engine_id)
        if old is not None:
            if old.role is not role or (host is not None and host != old.host):
                raise ConflictError(f"engine {engine_id!r} is registered as {old.role.value} on {old.host!r}; "
                                    "delete it before registering it again differently")
            new = RegisteredEngine(engine_id, url, role, old.host, old.slot)
            self.by_id[engine_id] = self.by_slot[old.slot.name] = new
            return new
        slot = self._free_slot(engine_id, role, host)
        label = host if host is not None else slot.node
        self.node_of_host[label] = slot.node
        self.host_of_node[slot.node] = label
        new = RegisteredEngine(engine_id, url, role, label, slot)
        self.by_id[engine_id] = self.by_slot[slot.name] = new
        return new

    def unregister(self, engine_id: str) -> RegisteredEngine:
        engine = self.get(engine_id)
        del self.by_id[engine_id], self.by_slot[engine.slot.name]
        if not any(e.slot.node == engine.slot.node for e in self.by_id.values()):
            # The host's model node is free again: another host may take it.
            self.node_of_host.pop(engine.host, None)
            self.host_of_node.pop(engine.slot.node, None)
        return engine

    def get(self, engine_id: str) -> RegisteredEngine:
        engine = self.by_id.get(engine_id)
        if engine is None:
            raise NotFoundError("engine", engine_id)
        return engine

    def node(self, host: str) -> str:
        """The model node of a client host label (or of a model node name)."""
        if host in self.node_of_host:
            return self.node_of_host[host]
        raise NotFoundError("node", host)

    def _free_slot(self, engine_id: str, role: Role, host: str | None) -> Engine:
        slots = self._slots[role]
        what = "PE" if role is Role.PREFILL else "DE"
        if host is not None and host in self.node_of_host:
            node = self.node_of_host[host]
            free = [s for s in slots if s.node == node and s.name not in self.by_slot]
            if not free:
                taken = sum(s.node == node for s in slots)
                if not taken:
                    raise DoesNotFitError(f"engine {engine_id!r}: host {host!r} is a "
                                          f"{'decode' if role is Role.PREFILL else 'prefill'} node in the model")
                raise DoesNotFitError(f"engine {engine_id!r} does not fit: host {host!r} (model node {node}) has "
                                      f"{taken} GPUs in cluster {self.cluster.shorthand}, all registered")
            return free[0]
        used_nodes = set(self.host_of_node)
        free = [s for s in slots if s.name not in self.by_slot
                and (s.node not in used_nodes if host is not None else True)]
        if host is None:
            # No host given: fill nodes whose host is the model node itself or that no host took.
            free = [s for s in free if self.host_of_node.get(s.node, s.node) == s.node]
        if not free:
            raise DoesNotFitError(f"engine {engine_id!r} does not fit: cluster {self.cluster.shorthand} has "
                                  f"{len(slots)} {what}s on {len(self.cluster.node_names(role))} nodes"
                                  f"{' and no free node for host ' + repr(host) if host is not None else ''}, "
                                  f"{sum(e.role is role for e in self.by_id.values())} registered; "
                                  "start the service with a --cluster that describes the real one")
        return free[0]
