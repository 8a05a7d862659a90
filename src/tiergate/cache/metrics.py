"""Prometheus metrics of the cache, registered on a caller-supplied registry.

Labels are bounded: category names come from config, outcomes and reasons are fixed sets.
Tenants are not a label (unbounded); per-tenant numbers are in `SemanticCache.stats()`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str = "tiergate_cache") -> None:
        self.lookups = Counter(
            f"{prefix}_lookups", "Cache lookups by outcome (exact|semantic|miss|bypass) and category.",
            ["outcome", "category"], registry=registry,
        )
        self.guard_refusals = Counter(
            f"{prefix}_guard_refusals", "Semantic candidates refused by the guard, by reason.",
            ["category", "reason"], registry=registry,
        )
        self.verifications = Counter(
            f"{prefix}_verifications", "Verified samples by kind (hit|probe) and result (agreed|disagreed).",
            ["category", "kind", "result"], registry=registry,
        )
        self.false_hits = Counter(
            f"{prefix}_false_hits", "Sampled would-be hits whose cached answer disagreed with the backend.",
            ["category"], registry=registry,
        )
        self.threshold_changes = Counter(
            f"{prefix}_threshold_changes", "Threshold changes by reason (budget|pressure).",
            ["category", "reason"], registry=registry,
        )
        self.threshold = Gauge(
            f"{prefix}_threshold", "Similarity threshold in force without load pressure.", ["category"],
            registry=registry,
        )
        self.inserts = Counter(f"{prefix}_inserts", "Entries inserted.", ["category"], registry=registry)
        self.evictions = Counter(
            f"{prefix}_evictions", "Entries removed by reason (quota|ttl|invalidated|false_hit|missing).",
            ["category", "reason"], registry=registry,
        )
        self.entries = Gauge(f"{prefix}_entries", "Entries held.", ["category"], registry=registry)
        self.bytes = Gauge(f"{prefix}_payload_bytes", "Payload bytes held.", ["category"], registry=registry)
        self.lookup_seconds = Histogram(
            f"{prefix}_lookup_seconds", "Time in lookup (embedding included).", ["outcome"], registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
        )
        self.invalidations = Counter(
            f"{prefix}_invalidations", "Entries removed by invalidation, by source (local|remote).", ["source"],
            registry=registry,
        )
