"""Prometheus export of the dashboard's numbers that no other collector exports yet.

Labels are bounded: `tenant` is one of the busiest `max_tenants` tenants (tenants come from the
configured API keys), `model` a model the router serves or "other", `category` a configured
category, `backend` a configured backend, `state` a job state. Cache, index and job numbers come
from the sampler's latest reading (a scrape never reads the disk or waits on the cache's lock);
savings and backend gauges are read live.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from tiergate.service.dashboard.overview import OUTCOMES
from tiergate.service.dashboard.sampler import Sampler

P = "tiergate"


class DashboardCollector(Collector):
    def __init__(self, sampler: Sampler, registry: CollectorRegistry) -> None:
        self.sampler = sampler
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families().values())

    def _families(self) -> dict[str, Metric]:
        fams: list[Metric] = [
            CounterMetricFamily(f"{P}_cache_tenant_lookups", "Cache lookups by tenant and outcome.",
                                labels=["tenant", "outcome"]),
            GaugeMetricFamily(f"{P}_cache_false_hit_rate", "Measured false-hit rate at the threshold in force "
                              "(verified samples that disagreed).", labels=["category"]),
            GaugeMetricFamily(f"{P}_cache_false_hit_budget", "Target false-hit rate of the category.",
                              labels=["category"]),
            GaugeMetricFamily(f"{P}_cache_verified_at_threshold", "Verified samples at or above the threshold.",
                              labels=["category"]),
            CounterMetricFamily(f"{P}_cache_saved_requests", "Backend calls saved by cache hits.", labels=["model"]),
            CounterMetricFamily(f"{P}_cache_saved_tokens", "Tokens the backend did not process thanks to hits.",
                                labels=["model"]),
            CounterMetricFamily(f"{P}_cache_saved_seconds", "Latency saved by hits against the model's typical "
                                "backend call.", labels=["model"]),
            CounterMetricFamily(f"{P}_cache_saved_cost", "Cost saved by hits, from dashboard.cost_per_1k_tokens.",
                                labels=["model"]),
            GaugeMetricFamily(f"{P}_backend_queue_depth", "Requests waiting for the backend.", labels=["backend"]),
            GaugeMetricFamily(f"{P}_backend_ready", "1 when the backend is ready.", labels=["backend"]),
            GaugeMetricFamily(f"{P}_indexes", "Published indexes.", labels=[]),
            GaugeMetricFamily(f"{P}_index_passages", "Passages in all indexes.", labels=[]),
            GaugeMetricFamily(f"{P}_index_bytes", "Bytes of all indexes on disk, text store excluded.", labels=[]),
            GaugeMetricFamily(f"{P}_index_raw_text_bytes", "Bytes of the raw text the indexes were built from.",
                              labels=[]),
            GaugeMetricFamily(f"{P}_index_jobs", "Index build jobs by state.", labels=["state"]),
        ]
        return {f.name: f for f in fams}

    def collect(self) -> Iterator[Metric]:
        f = self._families()
        latest: dict[str, Any] = self.sampler.latest or {}
        cache = latest.get("cache") or {}
        for t in cache.get("tenants") or ():
            for o in OUTCOMES:
                f[f"{P}_cache_tenant_lookups"].add_metric([t["name"], o], t[o])
        for c in cache.get("categories") or ():
            if c["false_hit_rate"] is not None:
                f[f"{P}_cache_false_hit_rate"].add_metric([c["name"]], c["false_hit_rate"])
            if c["false_hit_budget"] is not None:
                f[f"{P}_cache_false_hit_budget"].add_metric([c["name"]], c["false_hit_budget"])
            f[f"{P}_cache_verified_at_threshold"].add_metric([c["name"]], c["verified"])
        for model, s in self.sampler.savings.snapshot().items():
            f[f"{P}_cache_saved_requests"].add_metric([model], s["hits"])
            f[f"{P}_cache_saved_tokens"].add_metric([model], s["tokens"])
            f[f"{P}_cache_saved_seconds"].add_metric([model], s["seconds"])
            f[f"{P}_cache_saved_cost"].add_metric([model], s["cost"])
        for b in self.sampler.svc.backends:
            st = b.status()
            f[f"{P}_backend_queue_depth"].add_metric([b.name], float(st.get("queue_depth") or 0))
            f[f"{P}_backend_ready"].add_metric([b.name], 1.0 if st.get("ready") else 0.0)
        idx = latest.get("indexes") or {}
        if "count" in idx:
            f[f"{P}_indexes"].add_metric([], idx["count"])
            f[f"{P}_index_passages"].add_metric([], idx["passages"])
            f[f"{P}_index_bytes"].add_metric([], idx["index_bytes"])
            f[f"{P}_index_raw_text_bytes"].add_metric([], idx["raw_text_bytes"])
        states: dict[str, int] = {}
        for j in idx.get("jobs") or ():
            state = str(j.get("state") or "unknown")[:32]
            states[state] = states.get(state, 0) + 1
        for state, n in states.items():
            f[f"{P}_index_jobs"].add_metric([state], n)
        return iter(f.values())
