"""Recall, storage and updates on real passages (MuSiQue) with the real packaged embedder."""

import numpy as np
import pytest
from conftest import write_jsonl

from tiergate.config import load_settings
from tiergate.index import build_index, delete_documents, insert_documents, open_index

pytestmark = pytest.mark.slow


def recall(index, questions, q_vecs, p_vecs, ids, k, admit=None):
    """Mean recall@k of the index against an exact flat search over the admitted passages."""
    results = index.search_batch(questions, k)
    sims = q_vecs @ p_vecs.T
    if admit is not None:
        sims[:, ~admit] = -np.inf
    truth = np.argsort(-sims, axis=1)[:, :k]
    return float(np.mean([len({h.id for h in res} & {ids[j] for j in t}) / k
                          for res, t in zip(results, truth, strict=True)]))


@pytest.fixture(scope="module")
def built(tmp_path_factory, musique_corpus, musique_vectors, real_embedder):
    records, _ = musique_corpus
    tmp = tmp_path_factory.mktemp("musique")
    settings = load_settings(data_dir=tmp / "var")
    src = write_jsonl(tmp / "musique.jsonl", records)
    build_index(settings, "musique", [src], embedder=real_embedder)
    return settings, src


def test_recall_at_defaults(built, musique_corpus, musique_vectors, real_embedder):
    settings, _ = built
    records, questions = musique_corpus
    p, q = musique_vectors
    index = open_index(settings, "musique", embedder=real_embedder)
    ids = [r["id"] for r in records]
    r3 = recall(index, questions, q, p, ids, 3)
    r10 = recall(index, questions, q, p, ids, 10)
    assert r3 >= 0.95 and r10 >= 0.95, (r3, r10)
    _, stats = index.search_batch(questions, 10, with_stats=True)
    assert np.mean([s.recomputed for s in stats]) <= 24  # far fewer than the passages visited
    assert np.mean([s.visited for s in stats]) > 3 * np.mean([s.recomputed for s in stats])


def test_storage_ratio(built, real_embedder):
    settings, _ = built
    info = open_index(settings, "musique", embedder=real_embedder).info()
    assert info.passages == 1255 if info.passages > 1000 else True
    assert info.index_bytes / info.raw_text_bytes <= 0.05, info.to_dict()
    assert info.text_store_bytes < info.raw_text_bytes  # zstd


def test_filters_on_real_passages(built, musique_corpus, musique_vectors, real_embedder):
    settings, _ = built
    records, questions = musique_corpus
    p, q = musique_vectors
    index = open_index(settings, "musique", embedder=real_embedder)
    admit = np.array([r["metadata"]["shard"] == 2 for r in records])
    results = index.search_batch(questions[:50], 10, filters={"shard": 2})
    assert all(h.metadata["shard"] == 2 for res in results for h in res)
    sims = q[:50] @ p.T
    sims[:, ~admit] = -np.inf
    truth = np.argsort(-sims, axis=1)[:, :10]
    got = np.mean([len({h.id for h in res} & {records[j]["id"] for j in t}) / 10
                   for res, t in zip(results, truth, strict=True)])
    assert got >= 0.95


def test_inserts_keep_recall_and_deletes_are_never_returned(tmp_path, musique_corpus, musique_vectors, real_embedder):
    records, questions = musique_corpus
    p, q = musique_vectors
    ids = [r["id"] for r in records]
    settings = load_settings(data_dir=tmp_path / "var")
    cut = int(len(records) * 0.8)
    build_index(settings, "grow", [write_jsonl(tmp_path / "a.jsonl", records[:cut])], embedder=real_embedder)
    insert_documents(settings, "grow", records[cut:], embedder=real_embedder)
    build_index(settings, "fresh", [write_jsonl(tmp_path / "all.jsonl", records)], embedder=real_embedder)
    grown = open_index(settings, "grow", embedder=real_embedder)
    fresh = open_index(settings, "fresh", embedder=real_embedder)
    assert grown.info().passages == len(records)
    for k in (3, 10):
        rg, rf = recall(grown, questions, q, p, ids, k), recall(fresh, questions, q, p, ids, k)
        assert rg >= rf - 0.02, (k, rg, rf)
    # Delete the passages most likely to be returned: each question's exact top 2.
    top = np.argsort(-(q @ p.T), axis=1)[:, :2]
    gone = sorted({ids[j] for j in top.ravel()})
    assert delete_documents(settings, "grow", gone).deleted == len(gone)
    after = open_index(settings, "grow", embedder=real_embedder)
    admit = np.array([i not in set(gone) for i in ids])
    for res in after.search_batch(questions, 10):
        assert not {h.id for h in res} & set(gone)
    assert recall(after, questions, q, p, ids, 10, admit) >= 0.95
