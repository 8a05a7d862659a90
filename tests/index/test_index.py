"""Build, open, search, filters, updates, info, list/delete and failure modes (fast embedder)."""

import threading

import numpy as np
import pytest
from conftest import toy_records, write_jsonl

from tiergate.errors import InvalidRequestError
from tiergate.index import (
    BuildCancelled,
    BuildParams,
    CorruptIndexError,
    IndexExistsError,
    IndexNotFoundError,
    build_index,
    delete_documents,
    delete_index,
    index_info,
    insert_documents,
    list_indexes,
    open_index,
)


@pytest.fixture
def built(settings, hash_embedder, tmp_path):
    src = write_jsonl(tmp_path / "toy.jsonl", toy_records())
    build_index(settings, "toy", [src], embedder=hash_embedder)
    return open_index(settings, "toy", embedder=hash_embedder)


def test_search_finds_exact_passages(built):
    recs = toy_records()
    for r in recs[:20]:
        hits = built.search(r["text"], k=3)
        assert hits[0].id == r["id"] and hits[0].text == r["text"] and hits[0].metadata == r["metadata"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_batch_search_matches_single_and_shares_encode_calls(built, hash_embedder):
    queries = [r["text"] for r in toy_records()[:12]]
    singles = [[h.id for h in built.search(q, k=5)] for q in queries]
    calls = hash_embedder.calls
    batch, stats = built.search_batch(queries, k=5, with_stats=True)
    assert [[h.id for h in hits] for hits in batch] == singles
    assert hash_embedder.calls - calls <= 3  # queries + at most two re-scoring rounds
    assert all(0 < s.recomputed <= built.default_recompute and s.visited > 0 for s in stats)


def test_info_sizes(built):
    info = built.info()
    recs = toy_records()
    assert info.passages == len(recs) and info.deleted == 0
    assert info.raw_text_bytes == sum(len(r["text"].encode()) for r in recs)
    assert info.text_store_bytes == info.files["text-00000.parquet"]
    assert info.index_bytes == sum(info.files.values()) - info.text_store_bytes
    assert set(info.files) >= {"manifest.json", "graph_degrees.npy", "graph_edges.npy", "pq_codes.npy"}
    d = info.to_dict()
    assert d["index_ratio"] == pytest.approx(info.index_bytes / info.raw_text_bytes, rel=1e-3)


def test_filters_apply_during_search(built):
    q = toy_records()[3]["text"]  # topic 3, tenant b
    for filters in ({"topic": 5}, {"tenant": "a"}, {"topic": [1, 2]}, {"topic": 3, "tenant": "b"}):
        hits = built.search(q, k=10, filters=filters)
        assert len(hits) == 10
        for h in hits:
            for key, want in filters.items():
                assert h.metadata[key] in (want if isinstance(want, list) else [want])
    assert {h.metadata["tenant"] for h in built.search(q, k=10, tenant="a")} == {"a"}
    assert built.search(q, k=5, filters={"topic": 99}) == []
    assert built.search(q, k=5, filters={"nope": 1}) == []


def test_updates_insert_replace_delete(settings, built, hash_embedder):
    recs = toy_records()
    res = delete_documents(settings, "toy", ["d1", "d2", "missing-id"])
    assert (res.deleted, res.missing, res.passages) == (2, ["missing-id"], len(recs) - 2)
    idx = open_index(settings, "toy", embedder=hash_embedder)
    for r in recs[:30]:
        assert all(h.id not in ("d1", "d2") for h in idx.search(r["text"], k=10))
    new = [{"id": f"n{i}", "text": f"fresh topic{i % 3} " + " ".join(f"z{i}_{j}" for j in range(20)),
            "metadata": {"topic": 100}} for i in range(60)]
    new.append({"id": "d5", "text": "replacement text for d5 entirely new words", "metadata": {"topic": 5}})
    res = insert_documents(settings, "toy", new, embedder=hash_embedder)
    assert (res.inserted, res.deleted) == (61, 1)
    idx = open_index(settings, "toy", embedder=hash_embedder)
    assert idx.info().passages == len(recs) - 2 + 60 and idx.info().deleted == 3
    for r in new:
        assert idx.search(r["text"], k=3)[0].id == r["id"]
    assert idx.search("replacement text for d5 entirely new words", k=1)[0].text.startswith("replacement")
    for r in recs[3:40]:
        if r["id"] != "d5":
            assert idx.search(r["text"], k=3)[0].id == r["id"]
    assert len(idx.search(recs[0]["text"], k=10, filters={"topic": 100})) == 10
    info = idx.info()
    assert info.raw_text_bytes == sum(len(r["text"].encode()) for r in recs if r["id"] not in ("d1", "d2", "d5")) + sum(
        len(r["text"].encode()) for r in new)


def test_catalog_list_delete_tenants_and_names(settings, hash_embedder, tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", toy_records(40))
    build_index(settings, "one", [src], embedder=hash_embedder)
    build_index(settings, "one", [src], tenant="acme", embedder=hash_embedder)
    with pytest.raises(IndexExistsError):
        build_index(settings, "one", [src], embedder=hash_embedder)
    assert [i.name for i in list_indexes(settings, "default")] == ["one"]
    assert sorted((i.tenant, i.name) for i in list_indexes(settings, None)) == [("acme", "one"), ("default", "one")]
    for bad in ("../x", "a/b", ".hidden", "", "x" * 65, "a..b"):
        with pytest.raises(InvalidRequestError):
            build_index(settings, bad, [src], embedder=hash_embedder)
        with pytest.raises(InvalidRequestError):
            open_index(settings, bad, embedder=hash_embedder)
    with pytest.raises(InvalidRequestError):
        open_index(settings, "one", tenant="../acme")
    delete_index(settings, "one", tenant="acme")
    with pytest.raises(IndexNotFoundError):
        open_index(settings, "one", tenant="acme")
    with pytest.raises(IndexNotFoundError):
        index_info(settings, "nope")
    assert [i.tenant for i in list_indexes(settings, None)] == ["default"]


def test_failed_or_cancelled_build_leaves_nothing(settings, hash_embedder, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"broken\n')
    with pytest.raises(Exception, match=r"bad\.jsonl:2"):
        build_index(settings, "broken", [bad], embedder=hash_embedder)
    cancel = threading.Event()
    seen = []

    def progress(stage, done, total):
        seen.append(stage)
        cancel.set()

    src = write_jsonl(tmp_path / "s.jsonl", toy_records(600))
    with pytest.raises(BuildCancelled):
        build_index(settings, "cancelled", [src], embedder=hash_embedder, progress=progress, cancel=cancel)
    assert seen == ["embed"]
    tenant_dir = settings.path("indexes", "default")
    assert list(tenant_dir.iterdir()) == []
    assert list_indexes(settings) == []


def test_chunked_build_ids_and_rebuild_determinism(settings, hash_embedder, tmp_path):
    long = [{"id": f"L{i}", "text": " ".join(f"word{(i * 7 + j) % 300} item{j}" for j in range(200))}
            for i in range(12)]
    src = write_jsonl(tmp_path / "long.jsonl", long)
    params = BuildParams(chunk_tokens=64, overlap=8)
    build_index(settings, "c1", [src], params=params, embedder=hash_embedder)
    build_index(settings, "c2", [src], params=params, embedder=hash_embedder)
    a, b = open_index(settings, "c1", embedder=hash_embedder), open_index(settings, "c2", embedder=hash_embedder)
    assert a.ids == b.ids and all("#" in i for i in a.ids) and len(a.ids) > 12 * 5
    fa, fb = a.manifest.files, b.manifest.files
    assert {k: v.sha256 for k, v in fa.items()} == {k: v.sha256 for k, v in fb.items()}
    hit = a.search(long[4]["text"][:300], k=3)[0]
    assert hit.id.startswith("L4#")
    assert delete_documents(settings, "c1", ["L4"]).deleted == sum(i.startswith("L4#") for i in a.ids)


def test_corrupt_and_missing_files_give_clear_errors(settings, built, hash_embedder):
    folder = built.folder
    codes = (folder / "pq_codes.npy").read_bytes()
    (folder / "pq_codes.npy").write_bytes(codes[:-7])
    with pytest.raises(CorruptIndexError, match=r"pq_codes\.npy: index file has"):
        open_index(settings, "toy", embedder=hash_embedder)
    (folder / "pq_codes.npy").unlink()
    with pytest.raises(CorruptIndexError, match=r"pq_codes.npy: index file is missing"):
        open_index(settings, "toy", embedder=hash_embedder)
    (folder / "pq_codes.npy").write_bytes(codes)
    # Without checksum verification a damaged graph is still caught when it is decoded.
    edges = bytearray((folder / "graph_edges.npy").read_bytes())
    edges[-1] |= 0x80
    (folder / "graph_edges.npy").write_bytes(bytes(edges))
    with pytest.raises(CorruptIndexError, match="graph files are inconsistent"):
        open_index(settings, "toy", embedder=hash_embedder, verify=False)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptIndexError, match="manifest is not valid"):
        open_index(settings, "toy", embedder=hash_embedder)
    (folder.parent / "CURRENT").unlink()
    with pytest.raises(CorruptIndexError, match="version pointer is missing"):
        open_index(settings, "toy", embedder=hash_embedder)


def test_checksum_mismatch_and_wrong_model(settings, built, hash_embedder):
    folder = built.folder
    data = bytearray((folder / "graph_edges.npy").read_bytes())
    data[-1] ^= 0x01
    (folder / "graph_edges.npy").write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match=r"graph_edges\.npy: checksum mismatch"):
        open_index(settings, "toy", embedder=hash_embedder)


def test_model_mismatch_is_refused(settings, built, hash_embedder):
    class Other:
        model_id, dim = "other@1", 64

    idx = open_index(settings, "toy", embedder=Other())
    with pytest.raises(Exception, match="was built with hash-bow@test"):
        idx.search("x")


def test_bad_search_requests(built):
    for call in (lambda: built.search(""), lambda: built.search("x", k=0), lambda: built.search_batch("x")):
        with pytest.raises(InvalidRequestError):
            call()
    assert np.isfinite(built.search("unseen words entirely", k=2)[0].score)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tiny_indexes(settings, hash_embedder, tmp_path, n):
    recs = toy_records(n)
    build_index(settings, f"tiny{n}", [write_jsonl(tmp_path / "t.jsonl", recs)], embedder=hash_embedder)
    idx = open_index(settings, f"tiny{n}", embedder=hash_embedder)
    hits = idx.search(recs[-1]["text"], k=10)
    assert len(hits) == n and hits[0].id == recs[-1]["id"]
    res = insert_documents(settings, f"tiny{n}", [{"id": "extra", "text": "an extra passage"}], embedder=hash_embedder)
    assert res.passages == n + 1
    assert open_index(settings, f"tiny{n}", embedder=hash_embedder).search("an extra passage", k=1)[0].id == "extra"


def test_hot_vectors_in_the_tiered_store(settings, built, hash_embedder):
    tiers = pytest.importorskip("tiergate.tiers")
    store = tiers.TieredStore()
    try:
        idx = open_index(settings, "toy", embedder=hash_embedder, vector_store=store)
        q = toy_records()[7]["text"]
        first = idx.search(q, k=5)
        encoded = hash_embedder.encoded
        again = idx.search(q, k=5)
        assert [h.id for h in again] == [h.id for h in first]
        assert hash_embedder.encoded - encoded == 1  # only the query: passages came from the store
    finally:
        store.close()


def test_lru_cache_of_recomputed_vectors(settings, built, hash_embedder):
    idx = open_index(settings, "toy", embedder=hash_embedder, cache_vectors=1000)
    q = toy_records()[9]["text"]
    idx.search(q, k=5)
    encoded = hash_embedder.encoded
    idx.search(q, k=5)
    assert hash_embedder.encoded - encoded == 1
