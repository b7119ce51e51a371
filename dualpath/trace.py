"""The Trace: what an executor (simulator or real runtime) observed, in one format for both.

Per request a record of timestamps (arrival, prefill, first/second token, finish) and where it ran;
per resource spans of activity (reads on an SNIC, a forward batch on an engine) and utilisation
samples. Metrics derive from the records; `to_chrome` exports spans for chrome://tracing / Perfetto.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from dualpath.errors import SpecError
from dualpath.jsonio import check_versioned, read_versioned, write_json_atomic
from dualpath.records import fast_init
from dualpath.schema import SIGNED_RANGE, fields_of, list_of
from dualpath.validate import number

TRACE_SCHEMA_VERSION = 1
CHROME_SCHEMA_VERSION = 1  # of the Chrome trace-event files (`kind` "chrome_trace"; viewers ignore both keys)


@fast_init
@dataclass(frozen=True)
class RequestRecord:
    request: str
    agent: int
    turn: int
    arrival_s: float
    pe: str
    de: str
    pe_read_bytes: int
    de_read_bytes: int
    prefill_start_s: float
    first_token_s: float
    second_token_s: float
    finish_s: float
    output_tokens: int
    prompt_tokens: int = 0
    status: str = "done"  # "done", "failed", "recomputed"

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def ttst_s(self) -> float | None:
        """As the paper's Table 3 reads it (0.228 s beside a 1.739 s TTFT): first token to second, i.e.
        the KV's hand-off to the decode engine and its first step; None with a single output token."""
        return self.second_token_s - self.first_token_s if self.output_tokens > 1 else None

    @property
    def tpot_s(self) -> float | None:
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1) if self.output_tokens > 1 else None

    def within_slo(self, ttft_s: float, tpot_s: float) -> bool:
        """TTFT and TPOT both within the SLO (a single-token request has no TPOT to miss)."""
        return self.ttft_s <= ttft_s and (self.tpot_s or 0.0) <= tpot_s


@dataclass(frozen=True)
class Span:
    resource: str  # "P0.snic", "PE3", "D1.cnic3"
    kind: str  # "read", "prefill", "decode", "transfer", "persist"
    start_s: float
    end_s: float
    request: str | None = None
    num_bytes: float = 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Metrics:
    jct_s: float
    num_requests: int
    output_tokens: int
    tokens_per_s: float
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    ttst_mean_s: float
    ttst_p50_s: float
    ttst_p90_s: float
    ttst_p99_s: float
    tpot_mean_s: float
    tpot_p50_s: float
    tpot_p90_s: float
    tpot_p99_s: float


@dataclass
class Trace:
    executor: str  # "simulator" or "runtime"
    policy: str
    records: list[RequestRecord]
    spans: list[Span] = field(default_factory=list)
    # resource -> [(time_s, utilisation in [0, 1])], sampled at the executor's interval
    utilisation: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def metrics(self) -> Metrics:
        done = [r for r in self.records if r.status != "failed"]
        if not done:
            nan = math.nan
            return Metrics(nan, 0, 0, 0.0, *([nan] * 12))
        start = min(r.arrival_s for r in done)
        jct = max(r.finish_s for r in done) - start
        ttft = [r.ttft_s for r in done]
        ttst = [t for t in (r.ttst_s for r in done) if t is not None]
        tpot = [t for t in (r.tpot_s for r in done) if t is not None]
        out_tokens = sum(r.output_tokens for r in done)

        def stats(values: list[float]) -> list[float]:
            mean = sum(values) / len(values) if values else math.nan
            return [mean, percentile(values, 50), percentile(values, 90), percentile(values, 99)]

        return Metrics(jct, len(done), out_tokens, out_tokens / jct if jct > 0 else 0.0,
                       *stats(ttft), *stats(ttst), *stats(tpot))

    def slo_attainment(self, ttft_s: float, tpot_s: float) -> float:
        """Fraction of requests with TTFT and TPOT both within the SLO."""
        done = [r for r in self.records if r.status != "failed"]
        if not done:
            return 0.0
        return sum(1 for r in done if r.within_slo(ttft_s, tpot_s)) / len(done)

    def read_bytes_by_side(self) -> tuple[int, int]:
        return (sum(r.pe_read_bytes for r in self.records), sum(r.de_read_bytes for r in self.records))

    def to_chrome(self, start_s: float = 0.0, end_s: float = math.inf) -> dict:
        """Chrome trace-event JSON of the spans overlapping [start_s, end_s]: one process per node or
        engine, one numbered thread per resource, named by `process_name`/`thread_name` metadata."""
        events: list[dict] = []
        pids: dict[str, int] = {}
        tids: dict[str, tuple[int, int]] = {}  # resource -> (pid, tid); viewers want integer tids
        for span in self.spans:
            if span.end_s < start_s or span.start_s > end_s:
                continue
            if span.resource not in tids:
                pid = pids.setdefault(span.resource.split(".")[0], len(pids) + 1)
                tids[span.resource] = (pid, sum(1 for p, _ in tids.values() if p == pid) + 1)
            pid, tid = tids[span.resource]
            events.append({"name": span.kind + (f" {span.request}" if span.request else ""), "cat": span.kind,
                           "ph": "X", "ts": span.start_s * 1e6, "dur": max(0.0, span.end_s - span.start_s) * 1e6,
                           "pid": pid, "tid": tid, "args": {"bytes": span.num_bytes}})
        meta = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}}
                for name, pid in pids.items()]
        meta += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": resource}}
                 for resource, (pid, tid) in tids.items()]
        return {"kind": "chrome_trace", "schema_version": CHROME_SCHEMA_VERSION, "traceEvents": meta + events,
                "displayTimeUnit": "ms", "otherData": {"policy": self.policy, "executor": self.executor}}

    def to_json(self) -> dict:
        return {
            "kind": "trace", "schema_version": TRACE_SCHEMA_VERSION, "executor": self.executor,
            "policy": self.policy, "meta": self.meta,
            "metrics": asdict(self.metrics()),
            "records": [asdict(r) for r in self.records],
            "spans": [asdict(s) for s in self.spans],
            "utilisation": {k: [list(p) for p in v] for k, v in self.utilisation.items()},
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "trace") -> Trace:
        check_versioned(source, data, "trace", TRACE_SCHEMA_VERSION)
        # Every field is type-checked: a hand-edited trace fails here, naming the file and the field.
        records = [RequestRecord(**fields_of(source, f"records[{i}]", RequestRecord, r, float_range=SIGNED_RANGE))
                   for i, r in enumerate(list_of(source, "records", data.get("records")))]
        spans = [Span(**fields_of(source, f"spans[{i}]", Span, s, float_range=SIGNED_RANGE))
                 for i, s in enumerate(list_of(source, "spans", data.get("spans", [])))]
        samples = data.get("utilisation", {})
        if not isinstance(samples, dict):
            raise SpecError(source, "utilisation", samples, "a JSON object of resource -> [[time_s, fraction], ...]")
        utilisation = {k: [_sample(source, f"utilisation.{k}[{j}]", p)
                           for j, p in enumerate(list_of(source, f"utilisation.{k}", v))] for k, v in samples.items()}
        top = fields_of(source, "", cls, data, handled=("records", "spans", "utilisation"),
                        ignored=("kind", "schema_version", "metrics"))
        return cls(records=records, spans=spans, utilisation=utilisation, **top)

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> Trace:
        return cls.from_json(read_versioned(path, "trace", TRACE_SCHEMA_VERSION), path)


def _sample(source: str, field: str, point: object) -> tuple[float, float]:
    if not isinstance(point, list) or len(point) != 2:
        raise SpecError(source, field, point, "[time_s, utilisation]")
    # a sampled utilisation may exceed 1 by float round-off
    return (number(source, field, point[0], *SIGNED_RANGE), number(source, field, point[1], 0, 1 + 1e-6))
