"""An opened index: one immutable version, searchable from many threads."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiergate.config import Settings
from tiergate.errors import ConfigError, InvalidRequestError
from tiergate.index import catalog
from tiergate.index.csr import decode_graph
from tiergate.index.errors import CorruptIndexError
from tiergate.index.manifest import Manifest, read_manifest
from tiergate.index.pq import PQ, unpack_codes
from tiergate.index.search import GraphSearcher, Hits, SearchParams, auto_recompute, rerank
from tiergate.index.textstore import TextStore

Filters = Mapping[str, Any]  # field -> value, or a list/tuple/set of accepted values


@dataclass
class Hit:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": round(float(self.score), 6), "text": self.text, "metadata": self.metadata}


@dataclass
class SearchStats:
    recomputed: int  # exact re-scorings (embedder calls' passages) for this query
    visited: int  # nodes scored with PQ


@dataclass
class IndexInfo:
    name: str
    tenant: str
    passages: int
    deleted: int
    raw_text_bytes: int
    text_store_bytes: int
    index_bytes: int  # everything on disk except the text store
    files: dict[str, int]
    model_id: str
    dim: int
    pq: dict[str, Any]
    params: dict[str, Any]
    created_at: float
    updated_at: float
    version: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def index_ratio(self) -> float:
        return self.index_bytes / max(1, self.raw_text_bytes)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["index_ratio"] = round(self.index_ratio, 5)
        d["index_bytes_per_passage"] = round(self.index_bytes / max(1, self.passages), 2)
        return d


def _load_npy(folder: Path, name: str) -> np.ndarray:
    try:
        return np.load(folder / name, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{folder / name}: index file is unreadable: {exc}") from exc


class Index:
    """A searchable snapshot of one index version. Updates produce a new version (see updates.py)."""

    def __init__(self, folder: Path, manifest: Manifest, *, embedder: Any = None, settings: Settings | None = None,
                 cache_vectors: int = 0, vector_store: Any = None) -> None:
        self.folder = folder
        self.manifest = manifest
        self.name, self.tenant = manifest.name, manifest.tenant
        self._settings = settings
        self._embedder = embedder
        self._lock = threading.Lock()
        try:
            csr = decode_graph(_load_npy(folder, "graph_degrees.npy"), _load_npy(folder, "graph_edges.npy"))
        except ValueError as exc:
            raise CorruptIndexError(f"{folder}: graph files are inconsistent: {exc}") from exc
        books = _load_npy(folder, "pq_codebooks.npy").astype(np.float32)
        pq = PQ(books, int(manifest.pq["nbits"]))
        codes = unpack_codes(_load_npy(folder, "pq_codes.npy"), pq.nbits, pq.m)
        if csr.n != manifest.nodes or len(codes) != manifest.nodes or pq.dim != manifest.dim:
            raise CorruptIndexError(
                f"{folder}: files disagree with the manifest (graph {csr.n}, codes {len(codes)}, "
                f"manifest {manifest.nodes} nodes of dim {manifest.dim})"
            )
        self.searcher = GraphSearcher(csr, np.asarray(manifest.stats.get("entry", [0])), pq, codes)
        self.text = TextStore([folder / s for s in manifest.text_segments])
        if len(self.text) != manifest.nodes:
            raise CorruptIndexError(f"{folder}: text store has {len(self.text)} rows, manifest {manifest.nodes}")
        self.deleted = np.zeros(manifest.nodes, dtype=bool)
        if (folder / "deleted.npy").is_file():
            bits = _load_npy(folder, "deleted.npy")
            self.deleted = np.unpackbits(bits, count=manifest.nodes).astype(bool)
        self._ids: list[str] | None = None
        self._node_of: dict[str, int] | None = None
        self._fields: dict[str, list[Any]] = {}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_vectors
        self._cache_lock = threading.Lock()
        self._vector_store = vector_store  # optional TieredStore for hot re-computed embeddings

    # ------------------------------------------------------------ lookups

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self.text.column("id")
        return self._ids

    def node_of(self, passage_id: str) -> int | None:
        if self._node_of is None:
            self._node_of = {pid: i for i, pid in enumerate(self.ids) if not self.deleted[i]}
        return self._node_of.get(passage_id)

    @property
    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from tiergate.models import load_embedder

                if self._settings is None:
                    raise ConfigError("no embedder given and no settings to load one from")
                self._embedder = load_embedder(self._settings.models)
            if self._embedder.model_id != self.manifest.model_id:
                raise ConfigError(
                    f"index {self.name!r} was built with {self.manifest.model_id}, "
                    f"but the configured embedder is {self._embedder.model_id}"
                )
            return self._embedder

    @property
    def default_recompute(self) -> int:
        """Re-scorings per query at the defaults: a token budget, so more for short passages, raised
        to the depth calibrated at build where the PQ codes are coarse for the corpus."""
        m = self.manifest
        return max(auto_recompute(m.raw_text_bytes / max(1, m.passages)), m.recompute or 0)

    def admit_mask(self, filters: Filters | None) -> np.ndarray | None:
        """Nodes a search may return: not deleted, and matching every filter field."""
        mask = ~self.deleted if self.deleted.any() else None
        for key, want in (filters or {}).items():
            values = self._field(key)
            accepted = list(want) if isinstance(want, (list, tuple, set, frozenset)) else [want]
            keys = {_hashable(v) for v in accepted}
            match = np.fromiter((_hashable(v) in keys for v in values), dtype=bool, count=len(values))
            mask = match if mask is None else mask & match
        return mask

    def _field(self, key: str) -> list[Any]:
        if not isinstance(key, str) or not key:
            raise InvalidRequestError("filter field names must be non-empty strings", param="filters")
        if key not in self._fields:
            import json

            missing = object()
            self._fields[key] = [
                json.loads(m).get(key, missing) for m in self.text.column("metadata")
            ]
        return self._fields[key]

    # ------------------------------------------------------------ search

    def exact_vectors(self, nodes: np.ndarray) -> np.ndarray:
        """Exact embeddings of nodes: re-embedded from their text (a small LRU keeps hot ones)."""
        out = np.empty((len(nodes), self.manifest.dim), dtype=np.float32)
        todo = []
        with self._cache_lock:
            for i, u in enumerate(nodes.tolist()):
                v = self._cache.get(u) if self._cache_size else None
                if v is None:
                    todo.append(i)
                else:
                    out[i] = v
        if todo:
            texts = self.text.texts(nodes[todo])
            vecs = self._shared_vectors(texts)
            out[todo] = vecs
            if self._cache_size:
                with self._cache_lock:
                    for i, v in zip(todo, vecs, strict=True):
                        self._cache[int(nodes[i])] = v
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return out

    def _shared_vectors(self, texts: list[str]) -> np.ndarray:
        """Embed texts, reusing vectors kept in the tiered store (shared by replicas) when given."""
        store = self._vector_store
        if store is None:
            return self.embedder.encode(texts, batch_size=min(256, max(1, len(texts))))
        import hashlib

        # Content-addressed keys: valid across versions, indexes and replicas of the same model.
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        ns = "index-vectors/" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.manifest.model_id)[:100]
        found = store.get_many(ns, keys, as_="numpy")
        missing = [i for i, key in enumerate(keys) if key not in found]
        out = np.empty((len(texts), self.manifest.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            if key in found:
                out[i] = found[key]
        if missing:
            vecs = self.embedder.encode([texts[i] for i in missing], batch_size=min(256, len(missing)))
            out[missing] = vecs
            store.put_many(ns, [(keys[i], vecs[j].copy()) for j, i in enumerate(missing)])
        return out

    def search_vectors(self, queries: np.ndarray, params: SearchParams, filters: Filters | None = None) -> list[Hits]:
        params = params.resolved()
        admit = self.admit_mask(filters)
        if admit is not None and not admit.any():
            return [Hits(np.zeros(0, np.int64), np.zeros(0, np.float32), 0, 0) for _ in queries]
        cands = self.searcher.search_candidates(queries, params, admit)
        margin = self.manifest.margin if params.margin is None else params.margin
        return rerank(queries, cands, self.exact_vectors, params.k, margin)

    def search_batch(self, queries: Sequence[str], k: int = 10, *, ef: int | None = None,
                     recompute: int | None = None, margin: float | None = None, filters: Filters | None = None,
                     tenant: str | None = None, with_stats: bool = False) -> Any:
        """Top-k passages per query. One embedder call for the queries and one per re-scoring round.

        `recompute` caps the exact re-scorings per query; within it, candidates whose PQ score plus
        `margin` (default: the PQ error calibrated at build) cannot reach the k-th exact score are
        skipped. A larger margin re-scores more of them: higher recall for more embedding work."""
        if isinstance(queries, str):
            raise InvalidRequestError("search_batch takes a list of queries", param="queries")
        if not 1 <= k <= 1000:
            raise InvalidRequestError("k must be between 1 and 1000", param="k")
        if tenant is not None:
            filters = {**(filters or {}), "tenant": tenant}
        base = SearchParams(k=k)
        rc = recompute or max(self.default_recompute, 2 * k + k // 2)
        if margin is not None and not margin >= 0:
            raise InvalidRequestError("margin must be a non-negative number", param="margin")
        params = SearchParams(k=k, ef=ef or max(base.ef, 2 * k, 2 * rc), recompute=rc, margin=margin)
        if not queries:
            return ([], []) if with_stats else []
        qv = self.embedder.encode(list(queries), batch_size=min(256, len(queries)))
        found = self.search_vectors(qv, params, filters)
        results = [self._hits(h) for h in found]
        if with_stats:
            return results, [SearchStats(h.recomputed, h.visited) for h in found]
        return results

    def search(self, query: str, k: int = 10, **kwargs: Any) -> list[Hit]:
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError("query must be a non-empty string", param="query")
        return self.search_batch([query], k, **kwargs)[0]

    def _hits(self, h: Hits) -> list[Hit]:
        if len(h.ids) == 0:
            return []
        texts = self.text.texts(h.ids)
        metas = self.text.metadata(h.ids)
        ids = self.ids
        return [Hit(ids[int(u)], float(s), t, m) for u, s, t, m in zip(h.ids, h.scores, texts, metas, strict=True)]

    # ------------------------------------------------------------ info

    def info(self) -> IndexInfo:
        return make_info(self.folder, self.manifest)


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        import json

        return json.dumps(v, sort_keys=True)
    return v


def make_info(folder: Path, m: Manifest) -> IndexInfo:
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    text = sum(files.get(s, 0) for s in m.text_segments)
    return IndexInfo(
        name=m.name, tenant=m.tenant, passages=m.passages, deleted=m.nodes - m.passages,
        raw_text_bytes=m.raw_text_bytes, text_store_bytes=text, index_bytes=sum(files.values()) - text,
        files=files, model_id=m.model_id, dim=m.dim, pq=m.pq, params=m.params, created_at=m.created_at,
        updated_at=m.updated_at, version=folder.name, stats={k: v for k, v in m.stats.items() if k != "entry"},
    )


def open_index(settings: Settings, name: str, tenant: str = "default", *, embedder: Any = None,
               verify: bool = True, cache_vectors: int = 0, vector_store: Any = None) -> Index:
    """Open the live version of an index.

    verify: check the index files' checksums. cache_vectors: keep this many re-computed passage
    embeddings in a per-index LRU. vector_store: a `tiergate.tiers.TieredStore` to keep them in
    instead (shared across indexes and replicas; the index works the same without it).
    """
    folder = catalog.index_dir(settings, name, tenant)
    for attempt in range(3):  # a concurrent update may remove the version between the two reads
        version = catalog.current_version(folder)
        try:
            manifest = read_manifest(version, verify=verify)
            return Index(version, manifest, embedder=embedder, settings=settings, cache_vectors=cache_vectors,
                         vector_store=vector_store)
        except CorruptIndexError:
            if attempt == 2 or catalog.current_version(folder) == version:
                raise
    raise AssertionError("unreachable")


def index_info(settings: Settings, name: str, tenant: str = "default") -> IndexInfo:
    version = catalog.current_version(catalog.index_dir(settings, name, tenant))
    return make_info(version, read_manifest(version, verify=False))


def list_indexes(settings: Settings, tenant: str | None = "default") -> list[IndexInfo]:
    """Indexes of one tenant (or of all tenants with tenant=None); unreadable ones are skipped."""
    out = []
    for t, n in catalog.list_names(settings, tenant):
        try:
            out.append(index_info(settings, n, t))
        except CorruptIndexError:
            continue
    return out


def delete_index(settings: Settings, name: str, tenant: str = "default") -> None:
    catalog.remove(settings, name, tenant)
