"""NIC emulation: a rate limiter per SNIC (per node) and per CNIC (per engine).

A `NicLimiter` is a serial link of `rate_bytes_per_s`. Callers `acquire(nbytes, lane=...)` before
moving bytes; the call returns when the link has time for them (sleeping as needed), so what follows
runs at most at the NIC's rate. Lanes model InfiniBand virtual lanes: when several lanes have
waiters, grants are arbitrated by weighted fair queueing on the lane weights (a lane with weight w
gets w / sum(busy weights) of the link, like the VL arbitration table); a lane with no waiters takes
nothing, so an idle lane's share goes to the others. `burst_bytes` lets an idle link bank a little
credit, as a token bucket does.

Thread-safe; no asyncio. A limiter with `rate_bytes_per_s=None` is unlimited (acquire returns at once).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from dualpath.errors import SpecError

MODEL_LANE = "model"  # collectives and other model traffic (high-priority VLs in the paper)
KV_LANE = "kv"  # KV-cache traffic (the low-priority VL)
STORAGE_LANE = "storage"  # the only lane of an SNIC
GRANT_HORIZON_S = 0.002  # grant this far ahead so a late-waking thread does not idle the link


@dataclass
class _GrantRequest:
    """A caller waiting on a lane; `start_at` is set when the link grants it."""

    nbytes: int
    lane: str
    start_at: float | None = None


@dataclass
class LaneStats:
    """Bytes and grants a lane received (read them to measure shares)."""

    granted_bytes: int = 0
    num_grants: int = 0


class NicLimiter:
    """A rate-limited link with weighted lanes. See the module docstring for the semantics.

    `lanes` maps lane name -> weight (positive int, like a VL arbitration weight).
    """

    def __init__(
        self,
        name: str,
        rate_bytes_per_s: float | None,
        lanes: dict[str, int] | None = None,
        burst_bytes: int = 0,
    ) -> None:
        if rate_bytes_per_s is not None and not rate_bytes_per_s > 0:
            raise SpecError(f"NicLimiter {name}", "rate_bytes_per_s", rate_bytes_per_s, "a positive number or None")
        lanes = dict(lanes or {STORAGE_LANE: 1})
        for lane, weight in lanes.items():
            if not isinstance(weight, int) or weight <= 0:
                raise SpecError(f"NicLimiter {name}", f"lanes[{lane!r}]", weight, "a positive integer weight")
        if burst_bytes < 0:
            raise SpecError(f"NicLimiter {name}", "burst_bytes", burst_bytes, "a non-negative integer")
        self.name = name
        self.rate_bytes_per_s = rate_bytes_per_s
        self.weights = lanes
        self.burst_bytes = burst_bytes
        self.stats = {lane: LaneStats() for lane in lanes}
        self._cond = threading.Condition()
        self._queues: dict[str, deque[_GrantRequest]] = {lane: deque() for lane in lanes}
        self._lane_vtime = dict.fromkeys(lanes, 0.0)
        self._vclock = 0.0
        self._free_at = time.monotonic()

    @property
    def unlimited(self) -> bool:
        return self.rate_bytes_per_s is None

    def _check_lane(self, lane: str) -> None:
        if lane not in self.weights:
            raise SpecError(f"NicLimiter {self.name}", "lane", lane, "one of " + ", ".join(sorted(self.weights)))

    def acquire(self, nbytes: int, lane: str | None = None) -> float:
        """Block until the link has carried `nbytes` worth of time for `lane`; returns seconds waited."""
        lane = lane if lane is not None else next(iter(self.weights))
        self._check_lane(lane)
        if nbytes <= 0:
            return 0.0
        began = time.monotonic()
        if self.rate_bytes_per_s is None:
            with self._cond:
                self.stats[lane].granted_bytes += nbytes
                self.stats[lane].num_grants += 1
            return 0.0
        request = _GrantRequest(nbytes, lane)
        with self._cond:
            queue = self._queues[lane]
            if not queue:
                # A lane that was idle restarts at the current virtual time: no banked share.
                self._lane_vtime[lane] = max(self._lane_vtime[lane], self._vclock)
            queue.append(request)
            while request.start_at is None:
                now = time.monotonic()
                self._dispatch(now)
                if request.start_at is not None:
                    break
                self._cond.wait(timeout=max(self._free_at - GRANT_HORIZON_S - now, 0.0005))
        delay = request.start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return time.monotonic() - began

    def _dispatch(self, now: float) -> None:
        """Grant queued requests, lane by weighted-fair order, while the link is (nearly) free."""
        assert self.rate_bytes_per_s is not None
        granted = False
        while self._free_at <= now + GRANT_HORIZON_S:
            busy = [lane for lane, queue in self._queues.items() if queue]
            if not busy:
                break
            # Smallest virtual finish time wins; ties break by lane name for determinism.
            lane = min(busy, key=lambda ln: (self._lane_vtime[ln] + self._queues[ln][0].nbytes / self.weights[ln], ln))
            request = self._queues[lane].popleft()
            self._vclock = self._lane_vtime[lane]
            self._lane_vtime[lane] += request.nbytes / self.weights[lane]
            credit_s = self.burst_bytes / self.rate_bytes_per_s
            start = max(self._free_at, now - credit_s)
            self._free_at = start + request.nbytes / self.rate_bytes_per_s
            request.start_at = start
            self.stats[lane].granted_bytes += request.nbytes
            self.stats[lane].num_grants += 1
            granted = True
        if granted:
            self._cond.notify_all()

    def reset_stats(self) -> None:
        with self._cond:
            self.stats = {lane: LaneStats() for lane in self.weights}


def gbps_to_bytes_per_s(gbps: float) -> float:
    """Network gigabits per second to bytes per second (400 Gbps -> 50e9 B/s)."""
    return gbps * 1e9 / 8


def snic_limiter(node: str, rate_bytes_per_s: float | None, burst_bytes: int = 0) -> NicLimiter:
    """The storage NIC of a node: one lane (`STORAGE_LANE`)."""
    return NicLimiter(f"snic:{node}", rate_bytes_per_s, {STORAGE_LANE: 1}, burst_bytes)


def cnic_limiter(
    engine: str,
    rate_bytes_per_s: float | None,
    model_weight: int = 192,
    kv_weight: int = 64,
    burst_bytes: int = 0,
) -> NicLimiter:
    """The compute NIC of an engine: a model lane and a KV lane arbitrated by VL-table weights.

    Defaults are the paper's low-table weights for a model VL (192) and the KV VL (64).
    """
    return NicLimiter(f"cnic:{engine}", rate_bytes_per_s, {MODEL_LANE: model_weight, KV_LANE: kv_weight}, burst_bytes)
