"""Peer registry: a transport's connected peers by name, shared by every backend.

Two connections may announce the same name (an engine that reconnects, or two endpoints of one
engine), so the second is registered as `name#2`, the third as `name#3`, and so on: a peer's
registered name is what `Transport.connect` returns and what `RemoteRegion.peer` carries. A lost
connection is removed once, and only if it is still the one registered under its name.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from dualpath.runtime.transports.transport_types import TransportError


class PeerConnection(Protocol):
    """What the registry needs of a backend's connection: whether it can still carry writes."""

    @property
    def alive(self) -> bool: ...


C = TypeVar("C", bound=PeerConnection)


class PeerRegistry(Generic[C]):
    """Connections of transport `owner` by registered peer name; thread-safe."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._by_name: dict[str, C] = {}

    def add(self, name: str, make: Callable[[str], C]) -> C:
        """Register `make(unique)` under `name`, or `name#N` when `name` is taken; returns it.

        `make` runs under the registry's lock (so two peers of one name cannot both get it): keep it cheap.
        """
        with self._lock:
            unique = name
            for n in itertools.count(2):
                if unique not in self._by_name:
                    break
                unique = f"{name}#{n}"
            conn = make(unique)
            self._by_name[unique] = conn
            return conn

    def get(self, name: str) -> C:
        """The live connection to `name`; `TransportError` naming the connected peers otherwise."""
        with self._lock:
            conn = self._by_name.get(name)
        if conn is None or not conn.alive:
            raise TransportError(f"{self.owner}: not connected to peer {name!r} (connected: {self.names()})")
        return conn

    def remove(self, name: str, conn: C) -> bool:
        """Forget `conn` if it is still registered as `name`; True when this call removed it."""
        with self._lock:
            if self._by_name.get(name) is not conn:
                return False
            del self._by_name[name]
            return True

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._by_name)

    def connections(self) -> list[C]:
        with self._lock:
            return list(self._by_name.values())
