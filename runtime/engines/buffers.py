"""Buffers: the real memory behind the protocol's resources, allocated through the core `Ledger`.

A `BufferPool` is one process's view of its protocol resources (`dualpath.protocol.Resource`):
- byte resources backed by memory, cut into fixed pages (`PE_BUFFER`, `DE_BUFFER`: the node's DRAM
  buffer, page = one Full Block by default; `DE_HBM` when the pool owns the KV memory);
- slot resources backed by memory (`PE_HBM_SLOT`: an engine's HBM layer slots, one slot per unit);
- counters with no memory (`SEND_CREDIT`, or `DE_HBM` when the model owns the KV memory).

Every acquisition goes through `Ledger.try_acquire` with the protocol's resource kinds and the
amounts `transfer_steps` names, so the deadlock proof covers what runs. Byte amounts are charged in
whole pages (the ledger's capacity is `num_pages * page_bytes`), so the ledger granting a step is
exactly the allocator having the pages: no fragmentation can make a granted step wait.

Host memory is a `bytearray` on CPU and a pinned torch tensor when a CUDA device is named; device
memory (HBM) is a CUDA tensor (`dualpath.runtime.engines.memory`). Pages and leases:
`dualpath.runtime.engines.page_pool`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence

from dualpath.errors import SpecError
from dualpath.protocol import Ledger, ProtocolError, RequestSizes, Resource, Step
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.engines.page_pool import BYTES, COUNT, SLOTS, Lease, PoolEntry

__all__ = ["BYTES", "COUNT", "SLOTS", "BufferPool", "BufferTimeoutError", "Lease", "Memory", "PoolEntry"]


class BufferTimeoutError(ProtocolError):
    """A blocking acquire waited longer than its timeout (names request, step and resources)."""


class BufferPool:
    """Protocol resources of one process: memory, page allocators and the `Ledger` that admits steps.

    Thread-safe (one lock). `acquire` blocks until all of a step's wants are granted together.
    """

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger if ledger is not None else Ledger(capacity={})
        self._entries: dict[tuple[Resource, str], PoolEntry] = {}
        self._leases: dict[str, dict[tuple[Resource, str], deque[Lease]]] = {}
        self._cond = threading.Condition()

    # -- declaring resources -------------------------------------------------------------------
    def add_paged(self, resource: Resource, owner: str, page_bytes: int, num_pages: int,
                  device: str = "cpu", host: bool = True, memory: Memory | None = None) -> Memory:
        """Byte resource backed by `num_pages` pages of `page_bytes` (a DRAM buffer, or DE HBM)."""
        return self._add(resource, owner, BYTES, page_bytes, num_pages, device, host, memory)

    def add_slots(self, resource: Resource, owner: str, slot_bytes: int, num_slots: int,
                  device: str = "cpu", memory: Memory | None = None) -> Memory:
        """Slot resource (PE HBM layer slots): each unit is one slot of `slot_bytes`."""
        return self._add(resource, owner, SLOTS, slot_bytes, num_slots, device, False, memory)

    def add_counter(self, resource: Resource, owner: str, capacity: int) -> None:
        """Resource with no memory behind it (send credits; DE HBM owned by the model)."""
        if capacity <= 0:
            raise SpecError("BufferPool", f"{resource.value}/{owner} capacity", capacity,
                            "a positive integer")
        with self._cond:
            self._declare(PoolEntry(resource, owner, COUNT, 1, 0, None), capacity)

    def _add(self, resource, owner, unit, page_bytes, num_pages, device, host, memory) -> Memory:
        for name, value in (("page_bytes", page_bytes), ("num_pages", num_pages)):
            if not isinstance(value, int) or value <= 0:
                raise SpecError("BufferPool", f"{resource.value}/{owner} {name}", value, "a positive integer")
        if memory is None:
            memory = Memory.allocate(page_bytes * num_pages, device, host=host)
        elif memory.nbytes < page_bytes * num_pages:
            raise SpecError("BufferPool", f"{resource.value}/{owner} memory", memory.nbytes,
                            f">= {page_bytes * num_pages} bytes")
        entry = PoolEntry(resource, owner, unit, page_bytes, num_pages, memory,
                          list(range(num_pages - 1, -1, -1)))
        with self._cond:
            self._declare(entry, num_pages * page_bytes if unit == BYTES else num_pages)
        return memory

    def _declare(self, entry: PoolEntry, capacity: int) -> None:
        key = (entry.resource, entry.owner)
        if key in self._entries:
            raise SpecError("BufferPool", "resource", f"{key[0].value}/{key[1]}", "declared once")
        self._entries[key] = entry
        self.ledger.capacity[key] = capacity

    def entry(self, resource: Resource, owner: str) -> PoolEntry:
        try:
            return self._entries[(resource, owner)]
        except KeyError:
            raise ProtocolError(f"no {resource.value} declared for {owner}") from None

    # -- acquiring and releasing -----------------------------------------------------------------
    def try_acquire(self, request: str, wants: Sequence[tuple[Resource, str, int]]) -> list[Lease] | None:
        """All of `wants` (resource, owner, amount) or nothing; never blocks."""
        with self._cond:
            return self._try_acquire(request, wants)

    def acquire(self, request: str, wants: Sequence[tuple[Resource, str, int]],
                timeout_s: float | None = None) -> list[Lease]:
        """Block until all of `wants` are granted together; `BufferTimeoutError` after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                leases = self._try_acquire(request, wants)
                if leases is not None:
                    return leases
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    named = ", ".join(f"{r.value}/{o}={a}" for r, o, a in wants)
                    raise BufferTimeoutError(f"{request}: waited {timeout_s} s for {named}")
                self._cond.wait(remaining)

    def _try_acquire(self, request, wants) -> list[Lease] | None:
        charged = [(res, owner, self.entry(res, owner).charge(amount)) for res, owner, amount in wants]
        if not self.ledger.try_acquire(request, [(res, owner, units) for res, owner, (_, units) in charged]):
            return None
        leases = []
        for res, owner, (num_pages, units) in charged:
            entry = self._entries[(res, owner)]
            pages = entry.take(num_pages)
            lease = Lease(request, res, owner, pages, entry.page_bytes, units, entry.memory)
            self._leases.setdefault(request, {}).setdefault((res, owner), deque()).append(lease)
            leases.append(lease)
        return leases

    def release(self, request: str, resource: Resource, owner: str, amount: int) -> list[Lease]:
        """Release `amount` of `(resource, owner)` held by `request`; returns the leases freed.

        The oldest lease whose charge equals the amount goes first (the usual case: a step releases
        what an earlier step acquired); otherwise leases are freed oldest first, the last one split,
        as when layer-sized pieces are released together (the no-admission variant).
        """
        with self._cond:
            entry = self.entry(resource, owner)
            _, units = entry.charge(amount)
            held = self._leases.get(request, {}).get((resource, owner), deque())
            if sum(lease.charged for lease in held) < units:
                raise ProtocolError(f"{request} releases {amount} of {resource.value}/{owner} "
                                    f"but holds {sum(lease.charged for lease in held)}")
            exact = next((lease for lease in held if lease.charged == units), None)
            freed = [exact] if exact is not None else []
            if exact is not None:
                held.remove(exact)
            remaining = 0 if exact is not None else units
            while remaining:
                lease = held.popleft()
                if lease.charged <= remaining:
                    freed.append(lease)
                    remaining -= lease.charged
                    continue
                keep_units = lease.charged - remaining
                keep_pages = len(lease.pages) - (remaining // entry.page_bytes if entry.unit == BYTES else
                                                 remaining if entry.unit == SLOTS else 0)
                kept = Lease(request, resource, owner, lease.pages[:keep_pages], lease.page_bytes, keep_units,
                             lease.memory)
                freed.append(Lease(request, resource, owner, lease.pages[keep_pages:], lease.page_bytes,
                                   remaining, lease.memory))
                held.appendleft(kept)
                remaining = 0
            for lease in freed:
                self._free(lease)
            self.ledger.release(request, resource, owner, units)
            self._cond.notify_all()
            return freed

    def release_all(self, request: str) -> int:
        """Free everything `request` holds (failure, disconnect, cancel); returns leases freed."""
        with self._cond:
            by_key = self._leases.pop(request, {})
            count = 0
            for leases in by_key.values():
                for lease in leases:
                    self._free(lease)
                    count += 1
            self.ledger.release_all(request)
            self._cond.notify_all()
            return count

    def _free(self, lease: Lease) -> None:
        self._entries[(lease.resource, lease.owner)].put_back(lease.pages)

    def leases(self, request: str, resource: Resource | None = None) -> list[Lease]:
        """What `request` holds now (optionally of one resource), oldest first."""
        with self._cond:
            out: list[Lease] = []
            for (res, _), leases in self._leases.get(request, {}).items():
                if resource is None or res is resource:
                    out.extend(leases)
            return out

    def used(self, resource: Resource, owner: str) -> int:
        with self._cond:
            return self.ledger.used.get((resource, owner), 0)

    # -- protocol steps --------------------------------------------------------------------------
    def step(self, request: str, step: Step, sizes: RequestSizes, owners: Mapping[Resource, str],
             timeout_s: float | None = None) -> list[Lease]:
        """Take one `transfer_steps` step: acquire its wants (blocking), then its releases.

        `owners` maps each resource kind to the node or engine that owns it for this request.
        """
        wants = [(res, self._owner(owners, res, step), sizes.of(amount)) for res, amount in step.acquire]
        leases = self.acquire(request, wants, timeout_s) if wants else []
        for res, amount in step.release:
            self.release(request, res, self._owner(owners, res, step), sizes.of(amount))
        return leases

    def try_step(self, request: str, step: Step, sizes: RequestSizes,
                 owners: Mapping[Resource, str]) -> list[Lease] | None:
        """Non-blocking `step`: None (and nothing changed) when its wants are not all free."""
        wants = [(res, self._owner(owners, res, step), sizes.of(amount)) for res, amount in step.acquire]
        leases = self.try_acquire(request, wants) if wants else []
        if leases is None:
            return None
        for res, amount in step.release:
            self.release(request, res, self._owner(owners, res, step), sizes.of(amount))
        return leases

    @staticmethod
    def _owner(owners: Mapping[Resource, str], resource: Resource, step: Step) -> str:
        if resource not in owners:
            raise ProtocolError(f"step {step.name} needs an owner for {resource.value}")
        return owners[resource]
