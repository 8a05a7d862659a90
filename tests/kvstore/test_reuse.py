"""Chunk and prefix KV reuse on the real SmolLM2, with the real tiered store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from transformers import DynamicCache

from tiergate.engine.generate import Engine, Finished, GenerationRequest, TextDelta
from tiergate.engine.sampling import SamplingParams
from tiergate.kvstore import LayerModel, compute_span_kv
from tiergate.models import Generator

from .helpers import request

pytestmark = pytest.mark.slow


def answer(engine: Engine, req: GenerationRequest) -> tuple[str, Finished]:
    events = list(engine.run(req))
    assert isinstance(events[-1], Finished)
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events[-1]


def chunk_tokens(engine: Engine, req: GenerationRequest) -> int:
    return sum(len(s.token_ids) for s in engine.plan(req).segments if s.kind == "chunk")


def test_rerotated_layer0_keys_equal_full_prefill(engine_plain: Engine) -> None:
    req = request([0, 1, 2])
    plan = engine_plain.plan(req)
    lm = LayerModel(engine_plain.gen.model)
    with torch.inference_mode():
        full = engine_plain.gen.model(input_ids=torch.tensor([plan.token_ids]), past_key_values=DynamicCache(),
                                      use_cache=True)
    full_k0 = full.past_key_values.layers[0].keys[0]  # (H, N, D), post-RoPE
    for seg, pos in plan.spans():
        if seg.kind != "chunk":
            continue
        kv = compute_span_kv(lm, [], list(seg.token_ids))  # computed alone, at position 0
        n = len(seg.token_ids)
        cos, sin = lm.cos_sin(torch.arange(pos, pos + n))
        from tiergate.kvstore.rope import apply_rope

        moved = apply_rope(kv[0, 0], cos[0], sin[0])
        torch.testing.assert_close(moved, full_k0[:, pos : pos + n], atol=1e-5, rtol=1e-4)
        # Without re-rotation they would not match: the test can fail.
        assert not torch.allclose(kv[0, 0], full_k0[:, pos : pos + n], atol=1e-3)


def test_ratio_one_equals_full_prefill(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    warm = request([0, 1, 2], max_tokens=16)
    off_text, off = answer(engine, dataclasses.replace(warm, kv=dataclasses.replace(warm.kv, enabled=False)))
    answer(engine, warm)  # stores the chunks
    text, fin = answer(engine, request([0, 1, 2], ratio=1.0, max_tokens=16))
    assert text == off_text and fin.usage.completion_tokens == off.usage.completion_tokens
    assert fin.usage.recomputed_tokens == 0 and fin.usage.chunks_hit == 0  # r=1 loads nothing


def test_chunks_are_reused_in_any_order_and_repeated(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    _, first = answer(engine, request([0, 1, 2]))
    assert first.usage.cached_tokens == 0 and first.usage.chunks_missed == 3
    for order in ([2, 0, 1], [1, 1, 3, 0]):
        req = request(order, ratio=0.0)
        _, fin = answer(engine, req)
        seen = [i for i in order if i != 3]
        assert fin.usage.chunks_hit == len(seen)
        n_reused = sum(len(s.token_ids) for s, i in zip(
            [s for s in engine.plan(req).segments if s.kind == "chunk"], order, strict=True) if i != 3)
        assert fin.usage.cached_tokens == n_reused  # r=0: every reused token keeps its stored KV
    stats = engine.kv_store.stats.as_dict()
    assert stats["chunk_hits"]["host"] == 6 and stats["chunks_stored"] == 4


def test_slow_tier_chunks_are_recomputed_instead_of_loaded(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    costs = engine.kv_store.costs
    req = request([0, 1, 2], max_tokens=16)
    off_text, _ = answer(engine, dataclasses.replace(req, kv=dataclasses.replace(req.kv, enabled=False)))
    answer(engine, req)  # stores the chunks; computing them calibrates the compute rate
    rate = costs.token_layer_seconds
    assert rate is not None
    _, fin = answer(engine, req)
    assert fin.usage.chunks_hit == 3
    # a prefill that reused KV also spent time copying it: it must not make compute look dearer
    assert costs.token_layer_seconds == rate
    for _ in range(100):  # the host tier now delivers 10 kB/s (a fault that cannot be caused here)
        costs.observe_load("host", 64 << 20, 6400.0)
    text, fin = answer(engine, req)
    assert fin.usage.chunks_hit == 0 and fin.usage.cached_tokens == 0
    assert engine.kv_store.stats.as_dict()["chunk_skipped"]["host"] == 3
    assert text == off_text  # everything was computed: the full prefill's answer


def test_requests_prefill_in_full_while_blending_is_measured_slower(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    costs = engine.kv_store.costs
    req = request([0, 1, 2], max_tokens=16)
    off_text, _ = answer(engine, dataclasses.replace(req, kv=dataclasses.replace(req.kv, enabled=False)))
    answer(engine, req)  # stores the chunks
    _, fin = answer(engine, req)
    assert fin.usage.cached_tokens > 0 and costs.blend_overhead_seconds is not None
    for _ in range(100):  # a blend's overhead is now a full prefill's cost (a launch-bound GPU)
        costs.observe_blend(0, 1e3, 1e3 * costs.token_layer_seconds)
    text, fin = answer(engine, req)
    assert fin.usage.cached_tokens == 0 and fin.usage.recomputed_tokens == 0
    assert engine.kv_store.stats.as_dict()["blends_skipped"] == 1
    assert text == off_text


def test_selective_recompute_is_closer_to_full_prefill(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    warm = request([0, 1, 2, 3])
    answer(engine, warm)
    req = request([3, 1, 0, 2])
    plan = engine.plan(req)
    ref = torch.log_softmax(engine.prefill(plan, dataclasses.replace(req.kv, enabled=False)).logits, -1)
    kls = {}
    for r in (0.0, 0.15, 0.5):
        out = engine.prefill(plan, dataclasses.replace(req.kv, recompute_ratio=r))
        lp = torch.log_softmax(out.logits, -1)
        kls[r] = float((ref.exp() * (ref - lp)).sum())
        n = chunk_tokens(engine, req)
        assert out.recomputed_tokens == pytest.approx(r * n, abs=1)
        assert out.cached_tokens == n - out.recomputed_tokens
    assert kls[0.5] < kls[0.0] and kls[0.15] < kls[0.0]


def test_prefix_of_a_chat_is_reused_exactly(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(prefix_block_tokens=16)
    history = [{"role": "system", "content": "You are a careful assistant who answers in full sentences. " * 3},
               {"role": "user", "content": "Name a large river in Europe."}]
    r1 = GenerationRequest(history, SamplingParams(max_tokens=8, temperature=0.0))
    _, f1 = answer(engine, r1)
    assert f1.usage.cached_tokens == 0
    turn2 = [*history, {"role": "assistant", "content": "The Rhine."}, {"role": "user", "content": "How long is it?"}]
    r2 = GenerationRequest(turn2, SamplingParams(max_tokens=8, temperature=0.0))
    text, f2 = answer(engine, r2)
    assert f2.usage.cached_tokens >= 16 and f2.usage.cached_tokens % 16 == 0
    off_text, _ = answer(engine, dataclasses.replace(r2, kv=dataclasses.replace(r2.kv, enabled=False)))
    assert text == off_text


def test_corrupt_stored_kv_falls_back_to_recompute(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    req = request([0, 1])
    off_text, _ = answer(engine, request([0, 1], enabled=False))
    plan = engine.plan(req)
    chunks = [s for s in plan.segments if s.kind == "chunk"]
    key = engine.prefiller.chunk_key(chunks[0].token_ids, engine.prefiller.context_ids(plan))
    engine.kv_store.tiers.put("kv", key, torch.zeros(3, 5))  # wrong shape under the right key
    text, fin = answer(engine, dataclasses.replace(req, kv=dataclasses.replace(req.kv, recompute_ratio=0.0)))
    assert fin.usage.chunks_missed == 2 and fin.usage.cached_tokens == 0
    assert text == off_text  # nothing reused: exactly the full prefill
    assert engine.kv_store.stats.as_dict()["chunk_corrupt"] == 1
    _, again = answer(engine, dataclasses.replace(req, kv=dataclasses.replace(req.kv, recompute_ratio=0.0)))
    assert again.usage.chunks_hit == 2  # replaced by good KV after the fallback


def test_a_model_change_never_reuses_old_kv(make_engine: Callable[..., Engine], generator: Generator) -> None:
    engine = make_engine()
    answer(engine, request([0, 1]))
    tweaked = dataclasses.replace(generator, model_id=generator.model_id + "-finetuned")
    other = Engine(tweaked, kv_store=engine.kv_store)  # same store, another model
    _, fin = answer(other, request([0, 1]))
    assert fin.usage.chunks_hit == 0 and fin.usage.cached_tokens == 0


@pytest.fixture
def engine_plain(generator: Generator) -> Engine:
    return Engine(generator)
