"""Compact storage of cache entries: the binary record, the columnar partition table, the 8-bit ANN
index, and records of the first (JSON) format left on disk by an older version."""

from __future__ import annotations

import logging
import struct

import numpy as np
import orjson
import pytest

from tiergate.cache.ann import AnnIndex, vector_range
from tiergate.cache.entries import Entry, MemoryEntryStore, decode_meta, encode_meta, is_current, tenant_namespace
from tiergate.cache.table import EntryTable

from .conftest import answer, chat


def _entry(label: int = 7, **kw) -> Entry:
    base = dict(
        label=label,
        tenant="t",
        category="code",
        model="m",
        setting=2**62 + 3,
        context=5,
        query="How do I sort a list? ünïcode",
        history=0,
        expires_at=1234.5,
        size=321,
    )
    return Entry(**{**base, **kw})


def _unit(rng: np.random.Generator, n: int, dim: int = 384) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_record_round_trip_with_history_and_vector() -> None:
    vec = _unit(np.random.default_rng(0), 1)[0]
    entry = _entry(history=2)
    blob = encode_meta(entry, vec, created_at=99.0, history=("first turn", "second turn"), history_shape=11)
    meta = decode_meta(entry.label, blob, "t")
    assert meta.entry == entry and is_current(blob)
    assert meta.created_at == 99.0 and meta.history == ("first turn", "second turn") and meta.history_shape == 11
    assert meta.vector is not None and float(meta.vector @ vec) > 0.999  # int8 with one scale per vector
    assert len(blob) < 384 + 140 + len(entry.query.encode()) + len("first turn second turn")


def test_record_without_vector_or_expiry() -> None:
    entry = _entry(expires_at=None)
    meta = decode_meta(entry.label, encode_meta(entry, None, created_at=1.0), "t")
    assert meta.vector is None and meta.entry.expires_at is None and meta.history == ()


@pytest.mark.parametrize("cut", [3, 10, 50, 60])
def test_truncated_records_raise_value_error(cut: int) -> None:
    blob = encode_meta(_entry(), None, created_at=1.0)
    with pytest.raises(ValueError):
        decode_meta(7, blob[:cut])


def test_first_format_records_still_decode() -> None:
    vec = _unit(np.random.default_rng(1), 1)[0]
    meta = {
        "tenant": "t",
        "category": "code",
        "model": "m",
        "setting": 3,
        "context": 5,
        "query": "q",
        "history": ["earlier"],
        "created_at": 5.0,
        "expires_at": None,
        "size": 10,
        "semantic": True,
        "history_shape": 42,
    }
    body = orjson.dumps(meta)
    blob = struct.pack("<I", len(body)) + body + vec.astype(np.float16).tobytes()
    old = decode_meta(9, blob)
    assert not is_current(blob)
    assert old.entry.query == "q" and old.entry.tenant == "t" and old.history == ("earlier",)
    assert old.history_shape == 42 and np.allclose(old.vector, vec, atol=1e-3)
    with pytest.raises(ValueError):
        decode_meta(9, b"\x05\x00\x00\x00{nope")


def test_table_reuses_rows_and_tells_entries_apart_by_stamp() -> None:
    rng = np.random.default_rng(2)
    vecs = _unit(rng, 3)
    table = EntryTable("t", "code", AnnIndex(384, vector_range=0.5))
    a, b = _entry(1, query="alpha"), _entry(2, query="beta", model="other")
    table.add(a, vecs[0])
    table.add(b, vecs[1])
    assert len(table) == 2 and table.bytes == 642 and table.get(1) == a
    stale = table.get(1)
    table.add(_entry(1, query="alpha again"), vecs[2])  # a new entry under the same label
    assert not table.remove(1, stale.stamp)  # the old view no longer removes anything
    assert table.get(1).query == "alpha again"
    assert [e.label for e in table.matching("other", None, None)] == [2]
    assert [e.label for e in table.matching(None, None, "alp")] == [1]
    assert table.least_recent().label == 2
    table.touch(2)
    assert table.least_recent().label == 1
    assert table.remove(2)
    table.add(_entry(3, query="gamma"), vecs[1])  # takes the freed row
    assert table.search(vecs[1], 1)[0][0] == 3
    assert table.memory_bytes() > 0


def test_8bit_index_finds_the_exact_neighbours_and_survives_compaction() -> None:
    rng = np.random.default_rng(3)
    vecs = _unit(rng, 2000)
    ann = AnnIndex(384, vector_range=vector_range(vecs))
    ann.add(list(range(2000)), vecs)
    queries = vecs[:50] + 0.02 * _unit(rng, 50)
    exact = queries @ vecs.T
    for q, row in zip(queries, exact, strict=True):
        (ident, sim), *_ = ann.search(q, 4)
        assert ident == int(row.argmax()) and abs(sim - row.max()) < 0.005
    for ident in range(1000, 1800):  # past the compaction ratio
        ann.remove(ident)
    assert len(ann) == 1200 and 1500 not in ann
    assert ann.search(vecs[10], 1)[0][0] == 10 and ann.search(vecs[1900], 1)[0][0] == 1900


def test_old_and_unreadable_records_on_restart(make_cache, caplog) -> None:
    store = MemoryEntryStore()
    cache = make_cache(store=store)
    ok = cache.insert("t", "m", chat("How do I reverse a list in Python?"), answer("lst[::-1]"))
    bad = cache.insert("t", "m", chat("Who wrote Hamlet?"), answer("Shakespeare"))
    ns = tenant_namespace(cache.config.namespace, "t")
    current = decode_meta(int(ok, 16), store.get(ns, f"m/{ok}"), "t")
    legacy = {
        "tenant": "t",
        "category": current.entry.category,
        "model": "m",
        "setting": current.entry.setting,
        "context": current.entry.context,
        "query": current.entry.query,
        "history": [],
        "created_at": current.created_at,
        "expires_at": current.entry.expires_at,
        "size": current.entry.size,
        "semantic": True,
    }
    body = orjson.dumps(legacy)
    store.put(ns, f"m/{ok}", struct.pack("<I", len(body)) + body + current.vector.astype(np.float16).tobytes())
    store.put(ns, f"m/{bad}", b"\0TGm\x01garbage")
    with caplog.at_level(logging.WARNING, logger="tiergate.cache.semantic"):
        again = make_cache(store=store)
    assert len(again) == 1
    assert any("unreadable entry" in r.getMessage() for r in caplog.records)
    assert store.get(ns, f"p/{bad}") is None  # the unreadable entry's answer goes too
    assert is_current(store.get(ns, f"m/{ok}"))  # rewritten in the current format
    assert again.lookup("t", "m", chat("How can I reverse a Python list?")).outcome == "semantic"


def test_table_matches_a_dict_through_random_inserts_removals_and_arena_compaction() -> None:
    rng = np.random.default_rng(4)
    table = EntryTable("t", "code", AnnIndex(8, vector_range=1.0))
    held: dict[int, str] = {}
    written = 0
    labels = rng.integers(1, 2**62, size=300).tolist()
    for step in range(3000):
        label = labels[int(rng.integers(0, len(labels)))]
        if rng.random() < 0.6:
            query = f"question {step} " + "é" * int(rng.integers(0, 400))  # long texts: the arena compacts
            table.add(_entry(label, query=query, size=step), _unit(rng, 1, 8)[0])
            held[label] = query
            written += len(query.encode())
        else:
            assert table.remove(label) == (label in held)
            held.pop(label, None)
    assert len(table._text) < written // 4  # the arena was compacted
    assert len(table) == len(held) == len(table.ann)
    assert {e.label: e.query for e in table.entries()} == held
    assert all(table.get(label).query == q for label, q in held.items())
    assert [e.label for e in table.matching(None, None, "question 2999")] == [
        label for label, q in held.items() if q.startswith("question 2999")
    ]


def test_small_partitions_scan_flat_and_grow_into_a_graph() -> None:
    rng = np.random.default_rng(5)
    vecs = _unit(rng, 900)
    ann = AnnIndex(384, vector_range=vector_range(vecs), flat_max=500)
    queries = vecs[:40] + 0.02 * _unit(rng, 40)

    def nearest_are_exact(n: int) -> bool:
        exact = queries @ vecs[:n].T
        return all(ann.search(q, 1)[0][0] == int(row.argmax()) for q, row in zip(queries, exact, strict=True))

    ann.add(list(range(400)), vecs[:400])
    assert not ann.graph and nearest_are_exact(400)
    flat_bytes = ann.memory_bytes()
    ann.add(list(range(400, 900)), vecs[400:])
    assert ann.graph and len(ann) == 900 and nearest_are_exact(900)
    assert ann.memory_bytes() > 2 * flat_bytes  # codes plus graph links
    for ident in range(100, 900):  # deleted past the compaction ratio: small enough to scan again
        ann.remove(ident)
    assert not ann.graph and len(ann) == 100 and nearest_are_exact(100)
