"""Page pool entries: one protocol resource instance's pages, and the leases requests hold on them.

`BufferPool` (`dualpath.runtime.engines.buffers`) owns the entries and charges every page through the `Ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dualpath.protocol import ProtocolError, Resource
from dualpath.runtime.engines.memory import Memory

BYTES = "bytes"
SLOTS = "slots"
COUNT = "count"


@dataclass
class PoolEntry:
    """One resource instance: `(resource, owner)` with its unit, page size and memory (if any)."""

    resource: Resource
    owner: str
    unit: str  # BYTES (paged memory), SLOTS (one page per unit) or COUNT (no memory)
    page_bytes: int
    num_pages: int
    memory: Memory | None
    free_pages: list[int] = field(default_factory=list)

    def charge(self, amount: int) -> tuple[int, int]:
        """(pages, ledger units) an amount of this resource costs."""
        if self.unit == BYTES:
            pages = -(-amount // self.page_bytes)
            return pages, pages * self.page_bytes
        return (amount if self.unit == SLOTS else 0), amount

    def take(self, num_pages: int) -> tuple[int, ...]:
        """Pop `num_pages` free pages; the caller checked availability through the ledger first."""
        return tuple(self.free_pages.pop() for _ in range(num_pages))

    def put_back(self, pages: tuple[int, ...]) -> None:
        # reversed, so the next `take` hands out the same pages in the same order (stable layouts)
        self.free_pages.extend(reversed(pages))


@dataclass(frozen=True)
class Lease:
    """Pages of one resource held by one request. `views()` are the pages' memory, in order."""

    request: str
    resource: Resource
    owner: str
    pages: tuple[int, ...]
    page_bytes: int
    charged: int
    memory: Memory | None

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(page * self.page_bytes for page in self.pages)

    def view(self, index: int) -> memoryview:
        """Host memory of the lease's `index`-th page (device memory: use `memory.tensor`)."""
        if self.memory is None or self.memory.view is None:
            raise ProtocolError(f"{self.resource.value}/{self.owner} has no host memory to view")
        start = self.pages[index] * self.page_bytes
        return self.memory.view[start : start + self.page_bytes]

    def views(self) -> list[memoryview]:
        return [self.view(i) for i in range(len(self.pages))]

