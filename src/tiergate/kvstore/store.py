"""KV objects in the tiered store: lookup by tier, validated loads, accounted writes.

One `KVStore` serves every engine worker of a process (and, through the store's Redis tier,
every replica). It never raises on a bad or missing object: anything unusable is a miss, and
an object that fails validation is deleted so the next request recomputes and replaces it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from tiergate.kvstore.codec import BadKVError, KVFormat
from tiergate.kvstore.config import KVConfig
from tiergate.kvstore.decide import CostModel
from tiergate.kvstore.stats import KVStats

log = logging.getLogger(__name__)


@dataclass
class Located:
    key: str
    tier: str | None  # fastest local tier, "redis" when only shared, None when absent


class KVStore:
    """Chunk and prefix KV on a `tiergate.tiers.TieredStore` (namespace `config.namespace`)."""

    def __init__(self, tiers: Any, config: KVConfig | None = None, *, stats: KVStats | None = None) -> None:
        self.tiers = tiers
        self.config = config or KVConfig()
        self.stats = stats or KVStats()
        self.costs = CostModel()

    @property
    def namespace(self) -> str:
        return self.config.namespace

    def locate(self, key: str) -> Located:
        try:
            meta = self.tiers.meta(self.namespace, key)
            if meta is not None:
                return Located(key, str(meta.tier))
            if getattr(self.tiers, "redis", None) is not None and self.tiers.contains(self.namespace, key):
                return Located(key, "redis")
        except Exception:  # a failing tier must not fail the request
            log.exception("KV lookup failed for %s", key)
        return Located(key, None)

    def load(self, key: str, tier: str | None, fmt: KVFormat, tokens: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The decoded KV (L, 2, H, tokens, D), or None (miss, corrupt or wrong shape)."""
        t0 = time.perf_counter()
        try:
            stored = self.tiers.get(self.namespace, key, as_="torch")
        except Exception:
            log.exception("KV load failed for %s", key)
            stored = None
        if stored is None:
            return None
        try:
            kv = fmt.decode(stored, tokens, dtype)
        except BadKVError as exc:
            log.warning("stored KV %s is unusable (%s); deleting it", key, exc)
            self.stats.add(chunk_corrupt=1)
            self.delete(key)
            return None
        seconds = time.perf_counter() - t0
        nbytes = stored.numel() * stored.element_size()
        where = tier or "unknown"
        self.stats.add_tier("load_bytes", where, nbytes)
        self.stats.add_tier("load_seconds", where, seconds)
        self.costs.observe_load(where, nbytes, seconds)
        return kv

    def save(self, key: str, kv: torch.Tensor, fmt: KVFormat, *, cost: float = 1.0) -> int:
        """Store (L, 2, H, n, D) KV; returns the bytes written (0 when the store refused it)."""
        stored = fmt.encode(kv.detach())
        if stored.device.type != "cpu" and getattr(self.tiers, "gpu", None) is None:
            stored = stored.cpu()
        try:
            self.tiers.put(self.namespace, key, stored, cost=cost)
        except Exception as exc:  # full tiers or a down Redis cost reuse, never the request
            log.warning("could not store KV %s: %s", key, exc)
            return 0
        nbytes = stored.numel() * stored.element_size()
        self.stats.add(bytes_stored=nbytes)
        return nbytes

    def delete(self, key: str) -> None:
        try:
            self.tiers.delete(self.namespace, key)
        except Exception:
            log.exception("could not delete KV %s", key)
