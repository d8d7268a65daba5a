"""Prometheus metrics of one service (its own registry, so two apps in one process never share counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Requests by endpoint and status, latency by endpoint, rejections by reason, inputs evaluated by model,
    extraction alarms by detector and action."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("bastion_serve_requests", "HTTP requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("bastion_serve_request_seconds", "Seconds from request to answer", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejections = Counter("bastion_serve_rejections", "Requests refused, by reason", ["reason"],
                                  registry=self.registry)
        self.queries = Counter("bastion_serve_queries", "Inputs the model evaluated", ["model"],
                               registry=self.registry)
        self.alarms = Counter("bastion_serve_alarms", "Extraction alarms raised on keys, by detector and action",
                              ["detector", "action"], registry=self.registry)

    def observe(self, endpoint: str, status: int, seconds: float, reason: str | None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if reason is not None:
            self.rejections.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
