"""The online scheduler's scan keys: which waiting requests a tick's skip test can let through.

A tick looks at up to `scan` waiting requests in FIFO order and skips the long ones while every PE is
past the horizon, and those whose context KV is at least the smallest no DE had room for. At
thousands waiting, testing each in Python was most of a run; here each request gets two keys once
(its context KV bytes; the same, or inf when it is long) and a tick finds the next request whose key
is below the tick's threshold with C-level scans. The window's lists are kept across ticks when the
caller passes the same waiting sequence (the simulator does): the kept prefix is checked by identity
and only the new tail is read, so a tick costs one C pass over the window, not five.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import compress, islice
from operator import attrgetter, gt, is_

from dualpath.request import Request

_id_of = attrgetter("id")


class WaitingKeys:
    """Per waiting request: context KV bytes, and the same or inf when it is long (over `short_s`)."""

    def __init__(self, compute_s: Callable[[Request], float], kv_bytes_per_token: int, short_s: float) -> None:
        self.compute_s = compute_s  # a request's predicted compute seconds (the scheduler's cache)
        self.kv = kv_bytes_per_token
        self.short_s = short_s
        self.need_bytes: dict[str, int] = {}
        self.short_need_bytes: dict[str, float] = {}
        self._source: Sequence[Request] | None = None  # the waiting sequence the lists mirror
        self._reqs: list[Request] = []
        self._all: list[float] = []
        self._short: list[float] = []

    def window(self, waiting: Sequence[Request], scan: int) -> tuple[list[Request], list[float], list[float]]:
        """(the first `scan` waiting requests, their keys, their keys past the horizon)."""
        scan = max(0, scan)
        if waiting is self._source and len(self._reqs) <= len(waiting) <= scan:
            rest = iter(waiting)
            if all(map(is_, self._reqs, rest)):  # the kept prefix is still the head, in order
                self._extend(list(rest))
                return self._reqs, self._all, self._short
        self._reqs, self._all, self._short = [], [], []
        self._extend(list(islice(waiting, scan)))
        self._source = waiting if len(waiting) <= scan else None  # past `scan`, the tail is not ours
        return self._reqs, self._all, self._short

    def _extend(self, reqs: list[Request]) -> None:
        ids = list(map(_id_of, reqs))
        missing = set(ids).difference(self.need_bytes)
        if missing:
            for r in compress(reqs, map(missing.__contains__, ids)):
                need = self.need_bytes[r.id] = r.context_tokens * self.kv
                self.short_need_bytes[r.id] = float("inf") if self.compute_s(r) > self.short_s else need
        self._reqs += reqs
        self._all += map(self.need_bytes.__getitem__, ids)
        self._short += map(self.short_need_bytes.__getitem__, ids)

    def taken(self, positions: list[int]) -> None:
        """The requests at `positions` of the last window were assigned: they leave the kept lists."""
        for pos in sorted(positions, reverse=True):
            del self._reqs[pos], self._all[pos], self._short[pos]

    def drop(self, request_id: str) -> None:
        self.need_bytes.pop(request_id, None)
        self.short_need_bytes.pop(request_id, None)


def unblocked(reqs: list[Request], keys: Callable[[], list[float]], threshold: Callable[[], float]
              ) -> Iterator[tuple[int, Request]]:
    """The (position, request) pairs whose key is below the threshold, both read afresh before each
    search (a tick's assignments move them between yields)."""
    pos, n = 0, len(reqs)
    while pos < n:
        current = keys()
        pos = next(compress(range(pos, n), map(partial(gt, threshold()), map(current.__getitem__, range(pos, n)))), n)
        if pos < n:
            yield pos, reqs[pos]
            pos += 1
