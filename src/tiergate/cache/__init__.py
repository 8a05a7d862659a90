"""Category-aware semantic response cache.

The service calls, per chat request (blocking parts from a worker thread):

    lookup = cache.lookup(tenant, model, request, category_hint=header_or_field)
    headers.update(lookup.headers())            # X-Tiergate-Cache / -Category / -Similarity
    if lookup.hit:                               # "exact" or "semantic"
        replay lookup.payload (the stored OpenAI JSON; re-chunk it as SSE for a stream)
    else:                                        # "miss" or "bypass" (a sampled hit is a miss)
        payload = backend(...)                   # complete, successful response only
        if not no_store:
            cache.insert(tenant, model, request, payload, ttl_override=header_ttl, lookup=lookup)

`insert(..., lookup=lookup)` reuses the query embedding and, when the lookup carries a
verification sample, compares the fresh answer with the cached one first (the error budget).
`Cache-Control: no-cache` skips `lookup`; `no-store` skips `insert`.
"""

from tiergate.cache.config import BudgetConfig, CacheConfig, CategoryConfig, default_categories
from tiergate.cache.entries import EntryStore, MemoryEntryStore
from tiergate.cache.keys import cacheable, context_key, exact_key, parse_request
from tiergate.cache.semantic import Lookup, SemanticCache, VerifySample

__all__ = [
    "BudgetConfig",
    "CacheConfig",
    "CategoryConfig",
    "EntryStore",
    "Lookup",
    "MemoryEntryStore",
    "SemanticCache",
    "VerifySample",
    "cacheable",
    "context_key",
    "default_categories",
    "exact_key",
    "parse_request",
]
