"""Neighbour graph: candidates from hnswlib (or an exact kNN without it), then pruning.

Pruning follows DiskANN's robust prune: a candidate is dropped when an already kept, closer
neighbour covers it (alpha * d(kept, c) <= d(node, c)); alpha > 1 keeps some longer edges, which
is what makes greedy navigation work with few edges. The highest in-degree nodes (hubs, as in
LEANN's high-degree preserving pruning) keep a larger degree, every node then gets back-edges while
it has room, and nodes are renumbered in breadth-first order so that neighbour ids are close and
delta-code into about one byte each.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from tiergate.index.csr import CSR

Progress = Callable[[str, int, int], None]


@dataclass
class GraphParams:
    degree: int | None = None  # edges kept per ordinary node; None: auto_degree(n)
    hub_degree: int | None = None  # edges kept per hub; None: twice the degree
    hub_fraction: float = 0.02  # share of nodes, by in-degree, that are hubs
    alpha: float = 1.2
    build_m: int = 16  # hnswlib M of the candidate graph
    ef_construction: int = 100
    knn: int = 32  # extra search-based candidates per node
    entries: int | None = None  # spread-out entry points; None: sqrt(n), 16..1024
    threads: int | None = None  # None: 1 below 50k nodes (deterministic), else all cores
    seed: int = 0

    def resolved(self, n: int) -> GraphParams:
        degree = self.degree or auto_degree(n)
        return replace(self, degree=degree, hub_degree=self.hub_degree or 2 * degree)


SMALL_GRAPH = 20_000  # nodes


def auto_degree(n: int) -> int:
    """Edges per node: 16, or 12 below SMALL_GRAPH nodes, where greedy search needs fewer hops.

    On 4.9k MuSiQue chunks degree 12 finds the same candidates as 16 with a quarter less graph,
    which is what keeps a ~500-byte passage's index under 8% of its text.
    """
    return 12 if n < SMALL_GRAPH else 16


def _blocks(n: int, size: int):
    for s in range(0, n, size):
        yield s, min(n, s + size)


def exact_knn(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Exact k nearest neighbours by inner product (excluding self); used without hnswlib."""
    n = len(x)
    k = min(k, n - 1)
    out = np.empty((n, k), dtype=np.int32)
    xf = np.asarray(x, dtype=np.float32)
    for s, e in _blocks(n, block):
        sims = xf[s:e] @ xf.T
        sims[np.arange(e - s), np.arange(s, e)] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
        out[s:e] = np.take_along_axis(part, order, 1)
    return out


def hnsw_candidates(x: np.ndarray, p: GraphParams, progress: Progress | None = None) -> np.ndarray:
    """(n, K) candidate ids, -1 padded: hnswlib's level-0 links plus a kNN search per node."""
    import hnswlib

    n, dim = x.shape
    threads = p.threads or (1 if n < 50_000 else (os.cpu_count() or 1))
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=p.build_m, ef_construction=p.ef_construction, random_seed=p.seed)
    for s, e in _blocks(n, 20_000):
        index.add_items(np.asarray(x[s:e], dtype=np.float32), np.arange(s, e), num_threads=threads)
        if progress:
            progress("graph", e, n)
    state = index.__getstate__()[0]
    size = state["size_data_per_element"]
    raw = state["data_level0"].view(np.uint8)[: n * size].reshape(n, size)
    counts = raw[:, :2].copy().view(np.uint16)[:, 0].astype(np.int64)
    max_m0 = state["max_M0"]
    links = raw[:, 4 : 4 + 4 * max_m0].copy().view(np.uint32).reshape(n, max_m0).astype(np.int64)
    labels = raw[:, state["label_offset"] : state["label_offset"] + 8].copy().view(np.uint64)[:, 0]
    labels = labels.astype(np.int64)
    links = np.where(np.arange(max_m0)[None, :] < counts[:, None], labels[links], -1)
    level0 = np.full((n, max_m0), -1, dtype=np.int64)
    level0[labels] = links
    index.set_ef(max(p.knn + 1, 64))
    k = min(p.knn + 1, n)
    knn = np.empty((n, k), dtype=np.int64)
    for s, e in _blocks(n, 20_000):
        found, _ = index.knn_query(np.asarray(x[s:e], dtype=np.float32), k=k, num_threads=threads)
        knn[s:e] = found  # self is dropped with the duplicates later
    return np.concatenate([level0, knn], axis=1)


def candidates(x: np.ndarray, p: GraphParams, progress: Progress | None = None) -> np.ndarray:
    try:
        return hnsw_candidates(x, p, progress)
    except ImportError:  # the GPU image has no hnswlib: exact kNN is fine there
        return exact_knn(x, p.knn + 2 * p.build_m).astype(np.int64)


def _dedupe_sort(x: np.ndarray, cand: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct candidates of `nodes` sorted by distance; returns (ids, distances), inf padded."""
    c = np.sort(cand, axis=1)
    dup = np.zeros_like(c, dtype=bool)
    dup[:, 1:] = c[:, 1:] == c[:, :-1]
    c[dup | (c == nodes[:, None])] = -1
    valid = c >= 0
    vec = np.asarray(x[np.where(valid, c, 0)], dtype=np.float32)  # (B, K, d)
    base = np.asarray(x[nodes], dtype=np.float32)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * np.einsum("bkd,bd->bk", vec, base), 0.0))
    dist[~valid] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(c, order, 1), np.take_along_axis(dist, order, 1)


def _bmm(vec: np.ndarray) -> np.ndarray:
    """Batched Gram matrices vec @ vec^T; torch's bmm is far faster than numpy's matmul loop."""
    try:
        import torch
    except ImportError:
        return np.matmul(vec, vec.transpose(0, 2, 1))
    t = torch.from_numpy(vec)
    return torch.bmm(t, t.transpose(1, 2)).numpy()


def robust_prune(
    x: np.ndarray, cand: np.ndarray, limits: np.ndarray, alpha: float, progress: Progress | None = None,
    nodes: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Pruned neighbour list of each row's node (node i, or nodes[i]); x[ids] gives vectors."""
    n = len(cand)
    nodes = np.arange(n) if nodes is None else np.asarray(nodes)
    out: list[np.ndarray] = []
    for s, e in _blocks(n, 1024):
        ids, dist = _dedupe_sort(x, cand[s:e], nodes[s:e])
        width = int(np.isfinite(dist).sum(1).max(initial=1))  # drop all-padding columns
        ids, dist = ids[:, :width], dist[:, :width]
        vec = np.asarray(x[np.maximum(ids, 0)], dtype=np.float32)
        pair = np.sqrt(np.maximum(2.0 - 2.0 * _bmm(vec), 0.0))  # (B, K, K), symmetric
        b, k = ids.shape
        keep = np.zeros((b, k), dtype=bool)
        count = np.zeros(b, dtype=np.int64)
        lim = limits[s:e]
        for j in range(k):
            covered = (keep[:, :j] & (alpha * pair[:, j, :j] <= dist[:, j : j + 1])).any(1)
            take = np.isfinite(dist[:, j]) & ~covered & (count < lim)
            keep[:, j] = take
            count += take
        out.extend(ids[i][keep[i]] for i in range(b))
        if progress:
            progress("prune", e, n)
    return out


def add_back_edges(x: np.ndarray, lists: list[np.ndarray], limits: np.ndarray) -> list[np.ndarray]:
    """Give each node reverse edges, closest first, while it is under its degree limit."""
    n = len(lists)
    src = np.concatenate([np.full(len(v), u, dtype=np.int64) for u, v in enumerate(lists)])
    dst = np.concatenate(lists).astype(np.int64)
    sims = np.empty(len(src), dtype=np.float32)
    for s, e in _blocks(len(src), 1 << 20):  # gathering every edge's vectors at once costs 2 x edges x dim floats
        sims[s:e] = np.einsum("ed,ed->e", np.asarray(x[src[s:e]], np.float32), np.asarray(x[dst[s:e]], np.float32))
    order = np.lexsort((-sims, dst))  # group by target, closest first
    rev_node, rev_nb = dst[order], src[order]
    bounds = np.searchsorted(rev_node, np.arange(n + 1))
    out = []
    for u in range(n):
        room = int(limits[u]) - len(lists[u])
        cur = lists[u]
        if room > 0 and bounds[u + 1] > bounds[u]:
            extra = rev_nb[bounds[u] : bounds[u + 1]]
            extra = extra[~np.isin(extra, cur)][:room]
            cur = np.concatenate([cur, extra])
        out.append(cur.astype(np.int32))
    return out


def bfs_order(csr: CSR, start: int) -> np.ndarray:
    """A breadth-first numbering from start (then any unreached nodes): order[new] = old."""
    n = csr.n
    seen = np.zeros(n, dtype=bool)
    order = [np.array([start], dtype=np.int64)]
    seen[start] = True
    frontier = order[0]
    while True:
        if len(frontier) == 0:
            rest = np.flatnonzero(~seen)
            if len(rest) == 0:
                break
            frontier = rest[:1]
            seen[frontier] = True
            order.append(frontier)
        starts, ends = csr.indptr[frontier], csr.indptr[frontier + 1]
        nb = np.concatenate([csr.indices[a:b] for a, b in zip(starts, ends, strict=True)]).astype(np.int64)
        nb = nb[~seen[nb]]
        _, first = np.unique(nb, return_index=True)
        frontier = nb[np.sort(first)]
        seen[frontier] = True
        order.append(frontier)
    return np.concatenate(order)


def relabel(csr: CSR, order: np.ndarray) -> CSR:
    """Renumber nodes: new id i is old id order[i]."""
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    degrees = np.diff(csr.indptr)[order]
    indptr = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(degrees, out=indptr[1:])
    gather = np.repeat(csr.indptr[order] - indptr[:-1], degrees) + np.arange(indptr[-1])
    return CSR(indptr, inverse[csr.indices[gather]].astype(np.int32))


def medoid(x: np.ndarray, block: int = 65536) -> int:
    mean = np.zeros(x.shape[1], dtype=np.float64)
    for s, e in _blocks(len(x), block):
        mean += np.asarray(x[s:e], dtype=np.float64).sum(0)
    best, best_score = 0, -np.inf
    for s, e in _blocks(len(x), block):
        scores = np.asarray(x[s:e], dtype=np.float32) @ mean.astype(np.float32)
        i = int(scores.argmax())
        if scores[i] > best_score:
            best, best_score = s + i, float(scores[i])
    return best


@dataclass
class Graph:
    csr: CSR
    entry: np.ndarray  # entry points: medoid first, then hubs
    order: np.ndarray  # order[new id] = old (input) position


def build_graph(x: np.ndarray, p: GraphParams, progress: Progress | None = None) -> Graph:
    n = len(x)
    p = p.resolved(n)
    if n == 1:
        return Graph(CSR.from_lists([np.zeros(0, np.int32)]), np.zeros(1, np.int64), np.zeros(1, np.int64))
    cand = candidates(x, p, progress)
    indeg = np.bincount(cand[cand >= 0].ravel(), minlength=n)
    n_hubs = max(1, round(p.hub_fraction * n))
    hubs = np.argsort(-indeg, kind="stable")[:n_hubs]
    limits = np.full(n, p.degree, dtype=np.int64)
    limits[hubs] = p.hub_degree
    lists = robust_prune(x, cand, limits, p.alpha, progress)
    lists = add_back_edges(x, lists, limits)
    start = medoid(x)
    csr = CSR.from_lists(lists)
    order = bfs_order(csr, start)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    spread = spread_entries(x, p.entries or int(np.clip(np.sqrt(n), 16, 1024)), p.seed)
    entry = np.concatenate([[start], spread, hubs[:64]])
    _, first = np.unique(entry, return_index=True)
    entry = inverse[entry[np.sort(first)]]
    return Graph(relabel(csr, order), entry.astype(np.int64), order)


def spread_entries(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Nodes closest to k-means centres of a sample: entry points that cover every region.

    A query starts from the best of these by PQ score, so it never has to cross from one
    cluster to a far one through the sparse pruned graph.
    """
    from tiergate.index.pq import kmeans_subspaces

    n = len(x)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, 40 * k), replace=False))
    xs = np.asarray(x[sample], dtype=np.float32)
    centres = kmeans_subspaces(xs[None], k, 8, rng)[0]
    nearest = (centres @ xs.T).argmax(1)
    return np.unique(sample[nearest])
