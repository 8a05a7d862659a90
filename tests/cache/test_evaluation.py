"""The labelled evaluation pairs (benchmarks/data/semcache): each first question is cached, each
second one looked up. A trap served, or a paraphrase answered with another entry, is a wrong answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiergate.cache.config import CacheConfig

from .conftest import answer, chat

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "semcache"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def _evaluate(embedder, lexicon, name: str) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from tiergate.cache.entries import MemoryEntryStore
    from tiergate.cache.semantic import SemanticCache

    cfg = CacheConfig()
    for c in cfg.categories:
        c.target_false_hit_rate = None  # the shipped thresholds, no sampling
    cache = SemanticCache(cfg, embedder, MemoryEntryStore(), lexicon=lexicon, registry=CollectorRegistry())
    rows = _rows(name)
    ids = {}
    for r in rows:
        if r["a"] not in ids:
            ids[r["a"]] = cache.insert("t", "m", chat(r["a"]), answer(r["a"]), category=r["category"])
    para = [r for r in rows if r["same"] and r["category"] != "personal"]
    traps = [r for r in rows if not r["same"]]
    served_para = wrong = personal = 0
    for r in rows:
        lk = cache.lookup("t", "m", chat(r["b"]))
        if r["category"] == "personal":
            personal += lk.hit
        elif r["same"]:
            served_para += lk.hit and lk.entry_id == ids[r["a"]]
            wrong += lk.hit and lk.entry_id != ids[r["a"]]
        else:
            wrong += lk.hit
    return {"paraphrases": served_para / len(para), "wrong": wrong / len(traps), "personal": personal,
            "n": len(rows)}


@pytest.fixture(scope="module")
def outcome(embedder, lexicon) -> dict[str, float]:
    return _evaluate(embedder, lexicon, "pairs.jsonl")


def test_evaluation_set_is_large_enough() -> None:
    rows = _rows("pairs.jsonl")
    kinds = {r["kind"] for r in rows}
    assert len(rows) >= 400
    assert {"paraphrase", "negation", "antonym", "number", "date", "unit", "entity", "comparative", "scope"} <= kinds
    assert len(_rows("multiturn.jsonl")) >= 10


def test_traps_served_at_most_2_percent(outcome) -> None:
    assert outcome["wrong"] <= 0.02
    assert outcome["personal"] == 0


@pytest.mark.parametrize("name", ["heldout.jsonl", "heldout2.jsonl"])
def test_held_out_traps_served_at_most_2_percent(embedder, lexicon, name: str) -> None:
    # Pairs the guard's rules were not written against (see the data README).
    result = _evaluate(embedder, lexicon, name)
    assert result["wrong"] <= 0.02
    assert result["paraphrases"] >= 0.5


def test_paraphrases_served_target(outcome) -> None:
    # The target: at least 75% of true paraphrases served while traps stay at most 2% (above).
    assert outcome["paraphrases"] >= 0.75


def test_multi_turn_cases(make_cache) -> None:
    cache = make_cache()
    wrong = served = same_total = 0
    for i, r in enumerate(_rows("multiturn.jsonl")):
        tenant = f"t{i}"  # one conversation pair per tenant
        first = chat(*r["history_a"], "(answer)", r["last"])
        second = chat(*r["history_b"], "(answer)", r["last"])
        cache.insert(tenant, "m", first, answer("x"))
        hit = cache.lookup(tenant, "m", second).hit
        if r["same"]:
            same_total += 1
            served += hit
        else:
            wrong += hit
    assert wrong == 0
    assert served >= same_total // 2
