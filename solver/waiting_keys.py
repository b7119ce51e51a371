"""The online scheduler's scan keys: which waiting requests a tick's skip test can let through.

A tick looks at up to `scan` waiting requests in FIFO order and skips the long ones while every PE is
past the horizon, and those whose context KV is at least the smallest no DE had room for. At
thousands waiting, testing each in Python was most of a run; here each request gets two keys once
(its context KV bytes; the same, or inf when it is long) and a tick finds the next request whose key
is below the tick's threshold with C-level scans. The window's lists are kept across ticks when the
caller passes the same waiting sequence (the simulator does): the kept prefix is checked by identity
and only the new tail is read, so a tick costs one C pass over the window, not five. A sequence that
logs its changes (the simulator's, `changes_since`) spares even that pass: when the only requests
removed since the last tick are the ones it took, the kept lists are the head and the log has the tail.
The search for the next request that passes skips the blocked ones without a Python step each: past
the horizon with no DE blocked (the usual case) it is a `find` over one byte per request marking the
long ones (memchr); otherwise whole spans whose least key is not below the threshold are skipped by one
`min` over a slice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import compress, islice
from operator import attrgetter, gt, is_
from typing import Any

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
        self._mark: Any = None  # the source's change-log position when the lists last mirrored it
        self._taken_ids: list[str] = []  # taken since then
        self._reqs: list[Request] = []
        self._all: list[float] = []
        self._short: list[float] = []
        self._long = bytearray()  # 1 where the short key is inf: what the search past the horizon skips

    def window(self, waiting: Sequence[Request], scan: int) -> tuple[list[Request], list[float], list[float]]:
        """(the first `scan` waiting requests, their keys, their keys past the horizon)."""
        scan = max(0, scan)
        taken_ids, self._taken_ids = self._taken_ids, []
        if waiting is self._source and len(self._reqs) <= len(waiting) <= scan:
            tail = self._logged_tail(waiting, taken_ids)
            if tail is not None:
                self._extend(tail)
                self._mark_position(waiting)
                return self._reqs, self._all, self._short
            rest = iter(waiting)
            if all(map(is_, self._reqs, rest)):  # the kept prefix is still the head, in order
                self._extend(list(rest))
                self._mark_position(waiting)
                return self._reqs, self._all, self._short
        self._reqs, self._all, self._short, self._long = [], [], [], bytearray()
        self._extend(list(islice(waiting, scan)))
        self._source = waiting if len(waiting) <= scan else None  # past `scan`, the tail is not ours
        self._mark_position(waiting)
        return self._reqs, self._all, self._short

    def _mark_position(self, waiting: Sequence[Request]) -> None:
        mark = getattr(waiting, "mark", None)
        self._mark = mark() if mark is not None and self._source is not None else None

    def _logged_tail(self, waiting: Sequence[Request], taken_ids: list[str]) -> list[Request] | None:
        """The requests that joined `waiting` since the last window, when its change log shows that the
        kept lists are still its head (it lost exactly the requests taken); else None."""
        changes_since = getattr(waiting, "changes_since", None)
        if changes_since is None or self._mark is None:
            return None
        changes = changes_since(self._mark)
        if changes is None:
            return None
        removed, added = changes
        if len(removed) != len(taken_ids) or sorted(removed) != sorted(taken_ids):
            return None
        if len(self._reqs) + len(added) != len(waiting):
            return None
        return added

    def _extend(self, reqs: list[Request]) -> None:
        ids = list(map(_id_of, reqs))
        missing = set(ids).difference(self.need_bytes)
        if missing:
            for r in compress(reqs, map(missing.__contains__, ids)):
                need = self.need_bytes[r.id] = r.context_tokens * self.kv
                self.short_need_bytes[r.id] = _INF if self.compute_s(r) > self.short_s else need
        self._reqs += reqs
        self._all += map(self.need_bytes.__getitem__, ids)
        short = list(map(self.short_need_bytes.__getitem__, ids))
        self._short += short
        self._long += bytes([k == _INF for k in short])

    def taken(self, positions: list[int]) -> None:
        """The requests at `positions` of the last window were assigned: they leave the kept lists."""
        reqs = self._reqs
        self._taken_ids += [reqs[pos].id for pos in positions]
        for pos in sorted(positions, reverse=True):
            del reqs[pos], self._all[pos], self._short[pos], self._long[pos]

    def drop(self, request_id: str) -> None:
        self.need_bytes.pop(request_id, None)
        self.short_need_bytes.pop(request_id, None)

    def unblocked(self, past_horizon: Callable[[], bool], threshold: Callable[[], float]
                  ) -> Iterator[tuple[int, Request]]:
        """The (position, request) pairs of the last window whose key is below the threshold: the short key
        while `past_horizon()`, else the plain one. Both are read afresh before each search (a tick's
        assignments move them between yields)."""
        reqs, pos, n = self._reqs, 0, len(self._reqs)
        while pos < n:
            limit = threshold()
            if past_horizon():
                if limit == _INF:  # below inf: exactly the requests not marked long
                    pos = self._long.find(0, pos)
                    if pos < 0:
                        return
                else:
                    pos = first_below(self._short, limit, pos, n)
            elif limit != _INF:  # (every plain key is finite: below inf they all are)
                pos = first_below(self._all, limit, pos, n)
            if pos < n:
                yield pos, reqs[pos]
                pos += 1


def first_below(keys: list[float], threshold: float, pos: int, n: int) -> int:
    """The first i in [pos, n) with keys[i] < threshold, else n. A span whose least key is not below is
    skipped whole (one `min` over a slice, in C); spans grow while they are skipped and shrink around a hit."""
    span = _MIN_SPAN
    while pos < n:
        end = pos + span
        if threshold > min(keys[pos:end]):
            if span <= _MIN_SPAN:
                return next(compress(range(pos, end), map(partial(gt, threshold), keys[pos:end])))
            span >>= 2
            continue
        pos = end
        span <<= 1
    return n


_MIN_SPAN = 16
_INF = float("inf")
