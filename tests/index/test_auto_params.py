"""Defaults that adapt to the corpus: PQ code size and the re-scoring budget follow passage length."""

import numpy as np
import pytest
from conftest import toy_records, write_jsonl

from tiergate.config import load_settings
from tiergate.errors import InvalidRequestError
from tiergate.index import build_index, open_index
from tiergate.index.build import auto_pq, auto_pq_bytes
from tiergate.index.graph import SMALL_GRAPH, GraphParams, auto_degree
from tiergate.index.search import RECOMPUTE_RANGE, auto_recompute


def test_pq_bytes_follow_passage_length():
    assert auto_pq_bytes(81) == 96  # WordNet glosses: coarse codes leave too many near-ties
    assert auto_pq_bytes(256) == 32
    assert auto_pq_bytes(500) == 16  # ~500 B passages stay within the 8% target
    assert auto_pq_bytes(1200) == 32
    assert auto_pq_bytes(2400) == 64  # MuSiQue: unchanged, 2.7% of the text
    assert auto_pq_bytes(100_000) == 64
    assert auto_pq_bytes(None) == 32
    sizes = [auto_pq_bytes(b) for b in range(40, 600, 7)]
    assert sizes == sorted(sizes, reverse=True)  # shorter passages never get smaller codes
    assert auto_pq(117_648, 384, 81, None, None) == (96, 8)
    assert auto_pq(1255, 384, 2400, None, None) == (128, 4)


def test_recompute_budget_is_counted_in_tokens():
    assert auto_recompute(2400) == RECOMPUTE_RANGE[0]  # 256-token passages: 24, as before
    assert auto_recompute(81) == RECOMPUTE_RANGE[1]  # ~22-token glosses: capped
    assert auto_recompute(500) == 48
    assert auto_recompute(None) == RECOMPUTE_RANGE[0]
    budgets = [auto_recompute(b) for b in range(40, 4000, 37)]
    assert budgets == sorted(budgets, reverse=True)


def test_small_graphs_keep_fewer_edges():
    assert auto_degree(4867) == 12 < auto_degree(SMALL_GRAPH) == 16
    assert GraphParams().resolved(5000) == GraphParams(degree=12, hub_degree=24)
    assert GraphParams(degree=20).resolved(5000).hub_degree == 40  # an explicit degree wins


@pytest.fixture
def short_index(tmp_path, hash_embedder):
    tmp = tmp_path
    settings = load_settings(data_dir=tmp / "var")
    recs = toy_records(400)
    build_index(settings, "short", [write_jsonl(tmp / "short.jsonl", recs)], embedder=hash_embedder)
    return open_index(settings, "short", embedder=hash_embedder), recs


def test_short_passage_index_uses_the_adapted_defaults(short_index):
    index, recs = short_index
    mean = index.manifest.raw_text_bytes / index.manifest.passages
    assert mean < 200
    pq = index.manifest.pq
    assert (pq["m"], pq["nbits"]) == auto_pq(len(recs), index.manifest.dim, mean, None, None)
    assert pq["m"] * pq["nbits"] // 8 > 16  # more than the old 16-byte floor
    assert index.default_recompute == max(auto_recompute(mean), index.manifest.recompute) > 24
    assert index.manifest.params["graph"]["degree"] == 12  # what was built, not "auto"
    res, stats = index.search_batch([r["text"] for r in recs[:10]], 5, with_stats=True)
    assert all(r[0].id == rec["id"] for r, rec in zip(res, recs[:10], strict=True))
    assert all(0 < s.recomputed <= index.default_recompute for s in stats)
    # An explicit budget still wins.
    _, stats = index.search_batch([r["text"] for r in recs[:10]], 5, recompute=12, ef=32, with_stats=True)
    assert all(0 < s.recomputed <= 12 for s in stats)
    assert np.mean([s.visited for s in stats]) > 0


def test_a_wider_margin_rescores_more_up_to_the_budget(short_index):
    index, recs = short_index
    queries = [r["text"][: len(r["text"]) // 2] for r in recs[:20]]  # partial texts: inexact queries
    _, calibrated = index.search_batch(queries, 5, recompute=20, with_stats=True)
    _, wide = index.search_batch(queries, 5, recompute=20, margin=2.0, with_stats=True)
    assert all(s.recomputed == 20 for s in wide)  # a cosine gap never exceeds 2: the whole budget
    assert sum(s.recomputed for s in calibrated) < sum(s.recomputed for s in wide)
    for bad in (-0.1, float("nan")):
        with pytest.raises(InvalidRequestError, match="margin"):
            index.search_batch(queries[:1], 5, margin=bad)
