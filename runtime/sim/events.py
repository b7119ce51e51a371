"""The simulator's event queue: a heap keyed by (time, priority, sequence) for deterministic ties.

Handlers are plain callables taking one argument; the queue never inspects them. Priorities order
events that fall on the same instant: state changes first (a step ends, a read lands), then the
decisions that look at the new state (scheduling, starting the next forward batch).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from heapq import heappush
from typing import Any

from dualpath.errors import InputError

# Same-instant order. A step end frees PE tokens before the scheduler looks; reads land before a
# group decides what is ready; scheduling runs before a group starts so fresh zero-read requests join.
STEP_END = 0
READ_DONE = 1
DE_READY = 2
DECODE_BOUNDARY = 3
ARRIVAL = 4
SCHEDULE = 5
GROUP_START = 6

# Past ~1e14 s a 50 ms scheduler tick no longer changes a float time (t + step == t) and the queue
# would spin forever at one instant. At 1e12 s (~32,000 years, far past any real workload) a float
# still resolves 0.2 ms, so every periodic step still moves the clock.
HORIZON_S = 1e12


class EventQueue:
    """Min-heap of (time_s, priority, seq, handler, arg); `seq` breaks ties in insertion order."""

    __slots__ = ("_heap", "_seq", "now_s", "num_events")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self.now_s = 0.0
        self.num_events = 0

    def push(self, at_s: float, priority: int, handler: Callable[[Any], None], arg: Any = None) -> None:
        if self.now_s > at_s:  # float round-off must never move time backwards (max() without the call)
            at_s = self.now_s
        elif not at_s <= HORIZON_S:  # NaN included
            raise InputError("simulator", f"an event at {at_s:.3g} s, past the {HORIZON_S:.0e} s horizon beyond "
                                          "which the clock's steps stop advancing (arrival times far too late?)")
        self._seq = seq = self._seq + 1
        heappush(self._heap, (at_s, priority, seq, handler, arg))

    def __len__(self) -> int:
        return len(self._heap)

    def run(self, on_tick: Callable[[], None] | None = None, tick_every: int = 4096) -> None:
        """Pop and dispatch until empty; `on_tick` runs every `tick_every` events (progress)."""
        heap, pop = self._heap, heapq.heappop
        count = self.num_events
        if on_tick is None:  # the usual case: the loop without the progress test
            while heap:
                at_s, _, _, handler, arg = pop(heap)
                self.now_s = at_s
                handler(arg)
                count += 1
            self.num_events = count
            return
        while heap:
            at_s, _, _, handler, arg = pop(heap)
            self.now_s = at_s
            handler(arg)
            count += 1
            if on_tick is not None and count % tick_every == 0:
                self.num_events = count
                on_tick()
        self.num_events = count
