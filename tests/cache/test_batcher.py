"""The cache's fast query encoder and the micro-batcher that groups concurrent lookups."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tiergate.cache.encoder import QueryEncoder
from tiergate.errors import OverloadedError

from .conftest import answer, chat

QUESTIONS = ["How do I reverse a list in Python?", "What is the capital of France?", "python string length",
             "Write a short poem about autumn", "How tall is Mount Everest?", "bitcoin price now"]


def test_query_encoder_matches_the_embedder(embedder) -> None:
    enc = QueryEncoder(embedder)
    assert enc.mode in ("onnx", "bf16", "direct")  # a fast path is in use for the packaged model
    texts = [*QUESTIONS, "a much longer question " * 20]
    mine, theirs = enc.encode(texts, batch_size=4), embedder.encode(texts)
    assert mine.shape == theirs.shape and mine.dtype == np.float32
    assert np.min(np.sum(mine * theirs, axis=1)) > 0.999
    assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-4)


def test_query_encoder_falls_back_for_an_unknown_encoder() -> None:
    class Plain:
        dim = 3

        def encode(self, texts, batch_size=64):
            return np.ones((len(texts), 3), dtype=np.float32) / np.sqrt(3)

    enc = QueryEncoder(Plain())
    assert enc.mode == "embedder"
    assert enc.encode(["x", "y"]).shape == (2, 3)


def test_concurrent_lookups_are_batched_and_answer_like_single_ones(make_cache) -> None:
    cache = make_cache()
    for q in QUESTIONS:
        cache.insert("t", "m", chat(q), answer(q))
    probes = ["What's the way to reverse a Python list?", "What is the capital of Spain?",
              "How high is Mount Everest?", "Write a brief poem about autumn"] * 5
    single = [cache.lookup("t", "m", chat(q)) for q in probes]

    async def many():
        return await asyncio.gather(*[cache.batcher.lookup("t", "m", chat(q)) for q in probes])

    batched = asyncio.run(many())
    assert [(x.outcome, x.entry_id) for x in batched] == [(x.outcome, x.entry_id) for x in single]
    assert any(x.outcome == "semantic" for x in batched)
    assert cache.batcher.batched == len(probes)
    assert cache.batcher.batches < len(probes) // 2  # grouped, not one embedding pass each


def test_batcher_queue_is_bounded(make_cache) -> None:
    cache = make_cache()
    cache.batcher.max_waiting = 2

    async def many():
        return await asyncio.gather(*[cache.batcher.lookup("t", "m", chat(q)) for q in QUESTIONS],
                                    return_exceptions=True)

    results = asyncio.run(many())
    assert any(isinstance(r, OverloadedError) for r in results)
    assert any(not isinstance(r, BaseException) for r in results)


def test_batcher_passes_errors_to_every_caller(make_cache, monkeypatch) -> None:
    cache = make_cache()

    def broken(items, **_):
        raise RuntimeError("store down")

    monkeypatch.setattr(cache, "lookup_many", broken)  # a store failure cannot be caused on demand

    async def many():
        return await asyncio.gather(*[cache.batcher.lookup("t", "m", chat(q)) for q in QUESTIONS[:3]],
                                    return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(many()))


@pytest.mark.parametrize("hint", ["code", None])
def test_batcher_keeps_the_category_hint(make_cache, hint) -> None:
    cache = make_cache()
    result = asyncio.run(cache.batcher.lookup("t", "m", chat("How do I sort a list?"), hint))
    assert result.outcome == "miss"
    if hint:
        assert result.category == hint


def test_ann_search_many_equals_one_at_a_time() -> None:
    from tiergate.cache.ann import AnnIndex

    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(300, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ann = AnnIndex(32)
    ann.add(list(range(1, 301)), vecs)
    for label in range(1, 40):
        ann.remove(label)  # deleted entries must be skipped the same way
    queries = vecs[:20] + 0.05 * rng.normal(size=(20, 32)).astype(np.float32)
    assert ann.search_many(queries, 5) == [ann.search(q, 5) for q in queries]


def test_a_bypass_or_an_exact_hit_in_memory_is_decided_without_a_batch(make_cache) -> None:
    cache = make_cache()
    cache.insert("t", "m", chat(QUESTIONS[0]), answer(QUESTIONS[0]))
    sampled = chat(QUESTIONS[0], temperature=1.9)  # above the cacheable temperature

    async def one():
        return await cache.batcher.lookup("t", "m", sampled)

    result = asyncio.run(one())
    assert result.outcome == "bypass" and "temperature" in (result.reason or "")
    assert cache.batcher.batches == 0  # answered on the caller's side: no worker ran
    assert cache.stats()["tenants"]["t"]["-"]["bypass"] == 1  # counted like any lookup
    hit = asyncio.run(cache.batcher.lookup("t", "m", chat(QUESTIONS[0])))
    assert hit.outcome == "exact" and hit.payload is not None and cache.batcher.batches == 0
    miss = asyncio.run(cache.batcher.lookup("t", "m", chat(QUESTIONS[1])))
    assert miss.outcome == "miss" and cache.batcher.batches == 1  # a miss needs its embedding


def test_an_exact_hit_behind_a_busy_lock_is_found_in_a_batch_not_on_the_loop(make_cache) -> None:
    import threading

    cache = make_cache()
    cache.insert("t", "m", chat(QUESTIONS[0]), answer(QUESTIONS[0]))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread mid-search or mid-insert
        with cache._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    assert cache.quick("t", "m", chat(QUESTIONS[0])) is None  # the event loop waits only briefly for the lock

    async def looked_up():
        lookup = asyncio.ensure_future(cache.batcher.lookup("t", "m", chat(QUESTIONS[0])))
        await asyncio.sleep(0.05)
        release.set()
        return await lookup

    hit = asyncio.run(looked_up())
    holder.join()
    assert hit.outcome == "exact" and cache.batcher.batches == 1
