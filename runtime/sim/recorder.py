"""What the simulator records: request records, spans inside a chosen window, utilisation series.

At scale the trace stays light: one record per request, spans only inside the Chrome window (none
by default), and utilisation as bucketed series whose width grows with the run (about 2,000 points).
"""

from __future__ import annotations

import math

from dualpath.runtime.sim.nic import UsageMeter
from dualpath.trace import RequestRecord, Span


class TraceRecorder:
    __slots__ = ("records", "spans", "window")

    def __init__(self, window: tuple[float, float] | None = None):
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

    def record(self, state, pe: str, de: str) -> None:
        r = state.req
        self.records.append(RequestRecord(
            r.id, r.agent, r.turn, state.ready_at, pe, de, state.pe_read, state.de_read,
            state.prefill_start, state.first_token, state.second_token, state.finish, r.output_tokens,
            r.prompt_tokens))


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


def as_series(values: list[float], capacity_per_s: float, bucket_s: float) -> list[tuple[float, float]]:
    scale = 1.0 / (capacity_per_s * bucket_s) if capacity_per_s > 0 else 0.0
    return [(round(i * bucket_s, 9), v * scale) for i, v in enumerate(values)]


def utilisation(sim) -> tuple[dict[str, list[tuple[float, float]]], float]:
    """Per-node NIC, buffer and GPU utilisation series and the SNIC max/avg balance over time."""
    every = [s.read_meter for s in sim.storages] + [s.write.meter for s in sim.storages]
    every += [s.buffer_meter for s in sim.storages] + [g.busy_meter for g in sim.decode_groups]
    every += sim.cnic_meters["in"] + sim.cnic_meters["out"]
    every += sim.gpu_meters
    bucket_s = max(m.bucket_s for m in every)
    node = sim.cluster.node
    out: dict[str, list[tuple[float, float]]] = {}
    snic_rows = []
    for storage in sim.storages:
        values = merged([storage.read_meter], bucket_s)
        snic_rows.append(values)
        out[f"{storage.name}.snic"] = as_series(values, storage.line_bytes_per_s, bucket_s)
        out[f"{storage.name}.snic_write"] = as_series(merged([storage.write.meter], bucket_s),
                                                      storage.line_bytes_per_s, bucket_s)
        out[f"{storage.name}.dram"] = as_series(merged([storage.buffer_meter], bucket_s),
                                                storage.buffer_bytes, bucket_s)
    cnic_line = node.cnic_bytes_per_s * node.num_gpus
    for name, index in sim.node_index.items():
        for direction in ("in", "out"):
            values = merged([sim.cnic_meters[direction][index]], bucket_s)
            out[f"{name}.cnic_{direction}"] = as_series(values, cnic_line, bucket_s)
        num_pes = sum(1 for e in sim.pes if e.node == index)
        if num_pes:
            out[f"{name}.gpu"] = as_series(merged([sim.gpu_meters[index]], bucket_s), num_pes, bucket_s)
    for group in sim.decode_groups:
        out[f"decode{group.index}.busy"] = as_series(merged([group.busy_meter], bucket_s), 1.0, bucket_s)
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
