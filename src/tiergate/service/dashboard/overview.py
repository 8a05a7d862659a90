"""The dashboard's numbers right now, read from the live service (blocking: call it off the loop).

Counters are totals since this process started; the sampler turns them into rates per interval.
Every part says why it is empty when it is.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from tiergate.service.dashboard import jobs
from tiergate.service.dashboard.config import DashboardConfig
from tiergate.service.dashboard.quantiles import Buckets, diff, quantile
from tiergate.service.dashboard.savings import Savings

OUTCOMES = ("exact", "semantic", "miss", "bypass")
SERVING = ("/v1/chat/completions", "/v1/embeddings")
NO_CATEGORY = "(none)"


def _rate(hits: float, looked: float) -> float | None:
    return hits / looked if looked else None


def _samples(metric: Any) -> list[Any]:
    return [s for family in metric.collect() for s in family.samples] if metric is not None else []


def latency_buckets(svc: Any) -> dict[str, Buckets]:
    """Cumulative latency buckets of the serving routes, per backend label."""
    out: dict[str, Buckets] = defaultdict(dict)
    for s in _samples(svc.metrics.latency):
        if s.name.endswith("_bucket") and s.labels.get("route") in SERVING:
            le = float(s.labels["le"])
            b = out[s.labels["backend"]]
            b[le] = b.get(le, 0.0) + s.value
    return dict(out)


def cache_part(svc: Any, savings: Savings, cfg: DashboardConfig) -> dict[str, Any]:
    saved = {"by_model": savings.snapshot(), **savings.totals(), "currency": cfg.currency}
    if svc.cache is None:
        reason = "the response cache is disabled in config" if not svc.settings.cache.enabled else \
            "the response cache is still loading its embedder"
        return {"available": False, "reason": reason, "saved": saved}
    stats = svc.cache.stats()
    per_cat: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    per_tenant: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for tenant, cats in stats["tenants"].items():
        for cat, counts in cats.items():
            for k, v in counts.items():
                per_cat[cat if cat != "-" else NO_CATEGORY][k] += v
                per_tenant[tenant][k] += v
    totals = {o: sum(c.get(o, 0) for c in per_cat.values()) for o in OUTCOMES}
    looked = sum(totals.values()) - totals["bypass"]
    categories = []
    for name, c in stats["categories"].items():
        counts = per_cat.get(name, {})
        lk = sum(counts.get(o, 0) for o in ("exact", "semantic", "miss"))
        categories.append({
            "name": name, "enabled": c["enabled"], "semantic_enabled": c["semantic"],
            **{o: int(counts.get(o, 0)) for o in OUTCOMES},
            "hit_rate": _rate(counts.get("exact", 0) + counts.get("semantic", 0), lk),
            "threshold": c["threshold"], "threshold_start": c["threshold_start"], "bounds": c["bounds"],
            "false_hit_budget": c["target_false_hit_rate"],
            "false_hit_rate": _rate(c["disagreements_at_threshold"], c["observed_at_threshold"]),
            "verified": c["observed_at_threshold"], "false_hits": c["disagreements_at_threshold"],
            "entries": c["entries"], "payload_bytes": c["payload_bytes"], "ttl_s": c["ttl_s"],
        })
    tenants = []
    for name, counts in per_tenant.items():
        lk = sum(counts.get(o, 0) for o in ("exact", "semantic", "miss"))
        tenants.append({"name": name, **{o: int(counts.get(o, 0)) for o in OUTCOMES},
                        "hit_rate": _rate(counts.get("exact", 0) + counts.get("semantic", 0), lk),
                        "entries": int(counts.get("entries", 0)), "payload_bytes": int(counts.get("payload_bytes", 0))})
    tenants.sort(key=lambda t: -(t["exact"] + t["semantic"] + t["miss"]))
    return {
        "available": True, "reason": None, **totals, "lookups": looked,
        "hit_rate": _rate(totals["exact"] + totals["semantic"], looked),
        "entries": stats["entries"], "payload_bytes": stats["payload_bytes"], "index_bytes": stats["index_bytes"],
        "categories": categories, "tenants": tenants[: cfg.max_tenants], "saved": saved,
    }


def kv_part(svc: Any) -> dict[str, Any]:
    kv = getattr(svc, "kv_stats", None)
    if kv is None:
        local = any(b.kind == "local" for b in svc.backends)
        why = ("the local engine has not reported KV reuse yet" if local
               else "no local engine is configured: KV reuse happens only in the in-process engine")
        return {"available": False, "reason": why}
    d = kv.as_dict()
    hits = sum(d.get("chunk_hits", {}).values())
    return {
        "available": True, "reason": None, "chunk_hits": hits, "chunk_misses": d.get("chunk_misses", 0),
        "chunk_hit_rate": _rate(hits, hits + d.get("chunk_misses", 0)),
        **{k: d.get(k, 0) for k in ("requests", "tokens_prompt", "tokens_reused", "tokens_recomputed",
                                    "tokens_computed", "ttft_saved_seconds", "bytes_stored", "prefill_seconds")},
        "reused_share": d.get("reused_share"), "hits_by_tier": d.get("chunk_hits", {}),
    }


def tiers_part(svc: Any) -> dict[str, Any]:
    if svc.store is None:
        return {"available": False, "reason": "the tiered store is not open (the gateway is starting)"}
    stats = svc.store.stats()
    rows = []
    for name, t in stats["tiers"].items():
        if not t.get("enabled"):
            continue
        rows.append({"name": name, **{k: t.get(k) for k in (
            "used_bytes", "budget_bytes", "objects", "bytes", "hits", "misses", "evictions", "promotions",
            "demotions", "expirations", "errors")}})
        rows[-1]["usage"] = _rate(t.get("used_bytes") or 0, t.get("budget_bytes") or 0)
    return {"available": True, "reason": None, "policy": stats.get("policy"), "objects": stats.get("objects"),
            "tiers": rows}


def backends_part(svc: Any, window: dict[str, Buckets]) -> dict[str, Any]:
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    for s in _samples(svc.metrics.requests):
        if s.name.endswith("_total") and s.labels.get("route") in SERVING:
            requests[s.labels["backend"]] += s.value
    for s in _samples(svc.metrics.backend_errors):
        if s.name.endswith("_total"):
            errors[s.labels["backend"]] += s.value
    rows = []
    names = [b.name for b in svc.backends] + ["cache"]
    status = {b.name: b.status() for b in svc.backends}
    for name in names:
        st = status.get(name, {"name": "cache", "kind": "cache", "ready": svc.cache is not None, "models": []})
        b = window.get(name, {})
        rows.append({
            "name": name, "kind": st.get("kind"), "ready": st.get("ready"), "models": st.get("models", []),
            "requests": requests.get(name, 0.0), "errors": errors.get(name, 0.0),
            "p50_s": quantile(0.5, b), "p99_s": quantile(0.99, b),
            "queue_depth": st.get("queue_depth"), "busy_workers": st.get("busy_workers"),
        })
    inflight = next((s.value for s in _samples(svc.metrics.inflight)), 0.0)
    return {"backends": rows, "inflight": inflight}


def indexes_part(svc: Any, max_rows: int = 200) -> dict[str, Any]:
    from tiergate.index import list_indexes  # the index package loads numpy-heavy modules: only when asked

    try:
        infos = list_indexes(svc.settings, tenant=None)
    except Exception as exc:  # a broken index folder must not take the dashboard down
        return {"available": False, "reason": f"listing indexes failed: {exc}", "indexes": [], "jobs": None}
    rows = [{"name": i.name, "tenant": i.tenant, "passages": i.passages, "index_bytes": i.index_bytes,
             "raw_text_bytes": i.raw_text_bytes, "text_store_bytes": i.text_store_bytes,
             "index_ratio": i.index_ratio, "updated_at": i.updated_at, "version": i.version}
            for i in infos[:max_rows]]
    job_rows, jobs_reason = jobs.list_jobs(svc)
    reason = None if rows else f"no index has been built under {svc.settings.path('indexes')} yet"
    return {"available": bool(rows), "reason": reason, "indexes": rows, "count": len(infos),
            "passages": sum(i.passages for i in infos), "index_bytes": sum(i.index_bytes for i in infos),
            "raw_text_bytes": sum(i.raw_text_bytes for i in infos), "jobs": job_rows, "jobs_reason": jobs_reason}


def collect(svc: Any, savings: Savings, cfg: DashboardConfig, window: dict[str, Buckets]) -> dict[str, Any]:
    """Everything the page shows. `window`: latency buckets over the recent window, per backend."""
    return {
        "generated_at": time.time(),
        "sample_interval_s": cfg.sample_interval_s,
        "cache": cache_part(svc, savings, cfg),
        "kv": kv_part(svc),
        "tiers": tiers_part(svc),
        "backends": backends_part(svc, window),
        "indexes": indexes_part(svc),
    }


def window_of(now: dict[str, Buckets], before: dict[str, Buckets] | None) -> dict[str, Buckets]:
    return {name: diff(b, (before or {}).get(name)) for name, b in now.items()}
