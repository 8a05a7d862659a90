"""The background sampler: every few seconds, read the dashboard's numbers, turn counters into
per-interval amounts and rates, and append one point to the bounded series (saved under the data
dir periodically and at shutdown, restored at start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from tiergate.service.dashboard import overview
from tiergate.service.dashboard.config import DashboardConfig
from tiergate.service.dashboard.quantiles import Buckets, quantile
from tiergate.service.dashboard.savings import Savings
from tiergate.service.dashboard.timeseries import Point, Series

log = logging.getLogger(__name__)
LATENCY_WINDOW_S = 60.0  # the live p50/p99 are over this much recent time


def _delta(cur: float | None, prev: float | None) -> float | None:
    if cur is None:
        return None
    if prev is None or cur < prev:  # first sample, or the counter restarted with the process
        return float(cur)
    return float(cur - prev)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def derive(cur: dict[str, Any], prev: dict[str, Any] | None, window: dict[str, Buckets]) -> Point:
    """One series point: amounts during the interval since `prev`, and gauges as they are now."""
    p: Point = {}

    def rows(part: str, key: str, src: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in ((src or {}).get(part) or {}).get(key) or []}

    cache, pcache = cur["cache"], (prev or {}).get("cache") or {}
    if cache.get("available"):
        for o in overview.OUTCOMES:
            p[f"cache.{o}"] = _delta(cache[o], pcache.get(o))
        hits = (p["cache.exact"] or 0) + (p["cache.semantic"] or 0)
        p["cache.hit_rate"] = _ratio(hits, hits + (p["cache.miss"] or 0))
        p["cache.entries"] = cache["entries"]
        p["cache.payload_bytes"] = cache["payload_bytes"]
        for kind in ("categories", "tenants"):
            tag = "cat" if kind == "categories" else "tenant"
            before = rows("cache", kind, prev)
            for name, r in rows("cache", kind, cur).items():
                b = before.get(name, {})
                h = _delta(r["exact"] + r["semantic"], (b.get("exact", 0) + b.get("semantic", 0)) if b else None)
                m = _delta(r["miss"], b.get("miss") if b else None)
                p[f"cache.{tag}.{name}.hit_rate"] = _ratio(h, (h or 0) + (m or 0))
                p[f"cache.{tag}.{name}.lookups"] = (h or 0) + (m or 0)
                if kind == "categories":
                    p[f"cache.cat.{name}.threshold"] = r["threshold"]
                    p[f"cache.cat.{name}.false_hit_rate"] = r["false_hit_rate"]
    saved, psaved = cache["saved"], pcache.get("saved") or {}
    for k in ("hits", "tokens", "seconds", "cost"):
        p[f"cache.saved.{k}"] = _delta(saved[k], psaved.get(k))

    kv, pkv = cur["kv"], (prev or {}).get("kv") or {}
    if kv.get("available"):
        for k in ("tokens_reused", "tokens_recomputed", "tokens_computed", "ttft_saved_seconds"):
            p[f"kv.{k}"] = _delta(kv[k], pkv.get(k))
        h = _delta(kv["chunk_hits"], pkv.get("chunk_hits"))
        m = _delta(kv["chunk_misses"], pkv.get("chunk_misses"))
        p["kv.chunk_hit_rate"] = _ratio(h, (h or 0) + (m or 0))

    before = rows("tiers", "tiers", prev)
    for name, r in rows("tiers", "tiers", cur).items():
        p[f"tier.{name}.used_bytes"] = r["used_bytes"]
        p[f"tier.{name}.budget_bytes"] = r["budget_bytes"]
        p[f"tier.{name}.objects"] = r["objects"]
        for k in ("evictions", "promotions", "demotions", "hits", "misses"):
            p[f"tier.{name}.{k}"] = _delta(r[k], before.get(name, {}).get(k))

    before = rows("backends", "backends", prev)
    for name, r in rows("backends", "backends", cur).items():
        for k in ("requests", "errors"):
            p[f"backend.{name}.{k}"] = _delta(r[k], before.get(name, {}).get(k))
        p[f"backend.{name}.p50_s"] = quantile(0.5, window.get(name, {}))
        p[f"backend.{name}.p99_s"] = quantile(0.99, window.get(name, {}))
        p[f"backend.{name}.queue_depth"] = r["queue_depth"]
    p["backends.inflight"] = cur["backends"]["inflight"]

    idx = cur["indexes"]
    p["indexes.count"] = idx.get("count")
    p["indexes.passages"] = idx.get("passages")
    if idx.get("jobs") is not None:
        p["jobs.running"] = sum(1 for j in idx["jobs"] if j.get("state") in ("queued", "running", "pending"))
    return p


class Sampler:
    def __init__(self, svc: Any, savings: Savings, config: DashboardConfig, path: Path) -> None:
        self.svc = svc
        self.savings = savings
        self.config = config
        self.path = path
        self.series = Series.load(path, config.history_points)
        self.latest: dict[str, Any] | None = None
        self._lock = threading.Lock()
        keep = max(2, math.ceil(LATENCY_WINDOW_S / config.sample_interval_s) + 1)
        self._buckets: deque[dict[str, Buckets]] = deque(maxlen=keep)
        self._prev: dict[str, Any] | None = None
        self._count = 0
        self._task: asyncio.Task[None] | None = None

    def overview(self) -> dict[str, Any]:
        """Live numbers, latency quantiles over the last minute or so (blocking)."""
        now = overview.latency_buckets(self.svc)
        with self._lock:
            oldest = self._buckets[0] if self._buckets else None
        return overview.collect(self.svc, self.savings, self.config, overview.window_of(now, oldest))

    def sample(self) -> None:
        """Append one point (blocking)."""
        buckets = overview.latency_buckets(self.svc)
        with self._lock:
            last = self._buckets[-1] if self._buckets else None
            oldest = self._buckets[0] if self._buckets else None
        cur = overview.collect(self.svc, self.savings, self.config, overview.window_of(buckets, oldest))
        point = derive(cur, self._prev, overview.window_of(buckets, last))
        with self._lock:
            self._buckets.append(buckets)
            self.series.append(cur["generated_at"], point)
            self._prev = self.latest = cur
            self._count += 1
            persist = self._count % self.config.persist_every == 0
        if persist:
            self.save()

    def series_dict(self, since: float | None = None, prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
        with self._lock:
            return {"interval_s": self.config.sample_interval_s, **self.series.to_dict(since, prefixes)}

    def save(self) -> None:
        with self._lock:
            self.series.prune()
            try:
                self.series.save(self.path)
            except OSError as exc:  # a full disk must not stop the sampling
                log.warning("dashboard series not saved to %s: %s", self.path, exc)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.sample)
            except Exception:  # one bad read (a backend mid-restart) must not end the series
                log.exception("dashboard sample failed")
            await asyncio.sleep(max(0.0, self.config.sample_interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.save)
