"""Prometheus metrics of the gateway, on the app's own registry (no global state).

Labels are bounded: `route` is one of the API's fixed paths, `backend` one of the configured
backend names, `status` an HTTP status code.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tiergate_requests", "HTTP requests answered.", ["route", "backend", "status"], registry=r
        )
        self.latency = Histogram(
            "tiergate_request_duration_seconds", "Time to the last byte of the response.",
            ["route", "backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "tiergate_time_to_first_token_seconds", "Time to the first streamed token.",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "tiergate_tokens", "Tokens by kind (prompt, completion, cached).", ["backend", "kind"], registry=r
        )
        self.backend_errors = Counter(
            "tiergate_backend_errors", "Failed backend attempts by error type.", ["backend", "type"], registry=r
        )
        self.retries = Counter("tiergate_backend_retries", "Retried backend attempts.", ["backend"], registry=r)
        self.fallbacks = Counter(
            "tiergate_backend_fallbacks", "Requests handed on to the next backend.", ["backend"], registry=r
        )
        self.inflight = Gauge("tiergate_inflight_requests", "Requests being served now.", registry=r)
