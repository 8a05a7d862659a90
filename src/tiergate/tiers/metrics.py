"""Prometheus export of the store's counters.

Labels are bounded: `tier` (gpu, host, disk, redis) and `namespace`, which is the namespace's
first path segment ("cache/tenantA" -> "cache"), so per-tenant namespaces do not multiply series.
Per-namespace detail stays available from `TieredStore.stats()` for the admin API.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from tiergate.tiers.base import namespace_group
from tiergate.tiers.stats import COUNTERS, GAUGES, TierStats

if TYPE_CHECKING:
    from tiergate.tiers.store import TieredStore

_HELP = {
    "objects": "Objects held in the tier.",
    "bytes": "Bytes held in the tier.",
    "hits": "Lookups served by the tier.",
    "misses": "Lookups that reached the tier and did not find the object there.",
    "evictions": "Objects dropped from the tier under pressure and not kept in a lower local tier.",
    "promotions": "Objects moved from the tier up into a faster one after a hit.",
    "demotions": "Objects moved from the tier down into a slower one under pressure.",
    "expirations": "Objects removed because their TTL passed.",
    "errors": "Failed operations (I/O errors, corrupt objects, Redis failures).",
    "read_bytes": "Bytes read from the tier (disk and redis).",
    "read_seconds": "Seconds spent reading from the tier.",
    "write_bytes": "Bytes written to the tier (disk and redis).",
    "write_seconds": "Seconds spent writing to the tier.",
}


class TierStatsCollector(Collector):
    """Exports a store's stats; registers into `registry` when one is given (never the global one)."""

    def __init__(self, store: TieredStore, registry: CollectorRegistry | None = None, *, prefix: str = "tiergate_tier"):
        self._store = store
        self._prefix = prefix
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        p, labels = self._prefix, ["tier", "namespace"]
        fams: list[Metric] = [GaugeMetricFamily(f"{p}_{g}", _HELP[g], labels=labels) for g in GAUGES]
        fams += [CounterMetricFamily(f"{p}_{c}", _HELP[c], labels=labels) for c in COUNTERS]
        fams.append(GaugeMetricFamily(f"{p}_budget_bytes", "Budget of the tier.", labels=["tier"]))
        fams.append(GaugeMetricFamily(f"{p}_used_bytes", "Bytes used or reserved in the tier.", labels=["tier"]))
        fams.append(GaugeMetricFamily(f"{p}_redis_up", "1 while the Redis tier's circuit is closed.", labels=[]))
        fams.append(CounterMetricFamily(f"{p}_redis_failures", "Failed Redis calls.", labels=[]))
        return fams

    def collect(self) -> Iterator[Metric]:
        grouped: defaultdict[tuple[str, str], TierStats] = defaultdict(TierStats)
        for (tier, ns), s in self._store.stats_table().items():
            grouped[(tier, namespace_group(ns) if ns else "_")].add(s)
        fams = self._families()
        by_name = {f.name: f for f in fams}
        p = self._prefix
        for (tier, group), s in sorted(grouped.items()):
            for name in (*GAUGES, *COUNTERS):
                by_name[f"{p}_{name}"].add_metric([tier, group], float(getattr(s, name)))
        for tier, u in self._store.tier_usage().items():
            by_name[f"{p}_budget_bytes"].add_metric([tier], float(u["budget_bytes"]))
            by_name[f"{p}_used_bytes"].add_metric([tier], float(u["used_bytes"]))
        redis = self._store.redis
        if redis is not None:
            by_name[f"{p}_redis_up"].add_metric([], 0.0 if redis.breaker.is_open else 1.0)
            by_name[f"{p}_redis_failures"].add_metric([], float(redis.breaker.failures))
        else:
            fams = [f for f in fams if not f.name.startswith(f"{p}_redis")]
        return iter(fams)
