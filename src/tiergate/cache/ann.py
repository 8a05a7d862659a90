"""In-memory ANN over query embeddings: one index per (tenant, category) partition.

faiss `IndexHNSWSQ` with inner product (cosine on normalised vectors); a partition of fewer than
`flat_max` vectors is a flat `IndexScalarQuantizer` over the same codes instead. Scanning a few
thousand 384-byte codes takes well under a millisecond, is exact, and adds in microseconds,
where an HNSW insert costs a graph search (milliseconds, under the cache's lock, on every miss
that is stored). A partition moves to HNSW when it grows past `flat_max`. Vectors are kept as 8-bit
codes on a uniform grid over [-vector_range, vector_range] (384 bytes for MiniLM's 384 dims, a
half of fp16; cosines within about 0.002 of the exact ones when the range fits the model's
components, see `vector_range`), or as fp16 when no range is given. The graph adds ~140 bytes.
HNSW in faiss has no delete, so deletions are tombstones filtered out of results; a partition
is rebuilt from its own stored vectors once the tombstoned share passes `compact_ratio`.
Ids are the caller's small non-negative integers (row numbers): both directions of the id <->
position map are dense int32 arrays. Not thread-safe on its own: the cache holds a lock.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def vector_range(samples: np.ndarray, *, margin: float = 1.25) -> float:
    """The 8-bit grid's half-width for a model: its largest component over sample embeddings,
    with a margin (a component beyond it is clipped, costing that vector a little precision)."""
    if samples.size == 0:
        return 1.0  # no sample: any unit vector fits, coarsely
    return float(min(1.0, margin * float(np.abs(samples).max())))


class AnnIndex:
    def __init__(
        self,
        dim: int,
        *,
        m: int = 16,
        ef_construction: int = 80,
        ef_search: int = 48,
        compact_ratio: float = 0.25,
        vector_range: float | None = None,
        flat_max: int = 4096,
    ) -> None:
        self.dim = dim
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.compact_ratio = compact_ratio
        self.vector_range = vector_range
        self.flat_max = flat_max
        self._index = self._new(0)
        self._ids = np.zeros(0, dtype=np.int32)  # faiss position -> id (-1: deleted)
        self._pos = np.zeros(0, dtype=np.int32)  # id -> faiss position (-1: absent)
        self._count = 0  # positions used, live or deleted
        self._live = 0
        self._dead = 0

    @property
    def graph(self) -> bool:
        """Whether the index is an HNSW graph (else a flat scan)."""
        return hasattr(self._index, "hnsw")

    def _new(self, size: int) -> Any:
        """An empty index for `size` vectors: flat under `flat_max`, else HNSW."""
        import faiss  # here, not at module level: importing the settings must not need faiss

        # One thread: partitions are small, and on a busy machine an OpenMP team costs more in
        # start-up and barrier waits than it saves (the cache is faiss's only user here).
        faiss.omp_set_num_threads(1)
        sq = faiss.ScalarQuantizer
        qtype = sq.QT_fp16 if self.vector_range is None else sq.QT_8bit_uniform
        if size < self.flat_max:
            index = faiss.IndexScalarQuantizer(self.dim, qtype, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWSQ(self.dim, qtype, self.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        if self.vector_range is None:
            index.train(np.zeros((1, self.dim), dtype=np.float32))
        else:  # the grid's bounds are the range of the training vectors
            r = self.vector_range
            index.train(np.array([[-r] * self.dim, [r] * self.dim], dtype=np.float32))
        return index

    def __len__(self) -> int:
        return self._live

    def __contains__(self, ident: int) -> bool:
        return 0 <= ident < len(self._pos) and self._pos[ident] >= 0

    def add(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add vectors (n, dim) under ids; an id already present is replaced."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= np.iinfo(np.int32).max):
            raise ValueError("ANN ids are row numbers: non-negative and under 2**31")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        for ident in ids:
            self.remove(int(ident))
        if not self.graph and self._live + len(ids) >= self.flat_max:
            self._compact(extra=len(ids))  # grown past a flat scan: rebuilt as a graph
        start = self._count
        self._index.add(vectors)
        self._count += len(ids)
        self._ids = _grown(self._ids, self._count)
        self._ids[start : self._count] = ids
        if len(ids):
            self._pos = _grown(self._pos, int(ids.max()) + 1)
            self._pos[ids] = np.arange(start, self._count, dtype=np.int32)
        self._live += len(ids)

    def remove(self, ident: int) -> bool:
        if ident not in self:
            return False
        self._ids[self._pos[ident]] = -1
        self._pos[ident] = -1
        self._live -= 1
        self._dead += 1
        if self._dead > 64 and self._dead > self.compact_ratio * self._count:
            self._compact()
        return True

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest live entries as (id, cosine similarity), best first."""
        return self.search_many(np.asarray(vector).reshape(1, -1), k)[0]

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """`search` for several query vectors in one call (one pass of the index's threads)."""
        if not self._live:
            return [[] for _ in range(len(vectors))]
        want = min(self._count, k + min(self._dead, 4 * k))
        sims, pos = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), want)
        results = []
        for row_sims, row_pos in zip(sims, pos, strict=True):
            out = []
            for s, p in zip(row_sims, row_pos, strict=True):
                if p < 0:
                    continue
                ident = int(self._ids[p])
                if ident >= 0:
                    out.append((ident, float(s)))
                    if len(out) == k:
                        break
            results.append(out)
        return results

    def vectors(self, ids: list[int]) -> np.ndarray:
        """The stored (quantised) vectors of live ids."""
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for i, ident in enumerate(ids):
            out[i] = self._codes().reconstruct(int(self._pos[ident]))
        return out

    def _codes(self) -> Any:
        return self._index.storage if self.graph else self._index

    def _compact(self, extra: int = 0) -> None:
        """Rebuild from the live vectors, as the index kind that suits them plus `extra` to come."""
        live = [int(i) for i in self._ids[: self._count] if i >= 0]
        vecs = self.vectors(live) if live else np.zeros((0, self.dim), dtype=np.float32)
        self._index = self._new(len(live) + extra)
        self._ids = np.zeros(0, dtype=np.int32)
        self._pos[:] = -1
        self._count = self._live = self._dead = 0
        if live:
            self.add(live, vecs)  # decoded codes re-encode to the same codes

    def memory_bytes(self) -> int:
        """Bytes held: vector codes, for a graph its links (level 0 holds 2*m, each upper level m;
        a node reaches level l with probability m**-l) and per-node offsets and levels, and the
        id maps."""
        import faiss

        code = faiss.downcast_index(self._codes()).code_size
        per_node = 4 * (2 * self.m + self.m / (self.m - 1)) + 8 + 4 if self.graph else 0
        return int(self._count * (code + per_node)) + self._ids.nbytes + self._pos.nbytes


def _grown(arr: np.ndarray, size: int) -> np.ndarray:
    """`arr` with room for `size` items (doubling; new slots -1)."""
    if size <= len(arr):
        return arr
    grown = np.full(max(size, 2 * len(arr), 64), -1, dtype=arr.dtype)
    grown[: len(arr)] = arr
    return grown
