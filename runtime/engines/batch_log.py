"""What an engine's forward passes batched: per forward, how many sequences it ran together.

Both roles keep one (`PrefillEngine.batches`: requests per prefill forward; `DecodeEngine.batches`:
sequences per decode step) and report it in their stats, so a benchmark can show the batch sizes a
run really had and a test can check that several requests shared one forward.
"""

from __future__ import annotations

import threading
from collections import deque

RECENT = 256  # forwards whose sizes the stats list, newest last


class BatchLog:
    """Counts of forwards by batch size, plus the sizes of the latest ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.num_forwards = 0
        self.num_items = 0  # requests (prefill) or sequences (decode) over all forwards
        self.by_size: dict[int, int] = {}
        self.recent: deque[int] = deque(maxlen=RECENT)

    def record(self, size: int) -> None:
        with self._lock:
            self.num_forwards += 1
            self.num_items += size
            self.by_size[size] = self.by_size.get(size, 0) + 1
            self.recent.append(size)

    def stats(self) -> dict:
        """JSON-ready: forwards, items, the largest batch, forwards per size and the latest sizes."""
        with self._lock:
            return {"forwards": self.num_forwards, "items": self.num_items,
                    "max_batch": max(self.by_size, default=0),
                    "by_size": {str(size): n for size, n in sorted(self.by_size.items())},
                    "recent": list(self.recent)}
