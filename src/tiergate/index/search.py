"""Search: best-first traversal on PQ scores, then exact re-scoring of only the best candidates.

Traversal is a beam search (DiskANN style): the `ef` best nodes seen so far form the pool, and
each step expands the `beam` best unexpanded ones at once, scoring their unseen neighbours with the
query's PQ lookup table. Every node is used for navigation; only nodes passing the filter (and not
deleted) become candidates. Re-scoring takes two rounds: first the `k + k // 2` best candidates,
then only those whose PQ score plus the calibrated PQ error margin could still beat the k-th
exact score, up to `recompute` in all. Each round is one batched call to the embedder (or any
`exact` function), shared by all queries of a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiergate.index.csr import CSR
from tiergate.index.pq import PQ

# ids -> (len(ids), dim) exact vectors: the embedder on passage text, or stored vectors.
ExactFn = Callable[[np.ndarray], np.ndarray]


RECOMPUTE_TOKENS = 24 * 256  # exact re-scoring budget per query, in passage tokens
RECOMPUTE_RANGE = (24, 128)  # the budget in passages stays within this
CALIBRATION_RECALL = 0.97  # recall@10 that the calibrated re-scoring depth reaches on held-in queries


def auto_recompute(mean_text_bytes: float | None, max_tokens: int = 256) -> int:
    """Most exact re-scorings per query: a budget in tokens, not passages.

    Re-embedding a 20-token gloss costs far less than a 256-token passage, so short-passage
    corpora (whose PQ ranks near-ties least well) get more re-scorings for about the same time.
    Tokens are estimated from bytes (~4 bytes a token for English, plus 2 special tokens).
    """
    if not mean_text_bytes:
        return RECOMPUTE_RANGE[0]
    tokens = min(mean_text_bytes / 4.0, max_tokens) + 2
    return int(np.clip(RECOMPUTE_TOKENS // tokens, *RECOMPUTE_RANGE))


@dataclass
class SearchParams:
    k: int = 10
    ef: int = 64  # traversal pool size: larger = better candidates, slower traversal
    recompute: int = 24  # at most this many exact re-scorings per query
    margin: float | None = None  # PQ error margin; None = the value calibrated at build
    beam: int = 4  # nodes expanded per traversal step
    brute_force_below: float = 0.02  # filters matching fewer nodes than this share scan them all

    def resolved(self) -> SearchParams:
        ef = max(self.ef, self.k, self.recompute)
        return SearchParams(self.k, ef, max(self.recompute, self.k), self.margin, self.beam,
                            self.brute_force_below)


@dataclass
class Candidates:
    ids: np.ndarray  # best first by PQ score
    scores: np.ndarray
    visited: int


@dataclass
class Hits:
    ids: np.ndarray  # node ids, best first
    scores: np.ndarray  # exact inner products
    recomputed: int
    visited: int


class GraphSearcher:
    """Traversal over one immutable graph + PQ codes. Thread-safe: no state between calls."""

    def __init__(self, csr: CSR, entry: np.ndarray, pq: PQ, codes: np.ndarray) -> None:
        self.csr = csr
        self.entry = np.asarray(entry, dtype=np.int64)
        self.pq = pq
        self.codes = codes  # (n, m) uint8, unpacked
        self._offsets = (np.arange(pq.m) * pq.ksub).astype(np.intp)

    @property
    def n(self) -> int:
        return self.csr.n

    def adc(self, lut_flat: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return lut_flat[self.codes[ids].astype(np.intp) + self._offsets].sum(1)

    def candidates(
        self, lut: np.ndarray, ef: int, want: int, admit: np.ndarray | None, beam: int = 4
    ) -> Candidates:
        """The `want` best admitted nodes by PQ score found while traversing with pool size ef."""
        lut_flat = np.ascontiguousarray(lut, dtype=np.float32).ravel()
        indptr, indices = self.csr.indptr, self.csr.indices
        visited = np.zeros(self.n, dtype=bool)
        ids = np.unique(self.entry)
        visited[ids] = True
        scores = self.adc(lut_flat, ids)
        seen_ids, seen_scores = [ids], [scores]
        order = np.argsort(-scores)[:ef]
        pool_ids, pool_scores = ids[order], scores[order]
        expanded = np.zeros(len(pool_ids), dtype=bool)
        while True:
            todo = np.flatnonzero(~expanded)[:beam]
            if len(todo) == 0:
                break
            expanded[todo] = True
            nodes = pool_ids[todo]
            nb = np.concatenate([indices[indptr[u] : indptr[u + 1]] for u in nodes])
            nb = nb[~visited[nb]]
            if len(nb) == 0:
                continue
            nb = np.unique(nb)
            visited[nb] = True
            s = self.adc(lut_flat, nb)
            seen_ids.append(nb)
            seen_scores.append(s)
            # Only neighbours that can enter the pool matter for the traversal.
            if len(pool_ids) >= ef:
                better = s > pool_scores[-1]
                nb, s = nb[better], s[better]
                if len(nb) == 0:
                    continue
            all_ids = np.concatenate([pool_ids, nb])
            all_scores = np.concatenate([pool_scores, s])
            all_exp = np.concatenate([expanded, np.zeros(len(nb), dtype=bool)])
            order = np.argsort(-all_scores, kind="stable")[:ef]
            pool_ids, pool_scores, expanded = all_ids[order], all_scores[order], all_exp[order]
        ids = np.concatenate(seen_ids)
        scores = np.concatenate(seen_scores)
        if admit is not None:
            ok = admit[ids]
            ids, scores = ids[ok], scores[ok]
        return _top(ids, scores, want, int(visited.sum()))

    def brute_force(self, lut: np.ndarray, want: int, admit: np.ndarray) -> Candidates:
        ids = np.flatnonzero(admit)
        scores = self.adc(np.ascontiguousarray(lut, dtype=np.float32).ravel(), ids)
        return _top(ids, scores, want, len(ids))

    def search_candidates(
        self, queries: np.ndarray, p: SearchParams, admit: np.ndarray | None = None
    ) -> list[Candidates]:
        p = p.resolved()
        luts = self.pq.lut(queries)
        scan = admit is not None and admit.sum() <= max(p.recompute, p.brute_force_below * self.n)
        out = []
        for lut in luts:
            if scan:
                out.append(self.brute_force(lut, p.recompute, admit))
            else:
                out.append(self.candidates(lut, p.ef, p.recompute, admit, p.beam))
        return out


def _top(ids: np.ndarray, scores: np.ndarray, want: int, visited: int) -> Candidates:
    if len(ids) > want:
        part = np.argpartition(-scores, want - 1)[:want]
        ids, scores = ids[part], scores[part]
    order = np.argsort(-scores, kind="stable")
    return Candidates(ids[order], scores[order], visited)


def rerank(
    queries: np.ndarray, cands: list[Candidates], exact: ExactFn, k: int, margin: float
) -> list[Hits]:
    """Two rounds of exact re-scoring, each one `exact` call for all queries (ids deduplicated)."""
    first = k + k // 2
    known: list[dict[int, float]] = [{} for _ in cands]

    def score(wanted: list[np.ndarray]) -> None:
        ids = np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, np.int64)
        if len(ids) == 0:
            return
        vecs = exact(ids)
        pos = {int(u): i for i, u in enumerate(ids)}
        for qi, w in enumerate(wanted):
            if len(w):
                sims = vecs[[pos[int(u)] for u in w]] @ queries[qi]
                known[qi].update(zip(w.tolist(), sims.tolist(), strict=True))

    score([c.ids[:first] for c in cands])
    second = []
    for qi, c in enumerate(cands):
        rest_ids, rest_pq = c.ids[first:], c.scores[first:]
        exact_scores = sorted(known[qi].values(), reverse=True)
        if len(exact_scores) >= k and len(rest_ids):
            # PQ under-scores near neighbours by a query-dependent amount: estimate it from round one.
            bias = float(np.mean([known[qi][int(u)] for u in c.ids[:first]]) - c.scores[:first].mean())
            rest_ids = rest_ids[rest_pq + bias + margin >= exact_scores[k - 1]]
        second.append(rest_ids)
    score(second)
    out = []
    for qi, c in enumerate(cands):
        items = sorted(known[qi].items(), key=lambda t: -t[1])[:k]
        out.append(Hits(
            np.array([i for i, _ in items], dtype=np.int64),
            np.array([s for _, s in items], dtype=np.float32),
            len(known[qi]),
            c.visited,
        ))
    return out


def calibrate_margin(
    x: Any, searcher: GraphSearcher, samples: int = 200, want: int = 40, first: int = 15,
    quantile: float = 0.99, seed: int = 0,
) -> float:
    """The PQ error margin used to skip re-scoring, measured the way search uses it.

    Stored vectors stand in for queries (their self-match left out). For each, the candidates are
    taken in PQ order as in a search; the first `first` give the query's PQ bias (exact - PQ, on
    average), and the margin is the `quantile` of the remaining candidates' error beyond that bias.
    """
    n = len(x)
    if n < 3:
        return 1.0
    rng = np.random.default_rng(seed)
    qids = np.sort(rng.choice(n, size=min(samples, n), replace=False))
    q = np.asarray(x[qids], dtype=np.float32)
    luts = searcher.pq.lut(q)
    resid = []
    for i, lut in enumerate(luts):
        c = searcher.candidates(lut, max(64, want + 1), want + 1, None)
        keep = c.ids != qids[i]
        ids, pq = c.ids[keep][:want], c.scores[keep][:want]
        if len(ids) <= first:
            continue
        err = np.asarray(x[ids], dtype=np.float32) @ q[i] - pq
        resid.append(err[first:] - err[:first].mean())
    return float(np.quantile(np.concatenate(resid), quantile)) if resid else 1.0


def calibrate_recompute(x: Any, searcher: GraphSearcher, samples: int = 200, k: int = 10,
                        recall: float = CALIBRATION_RECALL, seed: int = 1) -> int:
    """Re-scorings per query that coarse PQ codes need: the smallest depth in PQ order holding
    `recall` of the exact top k, measured with stored vectors as queries (self-match left out).

    On MuSiQue chunks such held-in queries need the same depth as real questions (0.907 vs
    0.903 of the top 10 within the first 49), so the default follows each corpus's PQ error
    instead of one fixed count.
    """
    n = len(x)
    lo, hi = RECOMPUTE_RANGE
    if n <= lo:
        return lo
    rng = np.random.default_rng(seed)
    qids = np.sort(rng.choice(n, size=min(samples, n), replace=False))
    q = np.asarray(x[qids], dtype=np.float32)
    truth = exact_top(x, q, k, exclude=qids)
    found = np.zeros(hi, dtype=np.float64)  # found[d]: true neighbours at PQ rank d, over all queries
    for i, lut in enumerate(searcher.pq.lut(q)):
        c = searcher.candidates(lut, 2 * hi, hi + 1, None)
        ranked = c.ids[c.ids != qids[i]][:hi]
        found[:len(ranked)] += np.isin(ranked, truth[i])
    reach = np.cumsum(found) / (k * len(qids))
    depth = int(np.searchsorted(reach, recall) + 1)
    return int(np.clip(depth, lo, hi))


def exact_top(x: Any, q: np.ndarray, k: int, exclude: np.ndarray, block: int = 65536) -> np.ndarray:
    """Ids of each query's k best rows of x by inner product (unordered), row exclude[i] left out;
    x is read in blocks, so memory stays at one block whatever the corpus size."""
    rows = np.arange(len(q))
    best_ids = np.zeros((len(q), 0), dtype=np.int64)
    best = np.zeros((len(q), 0), dtype=np.float32)
    for s in range(0, len(x), block):
        sims = q @ np.asarray(x[s : s + block], dtype=np.float32).T
        mine = (exclude >= s) & (exclude < s + sims.shape[1])
        sims[rows[mine], exclude[mine] - s] = -np.inf
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(s, s + sims.shape[1]), sims.shape)], 1)
        sims = np.concatenate([best, sims], 1)
        keep = np.argpartition(-sims, min(k, sims.shape[1]) - 1, axis=1)[:, :k]
        best_ids, best = np.take_along_axis(ids, keep, 1), np.take_along_axis(sims, keep, 1)
    return best_ids
