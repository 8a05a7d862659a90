"""The graph + PQ search on vectors alone (exact re-scoring by dot product with stored vectors)."""

import numpy as np

from tiergate.index.build import BuildParams, build_structures
from tiergate.index.search import SearchParams, exact_top, rerank


def clustered(n: int, dim: int, seed: int = 0, sample_seed: int = 0) -> np.ndarray:
    """Points around 50 centres (fixed by seed); sample_seed draws other points of the same clusters."""
    centers = np.random.default_rng(seed).standard_normal((50, dim))
    rng = np.random.default_rng(sample_seed + 1000)
    x = centers[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recall_against_flat_search():
    x = clustered(5000, 48)
    q = clustered(100, 48, sample_seed=7)
    st = build_structures(x, BuildParams(pq_bytes=24, pq_bits=8))
    xn = x[st.order]
    assert sorted(st.order.tolist()) == list(range(len(x)))
    truth = np.argsort(-(q @ xn.T), axis=1)
    for k in (3, 10):
        cands = st.searcher().search_candidates(q, SearchParams(k=k))
        hits = rerank(q, cands, lambda ids: xn[ids], k, st.margin)
        recall = np.mean([len(set(h.ids) & set(t[:k])) / k for h, t in zip(hits, truth, strict=True)])
        assert recall >= 0.95, (k, recall)
        assert all(h.recomputed <= SearchParams(k=k).resolved().recompute for h in hits)
        assert all(np.all(np.diff(h.scores) <= 1e-6) for h in hits)


def test_filter_admits_only_matching_nodes_even_when_rare():
    x = clustered(3000, 32)
    st = build_structures(x, BuildParams(pq_bytes=16, pq_bits=8))
    xn = x[st.order]
    for share in (0.5, 0.01):
        admit = np.random.default_rng(3).random(len(x)) < share
        q = xn[:20]
        cands = st.searcher().search_candidates(q, SearchParams(k=10), admit)
        hits = rerank(q, cands, lambda ids: xn[ids], 10, st.margin)
        for h, qi in zip(hits, q, strict=True):
            assert admit[h.ids].all()
            truth = np.flatnonzero(admit)[np.argsort(-(xn[admit] @ qi))[:10]]
            assert len(set(h.ids) & set(truth)) >= 9


def test_calibrated_rescoring_depth_follows_the_pq_error():
    x = clustered(4000, 48)
    q = clustered(100, 48, sample_seed=7)
    coarse = build_structures(x, BuildParams(pq_bytes=3, pq_bits=4))
    fine = build_structures(x, BuildParams(pq_bytes=24, pq_bits=8))
    assert coarse.recompute > fine.recompute

    def recall(st, recompute):
        xn = x[st.order]
        truth = np.argsort(-(q @ xn.T), axis=1)[:, :10]
        p = SearchParams(k=10, ef=max(64, 2 * recompute), recompute=recompute)
        hits = rerank(q, st.searcher().search_candidates(q, p), lambda ids: xn[ids], 10, 2.0)
        return np.mean([len(set(h.ids) & set(t)) / 10 for h, t in zip(hits, truth, strict=True)])

    # Coarse codes miss neighbours at the fixed minimum depth; the calibrated depth finds them.
    assert recall(coarse, coarse.recompute) >= 0.95 > recall(coarse, 24)


def test_exact_top_in_blocks_matches_one_full_product_and_leaves_out_self():
    x = clustered(1000, 16)
    me = np.array([3, 500, 999])
    got = exact_top(x, x[me], 5, me, block=128)  # blocks that split a query's own row off
    sims = x[me] @ x.T
    sims[np.arange(3), me] = -np.inf
    want = np.argsort(-sims, axis=1)[:, :5]
    assert [set(g) for g in got.tolist()] == [set(w) for w in want.tolist()]
