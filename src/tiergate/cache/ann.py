"""In-memory ANN over query embeddings: one HNSW graph per (tenant, category) partition.

faiss `IndexHNSWSQ` with fp16 vectors and inner product (cosine on normalised vectors): about
768 bytes of vector plus ~130 bytes of graph per entry, a third of hnswlib's float32 storage.
HNSW in faiss has no delete, so deletions are tombstones filtered out of results; a partition
is rebuilt from its own stored vectors once the tombstoned share passes `compact_ratio`.
Labels are the caller's 63-bit entry ids. Not thread-safe on its own: the cache holds a lock.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class AnnIndex:
    def __init__(self, dim: int, *, m: int = 16, ef_construction: int = 80, ef_search: int = 48,
                 compact_ratio: float = 0.25) -> None:
        self.dim = dim
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.compact_ratio = compact_ratio
        self._index = self._new()
        self._labels = np.zeros(0, dtype=np.int64)  # faiss position -> label
        self._count = 0
        self._where: dict[int, int] = {}  # live label -> faiss position
        self._dead = 0

    def _new(self) -> Any:
        import faiss  # here, not at module level: importing the settings must not need faiss

        index = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_fp16, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        if not index.is_trained:
            index.train(np.zeros((1, self.dim), dtype=np.float32))
        return index

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, label: int) -> bool:
        return label in self._where

    def add(self, labels: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add vectors (n, dim) under labels; a label already present is replaced."""
        labels = np.asarray(labels, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(labels), self.dim)
        for label in labels:
            self.remove(int(label))
        start = self._count
        self._index.add(vectors)
        self._count += len(labels)
        if self._count > len(self._labels):
            grown = np.zeros(max(self._count, 2 * len(self._labels), 64), dtype=np.int64)
            grown[: len(self._labels)] = self._labels
            self._labels = grown
        self._labels[start: self._count] = labels
        for i, label in enumerate(labels):
            self._where[int(label)] = start + i

    def remove(self, label: int) -> bool:
        pos = self._where.pop(label, None)
        if pos is None:
            return False
        self._labels[pos] = -1
        self._dead += 1
        if self._dead > 64 and self._dead > self.compact_ratio * self._count:
            self._compact()
        return True

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest live entries as (label, cosine similarity), best first."""
        return self.search_many(np.asarray(vector).reshape(1, -1), k)[0]

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """`search` for several query vectors in one call (one pass of the index's threads)."""
        if not self._where:
            return [[] for _ in range(len(vectors))]
        want = min(self._count, k + min(self._dead, 4 * k))
        sims, pos = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), want)
        results = []
        for row_sims, row_pos in zip(sims, pos, strict=True):
            out = []
            for s, p in zip(row_sims, row_pos, strict=True):
                if p < 0:
                    continue
                label = int(self._labels[p])
                if label >= 0:
                    out.append((label, float(s)))
                    if len(out) == k:
                        break
            results.append(out)
        return results

    def vectors(self, labels: list[int]) -> np.ndarray:
        """The stored (fp16-rounded) vectors of live labels."""
        out = np.zeros((len(labels), self.dim), dtype=np.float32)
        for i, label in enumerate(labels):
            out[i] = self._index.storage.reconstruct(self._where[label])
        return out

    def _compact(self) -> None:
        live = list(self._where)
        vecs = self.vectors(live) if live else np.zeros((0, self.dim), dtype=np.float32)
        self._index = self._new()
        self._labels = np.zeros(0, dtype=np.int64)
        self._count = 0
        self._where = {}
        self._dead = 0
        if live:
            self.add(live, vecs)

    def memory_bytes(self) -> int:
        """Bytes held: vectors, graph links and the label maps (approximate for the dict)."""
        index_bytes = self._count * (self.dim * 2 + self.m * 2 * 4 + 8) + self._count // self.m * self.m * 4 * 2
        return index_bytes + self._labels.nbytes + len(self._where) * 100
