"""NIC channels and usage meters of the simulator.

A `NicChannel` is one direction of one NIC (or a GPU's copy engine) served first-come first-served: a
transfer of B bytes ready at t occupies it from max(t, free_at) for max(B / rate, submission time).
Serving one transfer at a time at the full rate finishes every transfer no later than fluid sharing
would finish the last of them and never carries more than the rate, which is what the aggregate
times need; no per-packet or per-layer event is simulated.

A `UsageMeter` spreads amounts (bytes, busy seconds) over time buckets whose width doubles when a
run outgrows them, so memory stays bounded at any scale and the series stay exact sums.
"""

from __future__ import annotations

from collections.abc import Callable

SpanSink = Callable[[str, str, float, float, str | None, float], None]


class UsageMeter:
    """Amount per time bucket; `series(capacity)` turns it into utilisation in [0, 1]."""

    __slots__ = ("_limit_s", "bucket_s", "buckets", "max_buckets", "total")

    def __init__(self, bucket_s: float = 0.01, max_buckets: int = 2048) -> None:
        self.bucket_s = bucket_s
        self.buckets: list[float] = []
        self.max_buckets = max_buckets
        self.total = 0.0
        self._limit_s = bucket_s * max_buckets

    def add(self, start_s: float, end_s: float, amount: float) -> None:
        """Spread `amount` uniformly over [start_s, end_s) (all at start_s when the interval is empty)."""
        self.total += amount
        if start_s > end_s:  # max(end_s, start_s) without the call: millions of adds per run
            end_s = start_s
        while end_s >= self._limit_s:
            self._coarsen()
        width = self.bucket_s
        first = int(start_s / width)
        last = int(end_s / width)
        buckets = self.buckets
        if last >= len(buckets):
            buckets.extend([0.0] * (last + 1 - len(buckets)))
        if first == last:
            buckets[first] += amount
            return
        rate = amount / (end_s - start_s)
        buckets[first] += rate * ((first + 1) * width - start_s)
        for i in range(first + 1, last):
            buckets[i] += rate * width
        buckets[last] += rate * (end_s - last * width)

    def _coarsen(self) -> None:
        old = self.buckets
        self.buckets = [old[i] + (old[i + 1] if i + 1 < len(old) else 0.0) for i in range(0, len(old), 2)]
        self.bucket_s *= 2
        self._limit_s = self.bucket_s * self.max_buckets

    def resampled(self, bucket_s: float) -> list[float]:
        """Buckets merged to `bucket_s`, a power-of-two multiple of this meter's width."""
        factor = max(1, round(bucket_s / self.bucket_s))
        old = self.buckets
        return [sum(old[i:i + factor]) for i in range(0, len(old), factor)]

    def series(self, capacity_per_s: float, bucket_s: float | None = None) -> list[tuple[float, float]]:
        """(bucket start, amount / (capacity x width)) per bucket."""
        width = bucket_s or self.bucket_s
        values = self.resampled(width)
        scale = 1.0 / (capacity_per_s * width) if capacity_per_s > 0 else 0.0
        return [(i * width, v * scale) for i, v in enumerate(values)]


class NicChannel:
    """One direction of a NIC (or a copy path), FIFO at `rate_bytes_per_s`."""

    __slots__ = (
        "bytes_total",
        "free_at",
        "kind",
        "line_bytes_per_s",
        "meter",
        "name",
        "rate_bytes_per_s",
        "sink",
    )

    def __init__(self, name: str, kind: str, rate_bytes_per_s: float, line_bytes_per_s: float | None = None,
                 sink: SpanSink | None = None, meter: UsageMeter | None = None) -> None:
        self.name = name
        self.kind = kind
        self.rate_bytes_per_s = rate_bytes_per_s
        self.line_bytes_per_s = line_bytes_per_s or rate_bytes_per_s  # what utilisation is relative to
        self.free_at = 0.0
        self.meter = meter if meter is not None else UsageMeter()  # may be shared, e.g. by a node's CNICs
        self.bytes_total = 0.0
        self.sink = sink

    def reserve(self, ready_s: float, num_bytes: float, min_s: float = 0.0, request: str | None = None) -> float:
        """Queue a transfer ready at `ready_s`; returns when it ends. `min_s`: submission-bound floor."""
        # max() spelled out (first argument on ties, as max returns): this runs for every transfer.
        start = ready_s
        if self.free_at > start:
            start = self.free_at
        duration = num_bytes / self.rate_bytes_per_s
        if min_s > duration:
            duration = min_s
        end = start + duration
        self.free_at = end
        self.meter.add(start, end, num_bytes)
        self.bytes_total += num_bytes
        if self.sink is not None:
            self.sink(self.name, self.kind, start, end, request, num_bytes)
        return end

    def utilisation(self, bucket_s: float | None = None) -> list[tuple[float, float]]:
        return self.meter.series(self.line_bytes_per_s, bucket_s)
