"""SemanticCache: exact and semantic lookups of complete chat responses, per tenant.

Per request (see the package docstring for the service's side):

1. Exact: the hash of everything that changes the output; a hit replays the stored response.
2. Semantic: the last user turn is embedded and searched in the tenant's index for its
   category. A candidate hits only if it was made with the same setting (model, system prompt,
   tools, sampling parameters), a compatible earlier conversation, a similarity at or over the
   category's threshold, and the guard finds no meaning-changing difference.
3. A sampled share of would-be hits is returned as a miss carrying a `VerifySample`; the
   caller sends the request to the backend as usual and the fresh answer is compared with the
   cached one (in `insert`, or `verify`). So are near misses just under the threshold, at no
   extra cost. The comparisons keep each category's false-hit rate within its budget.

Thread-safe: embedding and store I/O run outside the lock; index and bookkeeping inside it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from tiergate.cache.ann import AnnIndex, vector_range
from tiergate.cache.batcher import LookupBatcher
from tiergate.cache.budget import ThresholdController
from tiergate.cache.categories import CategoryClassifier, Classification, Encoder
from tiergate.cache.compare import AnswerComparator, Verdict
from tiergate.cache.config import CacheConfig, CategoryConfig
from tiergate.cache.encoder import query_encoder
from tiergate.cache.entries import Entry, EntryStore, Meta, decode_meta, encode_meta, is_current, tenant_namespace
from tiergate.cache.guard import Guard
from tiergate.cache.invalidation import Invalidator
from tiergate.cache.keys import RequestView, cacheable, key_label, parse_request
from tiergate.cache.lexicon import Lexicon
from tiergate.cache.metrics import CacheMetrics
from tiergate.cache.table import EntryTable
from tiergate.errors import InvalidRequestError

log = logging.getLogger(__name__)

Outcome = Literal["exact", "semantic", "miss", "bypass"]
_REGISTRY_KEY = "tenants"
_QUICK_WAIT_S = 0.002  # longest an event loop waits for the lock in `quick`


@dataclass(frozen=True)
class VerifySample:
    """A cached answer to check against the backend's fresh answer to the same request."""

    kind: Literal["hit", "probe"]  # a sampled would-be hit, or a near miss under the threshold
    tenant: str
    category: str
    entry_id: str
    similarity: float


@dataclass
class Lookup:
    outcome: Outcome
    category: str | None = None
    similarity: float | None = None
    payload: bytes | None = None
    entry_id: str | None = None
    sample: VerifySample | None = None
    threshold: float | None = None
    reason: str | None = None
    view: RequestView | None = field(default=None, repr=False)
    vector: np.ndarray | None = field(default=None, repr=False)
    classification: Classification | None = field(default=None, repr=False)

    @property
    def hit(self) -> bool:
        return self.outcome in ("exact", "semantic")

    @property
    def sampled(self) -> bool:
        """A would-be hit held back to be verified: serve the backend's answer this time."""
        return self.sample is not None and self.sample.kind == "hit"

    def headers(self) -> dict[str, str]:
        out = {"X-Tiergate-Cache": self.outcome}
        if self.category:
            out["X-Tiergate-Category"] = self.category
        if self.outcome == "semantic" and self.similarity is not None:
            out["X-Tiergate-Similarity"] = f"{self.similarity:.4f}"
        return out


class SemanticCache:
    def __init__(
        self,
        config: CacheConfig,
        embedder: Encoder,
        store: EntryStore,
        *,
        registry: CollectorRegistry | None = None,
        lexicon: Lexicon | None = None,
        redis_url: str | None = None,
        clock: Any = time.time,
        rng: random.Random | None = None,
        load: bool = True,
    ) -> None:
        self.config = config
        self.embedder = embedder
        self.store = store
        self.clock = clock
        self.rng = rng or random.Random()
        self.guard = Guard(lexicon or Lexicon.load(), tokenizer_words(embedder))
        # Queries are embedded on the encoder's fast path (the embedder's vectors, or their int8 twins).
        self.encoder = query_encoder(embedder, config.query_precision)
        self.classifier = CategoryClassifier(config, self.encoder)
        self.comparator = AnswerComparator(self.encoder, min_similarity=config.budget.answer_similarity)
        self.batcher = LookupBatcher(self)
        self.metrics = CacheMetrics(registry) if registry is not None else None
        self._lock = threading.RLock()
        self._parts: dict[tuple[str, str], EntryTable] = {}
        self._tenant_parts: dict[str, dict[str, EntryTable]] = {}
        # 8-bit vectors on a grid that fits this model's embeddings (see ann.vector_range).
        examples = self.classifier.example_vectors()
        self._vector_range = vector_range(examples) if config.ann.vector_bits == 8 else None
        self._tenants: dict[str, str] = {}  # tenant -> namespace
        self._counts: dict[tuple[str, str], Counter[str]] = {}
        self._counts_lock = threading.Lock()  # counting never waits for a search holding `_lock`
        self._pressure: dict[str, float] = {}
        self._pressure_changes: Counter[str] = Counter()
        self.controllers = {
            c.name: ThresholdController(c, config.budget, rng=self.rng) for c in config.categories
        }
        for c in config.categories:
            self._gauge_threshold(c.name)
        if load:
            self._load()
        url = redis_url if redis_url is not None else config.redis_url
        self.invalidator = Invalidator(url, config.channel, self._on_message) if url else None

    def close(self) -> None:
        self.batcher.close()
        if self.invalidator is not None:
            self.invalidator.close()

    # ------------------------------------------------------------------ lookup

    def lookup(
        self, tenant: str, model: str, request: dict[str, Any], category_hint: str | None = None
    ) -> Lookup:
        """Find a stored response for this request. Blocking (embeds the query): call it from a
        worker thread. Raises InvalidRequestError for a malformed request or unknown category."""
        t0 = time.perf_counter()
        return self._record(tenant, self._lookup(tenant, model, request, category_hint), t0)

    def quick(self, tenant: str, model: str, request: dict[str, Any], category_hint: str | None = None
              ) -> Lookup | None:
        """The lookup, counted, when it needs neither an embedding nor I/O: a bypass the request
        alone decides, or an exact hit whose answer is in memory. Cheap enough for the event loop
        (it waits at most `_QUICK_WAIT_S` for the lock); None means "do the full `lookup`".
        Raises like `lookup`."""
        t0 = time.perf_counter()
        view = parse_request(tenant, model, request)
        result = self._bypass(tenant, model, view, category_hint) or self._exact_in_memory(tenant, view)
        return None if result is None else self._record(tenant, result, t0)

    def _exact_in_memory(self, tenant: str, view: RequestView) -> Lookup | None:
        # A search or an insert may hold the lock: a short wait on the loop costs a hit less
        # than the batch path would (a thread hop and a queue behind the misses' embeddings).
        if not self._lock.acquire(timeout=_QUICK_WAIT_S):
            return None
        try:
            entry, now = self._find(tenant, key_label(view.exact_key)), self.clock()
            if entry is None or entry.expired(now):
                return None
            payload = self.store.peek(self._ns(tenant), f"p/{entry.id}")
            if payload is None:
                return None
            self._touch(entry, now)
        finally:
            self._lock.release()
        return Lookup("exact", entry.category, 1.0, bytes(payload), entry.id, view=view)

    def lookup_many(
        self, items: list[tuple[str, str, dict[str, Any], str | None]], *, errors: bool = False
    ) -> list[Lookup | InvalidRequestError]:
        """`lookup` for several requests (tenant, model, request, category_hint) with one batched
        embedding pass: a worker that drains a queue of concurrent requests gets several times
        the throughput of one-at-a-time lookups. A malformed request (or unknown category) comes
        back as bypass, or with `errors` as the InvalidRequestError `lookup` would raise."""
        t0 = time.perf_counter()
        queries: dict[int, str] = {}
        for i, (tenant, model, request, _hint) in enumerate(items):
            try:
                view = parse_request(tenant, model, request)
            except InvalidRequestError:
                continue
            if view.semantic_ok and len(view.query) <= self.config.max_query_chars and not self._stored(view):
                queries[i] = view.query  # an exact hit needs no embedding
        vectors = dict(zip(queries, self.encoder.encode(list(queries.values())), strict=True)) if queries else {}
        found = self._search_many({i: items[i][0] for i in vectors}, vectors)
        out = []
        for i, (tenant, model, request, hint) in enumerate(items):
            try:
                result = self._lookup(tenant, model, request, hint, vectors.get(i), found.get(i))
            except InvalidRequestError as exc:
                if errors:
                    out.append(exc)
                    continue
                result = Lookup("bypass", reason=str(exc))
            out.append(self._record(tenant, result, t0))
        return out

    def _stored(self, view: RequestView) -> bool:
        with self._lock:
            entry = self._find(view.tenant, key_label(view.exact_key))
        return entry is not None and not entry.expired(self.clock())

    def _search_many(self, tenants: dict[int, str], vectors: dict[int, np.ndarray]
                     ) -> dict[int, list[tuple[int, float, str]]]:
        """The nearest entries of every query, each tenant's partitions searched once for all its
        queries; the same result `_semantic` would find one query at a time."""
        k = self.config.ann.candidates
        out: dict[int, list[tuple[int, float, str]]] = {i: [] for i in vectors}
        by_tenant: dict[str, list[int]] = {}
        for i, tenant in tenants.items():
            by_tenant.setdefault(tenant, []).append(i)
        with self._lock:
            for tenant, idx in by_tenant.items():
                mat = np.stack([vectors[i] for i in idx])
                for name, part in self._tenant_parts.get(tenant, {}).items():
                    for i, hits in zip(idx, part.search_many(mat, k), strict=True):
                        out[i].extend((label, sim, name) for label, sim in hits)
        for hits in out.values():
            hits.sort(key=lambda x: -x[1])
            del hits[k:]
        return out

    def _record(self, tenant: str, result: Lookup, t0: float) -> Lookup:
        self._count(tenant, result.category or "-", result.outcome)
        if result.sampled:
            self._count(tenant, result.category or "-", "sampled")
        if self.metrics is not None:
            self.metrics.lookups.labels(result.outcome, result.category or "none").inc()
            self.metrics.lookup_seconds.labels(result.outcome).observe(time.perf_counter() - t0)
        return result

    def _bypass(self, tenant: str, model: str, view: RequestView, hint: str | None) -> Lookup | None:
        if not self.config.enabled:
            return Lookup("bypass", reason="cache disabled")
        if model in self.config.disabled_models:
            return Lookup("bypass", reason=f"model {model!r} is not cached")
        category = self.classifier.resolve(hint) if hint else None
        why = cacheable(view, self.config.max_temperature)
        if why:
            return Lookup("bypass", category, reason=why, view=view)
        if category is not None and not self._cat(category).enabled:
            return Lookup("bypass", category, reason=f"category {category!r} is not cached", view=view)
        return None

    def _lookup(self, tenant: str, model: str, request: dict[str, Any], hint: str | None,
                vector: np.ndarray | None = None, found: list[tuple[int, float, str]] | None = None) -> Lookup:
        view = parse_request(tenant, model, request)
        early = self._bypass(tenant, model, view, hint)
        if early is not None:
            return early
        category = self.classifier.resolve(hint) if hint else None
        now = self.clock()
        label = key_label(view.exact_key)
        with self._lock:
            entry = self._find(tenant, label)
        if entry is not None and not entry.expired(now):
            payload = self.store.get(self._ns(tenant), f"p/{entry.id}", as_="bytes")
            if payload is not None:
                self._touch(entry, now)
                return Lookup("exact", entry.category, 1.0, bytes(payload), entry.id, view=view)
            self._drop([entry], "missing")
        if not view.semantic_ok or len(view.query) > self.config.max_query_chars:
            cat = category or self.config.default_category
            return Lookup("miss", cat, reason="exact only", view=view)
        if vector is None:
            vector = self.encoder.encode([view.query])[0]
        cls = self.classifier.classify(vector, category)
        cat_cfg = self._cat(cls.category)
        base = Lookup("miss", cls.category, view=view, vector=vector, classification=cls)
        if not cat_cfg.enabled:
            base.outcome, base.reason = "bypass", f"category {cls.category!r} is not cached"
            return base
        if not cat_cfg.semantic:
            base.reason = "exact only"
            return base
        return self._semantic(base, tenant, model, view, vector, cat_cfg, now, found)

    def _semantic(self, base: Lookup, tenant: str, model: str, view: RequestView, vector: np.ndarray,
                  cat: CategoryConfig, now: float, found: list[tuple[int, float, str]] | None = None) -> Lookup:
        controller = self.controllers[cat.name]
        threshold = self.threshold(cat.name, model)
        base.threshold = threshold
        band = self.config.budget.probe_band if controller.adaptive else 0.0
        setting = key_label(view.setting_key)
        context = key_label(view.context_key)
        k = self.config.ann.candidates
        # Every category partition of the tenant is searched: the query's category sets the
        # policy, but an entry filed under a neighbouring category must still be found. An entry
        # from another category needs the stricter of the two thresholds.
        with self._lock:
            parts = list(self._tenant_parts.get(tenant, {}).items())
            if found is None:
                found = [(label, sim, name) for name, part in parts for label, sim in part.search(vector, k)]
                found.sort(key=lambda x: -x[1])
            tables = dict(parts)
            candidates = [(tables[name].get(label) if name in tables else None, sim, name)
                          for label, sim, name in found[:k]]
        other = {name: self.threshold(name, model) for name, _ in parts}
        candidates = [c for c in candidates if c[2] in other]  # a partition made since the batch search
        expired = []
        for entry, sim, part_name in candidates:
            need = max(threshold, other[part_name])
            if sim < need - band:
                continue
            if entry is None or entry.tenant != tenant:
                continue
            if entry.expired(now):
                expired.append(entry)
                continue
            if entry.setting != setting or entry.model != model:
                continue
            if entry.context != context and not self._context_compatible(entry, view):
                continue
            reason = self.guard.check(view.query, entry.query)
            if reason is not None:
                if self.metrics is not None:
                    self.metrics.guard_refusals.labels(cat.name, reason).inc()
                continue
            if sim < need:
                base.sample = VerifySample("probe", tenant, cat.name, entry.id, sim)
                base.similarity = sim
                break
            if controller.should_sample():
                base.sample = VerifySample("hit", tenant, cat.name, entry.id, sim)
                base.similarity = sim
                base.reason = "sampled for verification"
                break
            payload = self.store.get(self._ns(tenant), f"p/{entry.id}", as_="bytes")
            if payload is None:
                expired.append(entry)
                continue
            self._touch(entry, now)
            base.outcome, base.similarity, base.payload, base.entry_id = "semantic", sim, bytes(payload), entry.id
            break
        if expired:
            self._drop(expired, "ttl")
        return base

    def _context_compatible(self, entry: Entry, view: RequestView) -> bool:
        """Earlier user turns that differ in wording still match when each pair is similar and
        the guard finds no difference. Any other difference (assistant or tool turns) does not."""
        if not view.history or entry.history != len(view.history):
            return False
        blob = self.store.get(self._ns(entry.tenant), f"m/{entry.id}", as_="bytes")
        if blob is None:
            return False
        try:
            meta = decode_meta(entry.label, bytes(blob), entry.tenant)
        except ValueError:
            return False
        theirs = list(meta.history)
        if len(theirs) != len(view.history) or meta.history_shape != _shape_digest(view):
            return False
        vecs = self.encoder.encode(list(view.history) + theirs)
        n = len(theirs)
        for i in range(n):
            if float(vecs[i] @ vecs[n + i]) < self.config.context_threshold:
                return False
            if self.guard.check(view.history[i], theirs[i]) is not None:
                return False
        return True

    # ------------------------------------------------------------------ insert

    def insert(
        self,
        tenant: str,
        model: str,
        request: dict[str, Any],
        response_payload: bytes | dict[str, Any],
        category: str | None = None,
        ttl_override: float | None = None,
        lookup: Lookup | None = None,
    ) -> str | None:
        """Store a complete, successful response; returns the entry id, or None when not stored
        (disabled, uncacheable, a never-cached category, a TTL override <= 0).

        Pass the request's `lookup` to reuse its embedding and category; when it carries a
        verification sample, the fresh payload is compared with the cached answer first.
        `ttl_override` can only shorten the category's TTL.
        """
        if lookup is not None and lookup.sample is not None:
            self.verify(lookup.sample, response_payload)
        if not self.config.enabled or model in self.config.disabled_models:
            return None
        if lookup is not None and lookup.outcome == "bypass":
            return None
        view = lookup.view if lookup is not None and lookup.view is not None else parse_request(tenant, model, request)
        if cacheable(view, self.config.max_temperature):
            return None
        payload = response_payload if isinstance(response_payload, bytes) else orjson.dumps(response_payload)
        vector = lookup.vector if lookup is not None else None
        if vector is None and view.semantic_ok:
            vector = self.encoder.encode([view.query])[0]
        if category is not None:
            cat_name = self.classifier.resolve(category)
        elif lookup is not None and lookup.category is not None:
            cat_name = lookup.category
        elif vector is not None:
            cat_name = self.classifier.classify(vector).category
        else:
            cat_name = self.config.default_category
        cat = self._cat(cat_name)
        if not cat.enabled:
            return None
        ttl = cat.ttl_s
        if ttl_override is not None:
            if ttl_override <= 0:
                return None
            ttl = ttl_override if ttl is None else min(ttl, ttl_override)
        if len(payload) > cat.max_bytes:
            return None
        now = self.clock()
        label = key_label(view.exact_key)
        entry = Entry(
            label=label, tenant=tenant, category=cat.name, model=model, setting=key_label(view.setting_key),
            context=key_label(view.context_key), query=view.query, history=len(view.history),
            expires_at=None if ttl is None else now + ttl, size=len(payload),
        )
        ns = self._register(tenant)
        meta = encode_meta(entry, vector, created_at=now, history=view.history, history_shape=_shape_digest(view))
        try:  # one Redis round trip for both
            self.store.put_many(ns, {f"p/{entry.id}": payload, f"m/{entry.id}": meta}, ttl=ttl)
        except Exception:
            self._delete_stored(ns, entry.id)  # an answer without its record is never found again
            raise
        victims = self._index(entry, vector)
        self._drop(victims, "quota")
        self._count(tenant, cat.name, "inserts")
        if self.metrics is not None:
            self.metrics.inserts.labels(cat.name).inc()
        if self.invalidator is not None:
            self.invalidator.publish({"op": "insert", "tenant": tenant, "id": entry.id})
        return entry.id

    def _index(self, entry: Entry, vector: np.ndarray | None) -> list[Entry]:
        """Add an entry to memory; returns the entries the quota pushes out."""
        cat = self._cat(entry.category)
        with self._lock:
            for other in self._tenant_parts.get(entry.tenant, {}).values():
                other.remove(entry.label)  # the same request filed under another category before
            part = self._partition(entry.tenant, entry.category)
            part.add(entry, vector)
            victims = []
            while len(part) > cat.max_entries or part.bytes > cat.max_bytes:
                victim = part.least_recent()
                if victim is None or victim.label == entry.label:
                    break
                self._forget(victim)
                victims.append(victim)
            self._gauge_partition(entry.category)
        return victims

    # ------------------------------------------------------------------ verification

    def verify(self, sample: VerifySample, fresh_payload: bytes | dict[str, Any]) -> Verdict | None:
        """Compare the cached answer of a sample with the backend's fresh answer and feed the
        category's error budget. Returns the verdict, or None when the entry is gone."""
        cached = self.store.get(self._ns(sample.tenant), f"p/{sample.entry_id}", as_="bytes")
        if cached is None:
            return None
        verdict = self.comparator.compare(bytes(cached), fresh_payload)
        controller = self.controllers[sample.category]
        with self._lock:
            moved = controller.record(sample.similarity, verdict.agreed)
        self._count(sample.tenant, sample.category, "verified")
        if sample.kind == "hit" and not verdict.agreed:
            self._count(sample.tenant, sample.category, "false_hits")
            with self._lock:
                entry = self._find(sample.tenant, int(sample.entry_id, 16))
            if entry is not None:
                self._drop([entry], "false_hit")
        if self.metrics is not None:
            result = "agreed" if verdict.agreed else "disagreed"
            self.metrics.verifications.labels(sample.category, sample.kind, result).inc()
            if sample.kind == "hit" and not verdict.agreed:
                self.metrics.false_hits.labels(sample.category).inc()
            if moved:
                self.metrics.threshold_changes.labels(sample.category, "budget").inc()
                self._gauge_threshold(sample.category)
        return verdict

    # ------------------------------------------------------------------ thresholds and load

    def threshold(self, category: str, model: str | None = None) -> float:
        """The threshold in force for `category` on `model`: the learned one, loosened by the
        model's backend pressure within the category's bounds."""
        cat = self._cat(category)
        learned = self.controllers[category].threshold
        level = max(self._pressure.get("*", 0.0), self._pressure.get(model or "", 0.0))
        return max(cat.min_threshold, learned - level * cat.loosen_by)

    def set_pressure(self, model: str, level: float) -> None:
        """Report backend load for `model` ("*" for all): 0 = normal, 1 = at or over its SLO.
        Thresholds loosen by up to each category's `loosen_by`, never under `min_threshold`."""
        level = float(min(max(level, 0.0), 1.0))
        if self._pressure.get(model, 0.0) == level:
            return  # the usual case, reported on every request from the event loop: no lock to wait for
        with self._lock:
            before = {c.name: self.threshold(c.name, model) for c in self.config.categories}
            if level == 0.0:
                self._pressure.pop(model, None)
            else:
                self._pressure[model] = level
            for c in self.config.categories:
                if abs(self.threshold(c.name, model) - before[c.name]) > 1e-12:
                    self._pressure_changes[c.name] += 1
                    if self.metrics is not None:
                        self.metrics.threshold_changes.labels(c.name, "pressure").inc()

    # ------------------------------------------------------------------ invalidation

    def invalidate(
        self,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
        entry_id: str | None = None,
        prompt_prefix: str | None = None,
    ) -> int:
        """Remove matching entries here and (with Redis) on every replica. All filters given
        must match; no filter at all removes everything. Returns the number removed here."""
        filters = {"tenant": tenant, "category": category, "model": model, "entry_id": entry_id,
                   "prompt_prefix": prompt_prefix}
        n = self._invalidate(filters, "local")
        if self.invalidator is not None:
            self.invalidator.publish({"op": "invalidate", **filters})
        return n

    def _invalidate(self, f: dict[str, Any], source: str) -> int:
        prefix = (f.get("prompt_prefix") or "").lower() or None
        label = int(f["entry_id"], 16) if f.get("entry_id") else None
        with self._lock:
            victims = [
                e for (tenant, category), part in self._parts.items()
                if (f.get("tenant") is None or tenant == f["tenant"])
                and (f.get("category") is None or category == f["category"])
                for e in part.matching(f.get("model"), label, prefix)
            ]
        self._drop(victims, "invalidated")
        if self.metrics is not None and victims:
            self.metrics.invalidations.labels(source).inc(len(victims))
        return len(victims)

    def _on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "invalidate":
            self._invalidate(msg, "remote")
        elif msg.get("op") == "insert" and msg.get("tenant") and msg.get("id"):
            self._load_one(msg["tenant"], msg["id"])

    # ------------------------------------------------------------------ persistence

    def _load(self) -> None:
        """Rebuild the in-memory index from the store (restart)."""
        raw = self.store.get(self.config.namespace, _REGISTRY_KEY, as_="bytes")
        if raw is None:
            return
        now = self.clock()
        for tenant, ns in orjson.loads(bytes(raw)):
            self._tenants[tenant] = ns
            batches: dict[str, list[Meta]] = {}
            for key in self.store.keys(ns):
                if not key.startswith("m/"):
                    continue
                meta = self._read_entry(ns, key[2:], tenant)
                if meta is None:
                    continue
                if meta.entry.expired(now) or self.config.category(meta.entry.category) is None:
                    self._delete_stored(ns, meta.entry.id)
                    continue
                batches.setdefault(meta.entry.category, []).append(meta)
            for cat_name, items in batches.items():
                items.sort(key=lambda m: m.created_at)
                victims: list[Entry] = []
                for meta in items:
                    victims += self._index(meta.entry, meta.vector)
                for v in victims:
                    self._delete_stored(ns, v.id)
                log.info("cache: loaded %d entries of %s/%s", len(items) - len(victims), tenant, cat_name)

    def _read_entry(self, ns: str, entry_id: str, tenant: str) -> Meta | None:
        """The decoded record of an entry; an unreadable one is logged and deleted, and one in
        the first (JSON) format is rewritten in the current one."""
        blob = self.store.get(ns, f"m/{entry_id}", as_="bytes")
        if blob is None:
            return None
        blob = bytes(blob)
        try:
            meta = decode_meta(int(entry_id, 16), blob, tenant)
            if meta.vector is not None and meta.vector.shape != (self.embedder.dim,):
                raise ValueError(f"a {meta.vector.size}-dim vector, the embedder has {self.embedder.dim}")
        except ValueError as exc:
            log.warning("cache: unreadable entry %s/%s dropped: %s", ns, entry_id, exc)
            self._delete_stored(ns, entry_id)
            return None
        if not is_current(blob):
            self._rewrite(ns, meta)
        return meta

    def _rewrite(self, ns: str, meta: Meta) -> None:
        entry = meta.entry
        ttl = None if entry.expires_at is None else entry.expires_at - self.clock()
        if ttl is not None and ttl <= 0:
            return
        record = encode_meta(entry, meta.vector, created_at=meta.created_at, history=meta.history,
                             history_shape=meta.history_shape)
        try:
            self.store.put(ns, f"m/{entry.id}", record, ttl=ttl)
        except Exception as exc:  # the old record still serves; it is rewritten on a later start
            log.warning("cache: could not rewrite entry %s/%s in the current format: %s", ns, entry.id, exc)

    def _load_one(self, tenant: str, entry_id: str) -> None:
        ns = self._register(tenant)
        meta = self._read_entry(ns, entry_id, tenant)
        if meta is None:
            return
        if self.config.category(meta.entry.category) is None or meta.entry.expired(self.clock()):
            return
        self._drop(self._index(meta.entry, meta.vector), "quota")

    def _register(self, tenant: str) -> str:
        ns = self._tenants.get(tenant)
        if ns is not None:
            return ns
        with self._lock:
            ns = tenant_namespace(self.config.namespace, tenant)
            raw = self.store.get(self.config.namespace, _REGISTRY_KEY, as_="bytes")
            known = {t: n for t, n in orjson.loads(bytes(raw))} if raw is not None else {}
            known.update(self._tenants)
            known[tenant] = ns
            self.store.put(self.config.namespace, _REGISTRY_KEY, orjson.dumps(sorted(known.items())))
            self._tenants[tenant] = ns
        return ns

    def _ns(self, tenant: str) -> str:
        return self._tenants.get(tenant) or tenant_namespace(self.config.namespace, tenant)

    def _delete_stored(self, ns: str, entry_id: str) -> None:
        self.store.delete_many(ns, [f"p/{entry_id}", f"m/{entry_id}"])

    # ------------------------------------------------------------------ bookkeeping

    def _cat(self, name: str) -> CategoryConfig:
        cat = self.config.category(name)
        if cat is None:
            raise KeyError(f"unknown category {name!r}")
        return cat

    def _partition(self, tenant: str, category: str) -> EntryTable:
        part = self._parts.get((tenant, category))
        if part is None:
            a = self.config.ann
            ann = AnnIndex(self.embedder.dim, m=a.m, ef_construction=a.ef_construction, ef_search=a.ef_search,
                           compact_ratio=a.compact_ratio, vector_range=self._vector_range)
            part = EntryTable(tenant, category, ann)
            self._parts[(tenant, category)] = part
            self._tenant_parts.setdefault(tenant, {})[category] = part
        return part

    def _find(self, tenant: str, label: int) -> Entry | None:
        """The tenant's entry under `label`, in whichever category it is filed (lock held)."""
        for part in self._tenant_parts.get(tenant, {}).values():
            entry = part.get(label)
            if entry is not None:
                return entry
        return None

    def entry(self, tenant: str, entry_id: str) -> Entry | None:
        """The tenant's entry with this id, or None."""
        with self._lock:
            return self._find(tenant, int(entry_id, 16))

    def _forget(self, entry: Entry) -> bool:
        """Remove from memory (lock held). False when it was not there, or a later entry has
        taken its label."""
        part = self._parts.get((entry.tenant, entry.category))
        return part is not None and part.remove(entry.label, entry.stamp)

    def _drop(self, entries: list[Entry], reason: str) -> None:
        if not entries:
            return
        with self._lock:
            gone = [e for e in entries if self._forget(e) or reason == "quota"]
            for cat in {e.category for e in gone}:
                self._gauge_partition(cat)
        for e in gone:
            self._delete_stored(self._ns(e.tenant), e.id)
            self._count(e.tenant, e.category, "evictions")
            if self.metrics is not None:
                self.metrics.evictions.labels(e.category, reason).inc()

    def _touch(self, entry: Entry, now: float) -> None:
        with self._lock:
            part = self._parts.get((entry.tenant, entry.category))
            if part is not None:
                part.touch(entry.label)

    def _count(self, tenant: str, category: str, what: str) -> None:
        with self._counts_lock:
            self._counts.setdefault((tenant, category), Counter())[what] += 1

    def _gauge_partition(self, category: str) -> None:
        if self.metrics is None:
            return
        parts = [p for (_, c), p in self._parts.items() if c == category]
        self.metrics.entries.labels(category).set(sum(len(p) for p in parts))
        self.metrics.bytes.labels(category).set(sum(p.bytes for p in parts))

    def _gauge_threshold(self, category: str) -> None:
        if self.metrics is not None:
            self.metrics.threshold.labels(category).set(self.controllers[category].threshold)

    # ------------------------------------------------------------------ admin

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts.values())

    def stats(self) -> dict[str, Any]:
        """Counts per tenant and category, thresholds in force, entries and bytes."""
        with self._counts_lock:
            counts = [(key, dict(c)) for key, c in self._counts.items()]
        with self._lock:
            tenants: dict[str, dict[str, dict[str, int]]] = {}
            for (tenant, cat), row in counts:
                tenants.setdefault(tenant, {})[cat] = row
            for (tenant, cat), part in self._parts.items():
                row = tenants.setdefault(tenant, {}).setdefault(cat, {})
                row["entries"] = len(part)
                row["payload_bytes"] = part.bytes
            categories = {}
            for c in self.config.categories:
                ctl = self.controllers[c.name]
                n, errors = ctl.measured()
                categories[c.name] = {
                    "enabled": c.enabled,
                    "semantic": c.semantic,
                    "threshold_start": c.threshold,
                    "threshold": ctl.threshold,
                    "threshold_under_pressure": {m: self.threshold(c.name, m) for m in self._pressure},
                    "bounds": [c.min_threshold, c.max_threshold],
                    "target_false_hit_rate": c.target_false_hit_rate,
                    "observations": len(ctl.observations),
                    "observed_at_threshold": n,
                    "disagreements_at_threshold": errors,
                    "sample_rate": ctl.sample_rate(),
                    "threshold_changes": {"budget": ctl.changes, "pressure": self._pressure_changes[c.name]},
                    "ttl_s": c.ttl_s,
                    "max_entries": c.max_entries,
                    "max_bytes": c.max_bytes,
                    "entries": sum(len(p) for (_, cc), p in self._parts.items() if cc == c.name),
                    "payload_bytes": sum(p.bytes for (_, cc), p in self._parts.items() if cc == c.name),
                }
            index_bytes = sum(p.memory_bytes() for p in self._parts.values())
            return {
                "enabled": self.config.enabled,
                "entries": sum(len(p) for p in self._parts.values()),
                "payload_bytes": sum(p.bytes for p in self._parts.values()),
                "index_bytes": index_bytes,
                "pressure": dict(self._pressure),
                "categories": categories,
                "tenants": tenants,
                "replicated": self.invalidator is not None,
            }


def tokenizer_words(embedder: Any) -> set[str]:
    """Whole-word, alphabetic tokens of the embedder's tokenizer (empty when it has none)."""
    tok = getattr(embedder, "tokenizer", None)
    vocab = tok.get_vocab() if tok is not None and hasattr(tok, "get_vocab") else {}
    return {w for w in vocab if w.isalpha() and w.islower() and len(w) > 1}


def _shape_digest(view: RequestView) -> int:
    return key_label(view.shape_key)
