"""What the simulator records: request records, spans inside a chosen window, utilisation series.

At scale the trace stays light: one record per request, spans only inside the Chrome window (none
by default), and utilisation as bucketed series whose width grows with the run (about 2,000 points).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dualpath.cluster import NodeSpec
from dualpath.runtime.sim.hardware import Hardware
from dualpath.runtime.sim.nic import UsageMeter
from dualpath.runtime.sim.state import ReqState
from dualpath.trace import RequestRecord, Span, Trace


class TraceRecorder:
    __slots__ = ("records", "spans", "window")

    def __init__(self, window: tuple[float, float] | None = None) -> None:
        self.window = window
        self.spans: list[Span] = []
        self.records: list[RequestRecord] = []

    @property
    def wants_spans(self) -> bool:
        return self.window is not None

    def span(self, resource: str, kind: str, start_s: float, end_s: float, request: str | None,
             num_bytes: float) -> None:
        window = self.window
        if window is None or end_s < window[0] or start_s > window[1]:
            return
        self.spans.append(Span(resource, kind, start_s, end_s, request, num_bytes))

    def record(self, state: ReqState, pe: str, de: str) -> None:
        r = state.req
        self.records.append(RequestRecord(
            r.id, r.agent, r.turn, state.ready_s, pe, de, state.pe_read_bytes, state.de_read_bytes,
            state.prefill_start_s, state.first_token_s, state.second_token_s, state.finish_s, r.output_tokens,
            r.prompt_tokens))

    def trace(self, policy: str, hw: Hardware, node: NodeSpec, decode_busy_meters: Sequence[UsageMeter],
              meta: dict[str, Any]) -> Trace:
        """The run's `Trace`: what was recorded, the utilisation series, and `meta` with the SNICs' reads."""
        util, balance = utilisation(hw, node, decode_busy_meters)
        meta = {**meta, "snic_read_bytes": {s.name: s.read_bytes_total for s in hw.storages},
                "snic_balance_max_over_avg": balance}
        return Trace("simulator", policy, self.records, self.spans, util, meta)


def merged(meters: list[UsageMeter], bucket_s: float) -> list[float]:
    """Sum of several meters' buckets at a common width."""
    out: list[float] = []
    for meter in meters:
        values = meter.resampled(bucket_s)
        if len(values) > len(out):
            out.extend([0.0] * (len(values) - len(out)))
        for i, v in enumerate(values):
            out[i] += v
    return out


class SeriesMaker:
    """(bucket start, utilisation) series at one bucket width; the bucket starts are rounded once for
    all series (a 48P96D trace has about a thousand series of two thousand points)."""

    __slots__ = ("bucket_s", "starts")

    def __init__(self, bucket_s: float) -> None:
        self.bucket_s = bucket_s
        self.starts: list[float] = []

    def __call__(self, values: list[float], capacity_per_s: float) -> list[tuple[float, float]]:
        starts, bucket_s = self.starts, self.bucket_s
        if len(values) > len(starts):
            starts.extend(round(i * bucket_s, 9) for i in range(len(starts), len(values)))
        scale = 1.0 / (capacity_per_s * bucket_s) if capacity_per_s > 0 else 0.0
        return list(zip(starts, [v * scale for v in values]))


def utilisation(hw: Hardware, node: NodeSpec, decode_busy_meters: Sequence[UsageMeter]
                ) -> tuple[dict[str, list[tuple[float, float]]], float]:
    """Per-node NIC, buffer and GPU utilisation series, each decode group's busy series (in group
    order), and the SNIC max/avg balance over time."""
    storages = hw.storages
    every = [s.read_meter for s in storages] + [s.write.meter for s in storages]
    every += [s.buffer_meter for s in storages] + list(decode_busy_meters)
    every += hw.cnic_meters["in"] + hw.cnic_meters["out"]
    every += hw.gpu_meters
    bucket_s = max(m.bucket_s for m in every)
    as_series = SeriesMaker(bucket_s)
    out: dict[str, list[tuple[float, float]]] = {}
    snic_rows = []
    for storage in storages:
        values = merged([storage.read_meter], bucket_s)
        snic_rows.append(values)
        out[f"{storage.name}.snic"] = as_series(values, storage.line_bytes_per_s)
        out[f"{storage.name}.snic_write"] = as_series(merged([storage.write.meter], bucket_s),
                                                      storage.line_bytes_per_s)
        out[f"{storage.name}.dram"] = as_series(merged([storage.buffer_meter], bucket_s),
                                                storage.buffer_bytes)
    cnic_line = node.cnic_bytes_per_s * node.num_gpus
    for name, index in hw.node_index.items():
        for direction in ("in", "out"):
            values = merged([hw.cnic_meters[direction][index]], bucket_s)
            out[f"{name}.cnic_{direction}"] = as_series(values, cnic_line)
        num_pes = sum(1 for e in hw.pes if e.node == index)
        if num_pes:
            out[f"{name}.gpu"] = as_series(merged([hw.gpu_meters[index]], bucket_s), num_pes)
    for index, meter in enumerate(decode_busy_meters):
        out[f"decode{index}.busy"] = as_series(merged([meter], bucket_s), 1.0)
    return out, snic_balance(snic_rows)


def snic_balance(rows: list[list[float]]) -> float:
    """Mean over time buckets (with traffic) of max-node SNIC bytes / mean-node SNIC bytes."""
    if not rows:
        return math.nan
    length = max(len(r) for r in rows)
    ratios = []
    for i in range(length):
        values = [r[i] if i < len(r) else 0.0 for r in rows]
        mean = sum(values) / len(values)
        if mean > 0:
            ratios.append(max(values) / mean)
    return sum(ratios) / len(ratios) if ratios else math.nan
