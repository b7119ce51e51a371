"""Prometheus metrics of `dualpath serve` (prometheus_client, a registry per service).

Events (a decision, a placement, an outcome) are counted as they happen; levels (read queues,
requests by state, engines, the SLO estimate) are read from the router at scrape time, so a scrape
shows the state as of the scrape, not of the last event.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from dualpath.errors import require

if TYPE_CHECKING:
    from dualpath.serve.router import Router

# Decision latency: 50 us to 50 ms (the scheduler's tick budget is 15 ms).
LATENCY_BUCKETS_S = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 1.5e-2, 2.5e-2, 5e-2)
TTFT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
PATHS = ("storage_to_pe", "storage_to_de", "de_to_pe")


class ServeMetrics:
    """The service's metrics; `render()` is the body of GET /metrics."""

    def __init__(self, slo_ttft_s: float = 4.0, slo_window: int = 1000):
        prom = require("prometheus_client", "serve")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        reg = self.registry
        self.slo_ttft_s = slo_ttft_s
        self._recent_ttft_s: deque[float] = deque(maxlen=slo_window)
        self.decision_s = prom.Histogram("dualpath_route_decision_seconds", "Wall time of one route decision",
                                         buckets=LATENCY_BUCKETS_S, registry=reg)
        self.requests = prom.Counter("dualpath_requests", "Requests by outcome", ["outcome"], registry=reg)
        self.fallback = prom.Counter("dualpath_scheduler_fallbacks",
                                     "Ticks over the time budget, finished by the paper's rules", registry=reg)
        self.path_bytes = prom.Counter("dualpath_path_bytes", "KV bytes routed per path", ["path"], registry=reg)
        self.ttft_s = prom.Histogram("dualpath_predicted_ttft_seconds",
                                     "Predicted time to first token at routing (later of read and compute)",
                                     buckets=TTFT_BUCKETS_S, registry=reg)
        self.slo = prom.Gauge("dualpath_slo_ttft_attainment_ratio",
                              "Share of the last routed requests predicted within the TTFT SLO", registry=reg)
        self.slo_target = prom.Gauge("dualpath_slo_ttft_seconds", "The TTFT SLO the estimate uses", registry=reg)
        self.queue_bytes = prom.Gauge("dualpath_node_read_queue_bytes",
                                      "Storage read queue per node (last report plus routed since)",
                                      ["node", "model_node"], registry=reg)
        self.in_flight = prom.Gauge("dualpath_requests_in_flight", "Requests the service tracks", ["state"],
                                    registry=reg)
        self.engines = prom.Gauge("dualpath_engines_registered", "Registered engines", ["role"], registry=reg)
        self.blocks = prom.Gauge("dualpath_kv_blocks_indexed", "KV blocks some engine reports stored", registry=reg)
        self.slo_target.set(slo_ttft_s)
        for path in PATHS:
            self.path_bytes.labels(path)  # exported at 0 before the first route
        for outcome in ("routed", "queued", "done", "cancelled"):
            self.requests.labels(outcome)

    # ---- events (called by the router, under its lock) -----------------------------------------
    def decided(self, latency_s: float, routed: bool) -> None:
        self.decision_s.observe(latency_s)
        self.requests.labels("routed" if routed else "queued").inc()

    def placed(self, pe_read_bytes: int, de_read_bytes: int, predicted_ttft_s: float) -> None:
        self.path_bytes.labels("storage_to_pe").inc(pe_read_bytes)
        self.path_bytes.labels("storage_to_de").inc(de_read_bytes)
        # What the DE reads goes on to its PE over the compute network, layer by layer.
        self.path_bytes.labels("de_to_pe").inc(de_read_bytes)
        self.ttft_s.observe(predicted_ttft_s)
        self._recent_ttft_s.append(predicted_ttft_s)

    def outcome(self, name: str) -> None:
        self.requests.labels(name).inc()

    def fallbacks(self, count: int) -> None:
        self.fallback.inc(count)

    # ---- scrape ----------------------------------------------------------------------------------
    def render(self, router: Router) -> bytes:
        with router.lock:
            for node, q in router.queue_bytes.items():
                self.queue_bytes.labels(router.registry.host_of_node.get(node, node), node).set(q)
            states = [router.status_of(t) for t in router.requests.values()]
            roles = [e.role.value for e in router.registry.by_id.values()]
            recent = list(self._recent_ttft_s)
            self.blocks.set(len(router.blocks))
        for state in ("queued", "routed"):
            self.in_flight.labels(state).set(states.count(state))
        for role in ("prefill", "decode"):
            self.engines.labels(role).set(roles.count(role))
        if recent:
            self.slo.set(sum(t <= self.slo_ttft_s for t in recent) / len(recent))
        return self._prom.generate_latest(self.registry)

    @property
    def content_type(self) -> str:
        return str(self._prom.CONTENT_TYPE_LATEST)
