"""Table columns and charts of the page, declared once: the server renders the first view with
them and the page's script re-renders the same columns from the JSON it polls."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: str = "num"  # formatter name, the same in formats.py and dashboard.js
    hint: str = ""


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    series: str  # comma-separated keys; '*' matches one name ("cache.cat.*.hit_rate")
    fmt: str = "num"


C = Column
TABLES: dict[str, list[Column]] = {
    "cache.categories": [
        C("name", "Category", "text"), C("hit_rate", "Hit rate", "pct"), C("exact", "Exact", "int"),
        C("semantic", "Semantic", "int"), C("miss", "Miss", "int"), C("bypass", "Bypass", "int"),
        C("threshold", "Threshold", "thr", "similarity needed for a semantic hit, as moved by the error budget"),
        C("false_hit_rate", "False hits", "pct", "disagreeing verified samples at the threshold in force"),
        C("false_hit_budget", "Budget", "pct"), C("verified", "Verified", "int"),
        C("entries", "Entries", "int"), C("payload_bytes", "Size", "bytes"), C("ttl_s", "TTL", "dur"),
    ],
    "cache.tenants": [
        C("name", "Tenant", "text"), C("hit_rate", "Hit rate", "pct"), C("exact", "Exact", "int"),
        C("semantic", "Semantic", "int"), C("miss", "Miss", "int"), C("bypass", "Bypass", "int"),
        C("entries", "Entries", "int"), C("payload_bytes", "Size", "bytes"),
    ],
    "tiers.tiers": [
        C("name", "Tier", "text"), C("used_bytes", "Used", "bytes"), C("budget_bytes", "Budget", "bytes"),
        C("usage", "Use", "bar"), C("objects", "Objects", "int"), C("hits", "Hits", "int"),
        C("misses", "Misses", "int"), C("evictions", "Evictions", "int"), C("promotions", "Promotions", "int"),
        C("demotions", "Demotions", "int"), C("errors", "Errors", "int"),
    ],
    "backends.backends": [
        C("name", "Backend", "text"), C("kind", "Kind", "text"), C("ready", "Ready", "bool"),
        C("requests", "Requests", "int"), C("errors", "Failed attempts", "int"),
        C("p50_s", "p50", "secs", "over the last minute"), C("p99_s", "p99", "secs", "over the last minute"),
        C("queue_depth", "Queue", "int"),
    ],
    "indexes.indexes": [
        C("tenant", "Tenant", "text"), C("name", "Index", "text"), C("passages", "Passages", "int"),
        C("index_bytes", "Index size", "bytes"), C("raw_text_bytes", "Raw text", "bytes"),
        C("index_ratio", "Index / text", "pct"), C("updated_at", "Updated", "age"),
    ],
    "indexes.jobs": [
        C("id", "Job", "text"), C("tenant", "Tenant", "text"), C("index", "Index", "text"),
        C("state", "State", "text"), C("stage", "Stage", "text"), C("progress", "Progress", "bar"),
        C("cancel", "", "cancel"),
    ],
}

CHARTS: dict[str, list[Chart]] = {
    "cache": [
        Chart("lookups", "Lookups per interval", "cache.exact,cache.semantic,cache.miss", "int"),
        Chart("hitrate", "Hit rate by category", "cache.hit_rate,cache.cat.*.hit_rate", "pct"),
        Chart("tenants", "Hit rate by tenant", "cache.tenant.*.hit_rate", "pct"),
        Chart("falsehits", "False-hit rate by category", "cache.cat.*.false_hit_rate", "pct"),
        Chart("saved", "Tokens saved per interval", "cache.saved.tokens", "int"),
    ],
    "kv": [
        Chart("kvrate", "Chunk hit rate", "kv.chunk_hit_rate", "pct"),
        Chart("kvtokens", "Prompt tokens per interval", "kv.tokens_reused,kv.tokens_recomputed,kv.tokens_computed",
              "int"),
    ],
    "tiers": [Chart("tierbytes", "Bytes used", "tier.*.used_bytes", "bytes")],
    "backends": [
        Chart("latency", "Latency p50 / p99", "backend.*.p50_s,backend.*.p99_s", "secs"),
        Chart("requests", "Requests per interval", "backend.*.requests", "int"),
    ],
}
