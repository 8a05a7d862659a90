"""Counters of KV reuse: a dict for the admin API and a Prometheus collector.

No global registry: `register(registry)` attaches a collector to the caller's registry, which
reads the live counters on every scrape.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

_SCALARS = (
    "requests", "chunk_misses", "chunk_corrupt", "prefix_block_misses", "tokens_prompt",
    "tokens_reused", "tokens_recomputed", "tokens_computed", "chunks_stored", "prefix_blocks_stored",
    "bytes_stored", "ttft_saved_seconds", "prefill_seconds", "populate_seconds", "blends_skipped",
)
_PER_TIER = ("chunk_hits", "chunk_skipped", "prefix_block_hits", "load_bytes", "load_seconds")

_HELP = {
    "requests": "Prefills run by the engine",
    "chunk_misses": "Chunks with no stored KV",
    "chunk_corrupt": "Stored chunk KV rejected as corrupt or of the wrong shape",
    "prefix_block_misses": "Prefix blocks looked up and not found",
    "tokens_prompt": "Prompt tokens prefilled",
    "tokens_reused": "Prompt tokens whose KV was reused rather than computed",
    "tokens_recomputed": "Reused chunk tokens recomputed to restore cross-chunk attention",
    "tokens_computed": "Prompt tokens computed in every layer",
    "chunks_stored": "Chunk KV objects written",
    "prefix_blocks_stored": "Prefix block KV objects written",
    "bytes_stored": "Bytes of KV written to the store",
    "ttft_saved_seconds": "Estimated time to first token saved against a full prefill",
    "prefill_seconds": "Time spent in prefill",
    "populate_seconds": "Time spent computing chunk KV after requests",
    "blends_skipped": "Requests prefilled in full because blending was measured slower here",
    "chunk_hits": "Chunks whose KV was found, by tier",
    "chunk_skipped": "Chunks found but recomputed because loading was slower, by tier",
    "prefix_block_hits": "Prefix blocks found, by tier",
    "load_bytes": "Bytes of KV loaded, by tier",
    "load_seconds": "Time spent loading KV, by tier",
}


class KVStats:
    """Thread-safe counters shared by every engine worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scalars: dict[str, float] = dict.fromkeys(_SCALARS, 0)
        self._tiers: dict[str, defaultdict[str, float]] = {n: defaultdict(float) for n in _PER_TIER}

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, d in deltas.items():
                self._scalars[name] += d

    def add_tier(self, name: str, tier: str, delta: float = 1) -> None:
        with self._lock:
            self._tiers[name][tier] += delta

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._scalars)
            out.update({n: dict(v) for n, v in self._tiers.items()})
        hits = sum(out["chunk_hits"].values())
        looked = hits + out["chunk_misses"]
        out["chunk_hit_rate"] = hits / looked if looked else 0.0
        out["reused_share"] = out["tokens_reused"] / out["tokens_prompt"] if out["tokens_prompt"] else 0.0
        return out

    def register(self, registry: Any, prefix: str = "tiergate_kv") -> Any:
        """Attach a collector of these counters to a prometheus_client registry; returns it."""
        collector = KVStatsCollector(self, prefix)
        registry.register(collector)
        return collector


class KVStatsCollector:
    """prometheus_client custom collector (see `KVStats.register`)."""

    def __init__(self, stats: KVStats, prefix: str) -> None:
        self.stats = stats
        self.prefix = prefix

    def describe(self) -> list[Any]:
        return []  # collected lazily; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        snap = self.stats.as_dict()
        for name in _SCALARS:
            yield CounterMetricFamily(f"{self.prefix}_{name}", _HELP[name], value=snap[name])
        for name in _PER_TIER:
            fam = CounterMetricFamily(f"{self.prefix}_{name}", _HELP[name], labels=["tier"])
            for tier, v in sorted(snap[name].items()):
                fam.add_metric([tier], v)
            yield fam
