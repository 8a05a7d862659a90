from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tiergate.cache.config import CacheConfig
from tiergate.cache.entries import MemoryEntryStore
from tiergate.errors import InvalidRequestError
from tiergate.tiers import StoreConfig, TieredStore
from tiergate.tiers.config import DiskTierConfig, GpuTierConfig

from .conftest import answer, chat


def test_exact_then_semantic_then_guarded_miss(make_cache) -> None:
    cache = make_cache()
    q = "How do I reverse a list in Python?"
    first = cache.lookup("t", "m", chat(q))
    assert first.outcome == "miss" and first.category == "code"
    assert cache.insert("t", "m", chat(q), answer("Use lst.reverse()."), lookup=first)
    exact = cache.lookup("t", "m", chat(q))
    assert exact.outcome == "exact" and b"lst.reverse()" in exact.payload
    assert exact.headers()["X-Tiergate-Cache"] == "exact"
    semantic = cache.lookup("t", "m", chat("How can I reverse a Python list?"))
    assert semantic.outcome == "semantic"
    assert semantic.similarity >= semantic.threshold
    assert "X-Tiergate-Similarity" in semantic.headers()
    trap = cache.lookup("t", "m", chat("How do I reverse a list in Java?"))
    assert trap.outcome == "miss"


def test_semantic_hit_needs_same_setting(make_cache) -> None:
    cache = make_cache()
    cache.insert("t", "m", chat("How do I reverse a list in Python?"), answer("a"))
    assert cache.lookup("t", "m", chat("How can I reverse a Python list?", max_tokens=5)).outcome == "miss"
    assert cache.lookup("t", "m2", chat("How can I reverse a Python list?")).outcome == "miss"
    assert cache.lookup("t", "m", chat("How can I reverse a Python list?", system="Be terse.")).outcome == "miss"


def test_follow_up_after_different_earlier_turns_never_hits(make_cache) -> None:
    cache = make_cache()
    java = chat("How do I read a file line by line in Java?", "Use BufferedReader.", "And in Python?")
    cache.insert("t", "m", java, answer("with open(p) as f: for line in f: ..."))
    other = chat("How do I sort an array in Java?", "Use Arrays.sort.", "And in Python?")
    assert cache.lookup("t", "m", other).outcome == "miss"
    csharp = chat("How do I read a file line by line in C#?", "Use File.ReadLines.", "And in Python?")
    assert cache.lookup("t", "m", csharp).outcome == "miss"
    fresh = chat("And in Python?")
    assert cache.lookup("t", "m", fresh).outcome == "miss"
    reworded = chat("How can I read a file line by line in Java?", "Use a BufferedReader.", "And in Python?")
    assert cache.lookup("t", "m", reworded).outcome == "semantic"


def test_categories_explicit_override_personal_and_unknown(make_cache) -> None:
    cache = make_cache()
    assert cache.lookup("t", "m", chat("What is my account balance?")).outcome == "bypass"
    assert cache.insert("t", "m", chat("What is my account balance?"), answer("$12")) is None
    lk = cache.lookup("t", "m", chat("How do I reverse a list in Python?"), category_hint="factual")
    assert lk.category == "factual"
    assert cache.lookup("t", "m", chat("Hello"), category_hint="personal").outcome == "bypass"
    with pytest.raises(InvalidRequestError):
        cache.lookup("t", "m", chat("Hello"), category_hint="nonsense")
    assert cache.classifier.classify(cache.embedder.encode(["What is the weather in Rome today?"])[0]).category \
        == "time_sensitive"
    assert cache.classifier.classify(cache.embedder.encode(["Solve 2x + 3 = 9"])[0]).category == "math"


def test_bypass_rules(make_cache) -> None:
    cache = make_cache(CacheConfig(disabled_models=["raw"]))
    assert cache.lookup("t", "raw", chat("Hi there")).outcome == "bypass"
    assert cache.lookup("t", "m", chat("Tell me a joke", temperature=1.4)).outcome == "bypass"
    assert make_cache(CacheConfig(enabled=False)).lookup("t", "m", chat("x")).outcome == "bypass"


def test_ttl_expires_entries_and_override_only_shortens(make_cache, clock) -> None:
    cache = make_cache()
    q = chat("What is the weather in London today?")
    assert cache.insert("t", "m", q, answer("Rain."), category="time_sensitive")
    assert cache.lookup("t", "m", q).outcome == "exact"
    clock.now += 301  # time_sensitive TTL is 300 s
    assert cache.lookup("t", "m", q).outcome == "miss"
    assert len(cache) == 0
    cache.insert("t", "m", q, answer("Rain."), category="time_sensitive", ttl_override=10_000)
    clock.now += 301
    assert cache.lookup("t", "m", q).outcome == "miss"
    assert cache.insert("t", "m", q, answer("Rain."), ttl_override=0) is None


def test_quota_evicts_least_recently_used(make_cache) -> None:
    cfg = CacheConfig()
    cfg.category("factual").max_entries = 2
    cache = make_cache(cfg)
    qs = ["What is the capital of Peru?", "Who wrote Hamlet?", "How tall is Mount Fuji?"]
    for q in qs[:2]:
        cache.insert("t", "m", chat(q), answer(q), category="factual")
    assert cache.lookup("t", "m", chat(qs[0])).outcome == "exact"  # qs[0] is now the most recent
    cache.insert("t", "m", chat(qs[2]), answer(qs[2]), category="factual")
    assert cache.lookup("t", "m", chat(qs[1])).outcome == "miss"
    assert cache.lookup("t", "m", chat(qs[0])).outcome == "exact"
    assert cache.stats()["categories"]["factual"]["entries"] == 2
    cfg.category("factual").max_bytes = 10
    assert cache.insert("t", "m", chat("Who painted Guernica?"), answer("Picasso"), category="factual") is None


def test_invalidation_filters(make_cache) -> None:
    cache = make_cache()
    ids = {}
    rows = [("a", "m", "Who wrote Hamlet?", "factual"), ("a", "m", "Tell me a joke", "conversational"),
            ("b", "m", "Who wrote Hamlet?", "factual"), ("a", "x", "Who wrote Macbeth?", "factual"),
            ("a", "m", "Who painted Guernica?", "factual")]
    for tenant, model, q, cat in rows:
        ids[(tenant, model, q)] = cache.insert(tenant, model, chat(q), answer(q), category=cat)
    assert cache.invalidate(entry_id=ids[("a", "m", "Tell me a joke")]) == 1
    assert cache.invalidate(tenant="a", prompt_prefix="who WROTE") == 2
    assert cache.invalidate(model="x") == 0
    assert cache.invalidate(tenant="b", category="factual") == 1
    assert len(cache) == 1
    assert cache.lookup("a", "m", chat("Who wrote Hamlet?")).outcome == "miss"
    assert cache.lookup("a", "m", chat("Who painted Guernica?")).outcome == "exact"


def test_tenants_never_see_each_other(make_cache) -> None:
    cache = make_cache()
    qs = ["How do I reverse a list in Python?", "Who wrote Hamlet?", "What is 15% of 240?"]
    for q in qs:
        cache.insert("alice", "m", chat(q), answer("secret " + q))
    for q in [*qs, "How can I reverse a Python list?", "Who is the author of Hamlet?"]:
        lk = cache.lookup("bob", "m", chat(q))
        assert lk.outcome == "miss" and lk.payload is None
    holders = {t for t, row in cache.stats()["tenants"].items() if any(r.get("entries") for r in row.values())}
    assert holders == {"alice"}


def test_entries_survive_a_restart(make_cache, tmp_path) -> None:
    def store() -> TieredStore:
        disk = DiskTierConfig(path=tmp_path, fsync=False)
        return TieredStore(StoreConfig(gpu=GpuTierConfig(enabled=False), disk=disk, sweep_interval_s=0))

    s1 = store()
    cache = make_cache(store=s1)
    cache.insert("t", "m", chat("How do I reverse a list in Python?"), answer("lst[::-1]"))
    cache.insert("u", "m", chat("Who wrote Hamlet?"), answer("Shakespeare"))
    s1.close()
    s2 = store()
    again = make_cache(store=s2)
    assert len(again) == 2
    hit = again.lookup("t", "m", chat("How can I reverse a Python list?"))
    assert hit.outcome == "semantic" and b"lst[::-1]" in hit.payload
    assert again.lookup("u", "m", chat("Who wrote Hamlet?")).outcome == "exact"
    assert again.lookup("t", "m", chat("Who wrote Hamlet?")).outcome == "miss"
    s2.close()


def test_error_budget_raises_threshold_after_false_hits(make_cache) -> None:
    cfg = CacheConfig()
    cfg.budget.warmup_sample_rate = 1.0  # verify every would-be hit
    cache = make_cache(cfg)
    start = cache.threshold("conversational")
    cache.insert("t", "m", chat("Give me some tips for a job interview"), answer("Research the company."),
                 category="conversational")
    lk = cache.lookup("t", "m", chat("What are some good job interview tips?"))
    assert lk.sampled and lk.outcome == "miss" and lk.sample.similarity >= start
    verdict = cache.verify(lk.sample, answer("Bake at 180 degrees for 25 minutes."))
    assert verdict is not None and not verdict.agreed
    assert cache.threshold("conversational") > lk.sample.similarity
    stats = cache.stats()
    assert stats["tenants"]["t"]["conversational"]["false_hits"] == 1
    assert stats["categories"]["conversational"]["threshold_changes"]["budget"] == 1
    assert len(cache) == 0  # the disagreeing entry is dropped


def test_error_budget_lowers_threshold_on_clean_evidence(make_cache) -> None:
    cfg = CacheConfig()
    cfg.budget.min_observations = 20
    cache = make_cache(cfg)
    ctl = cache.controllers["factual"]
    lo, start = cfg.category("factual").min_threshold, cfg.category("factual").threshold
    for i in range(60):  # agreeing answers spread over the band under the starting threshold
        ctl.record(lo + (start - lo) * (i % 10) / 10, True)
    assert lo <= ctl.threshold < start
    mid = (lo + start) / 2
    for _ in range(5):
        ctl.record(mid, False)
    assert ctl.threshold > mid


def test_verify_through_insert_and_answer_comparison(make_cache) -> None:
    cache = make_cache()
    paris = answer("Paris is the capital of France.")
    same = cache.comparator.compare(paris, answer("The capital of France is Paris."))
    assert same.agreed
    assert not cache.comparator.compare(answer("It is 42."), answer("It is 41.")).agreed
    assert not cache.comparator.compare(answer("Yes, it is safe."), answer("No, it is not safe.")).agreed


def test_pressure_loosens_within_bounds_and_is_counted(make_cache) -> None:
    registry = CollectorRegistry()
    cache = make_cache(registry=registry)
    base = cache.threshold("code", "m")
    cache.set_pressure("m", 1.0)
    loose = cache.threshold("code", "m")
    assert loose < base and loose >= cache.config.category("code").min_threshold
    assert cache.threshold("code", "other") == base
    cache.set_pressure("m", 0.0)
    assert cache.threshold("code", "m") == base
    assert cache.stats()["categories"]["code"]["threshold_changes"]["pressure"] == 2
    text = generate_latest(registry).decode()
    assert 'tiergate_cache_threshold_changes_total{category="code",reason="pressure"} 2.0' in text


def test_metrics_use_bounded_labels(make_cache) -> None:
    registry = CollectorRegistry()
    cache = make_cache(registry=registry)
    cache.insert("tenant-1", "m", chat("Who wrote Hamlet?"), answer("Shakespeare"))
    cache.lookup("tenant-1", "m", chat("Who wrote Hamlet?"))
    text = generate_latest(registry).decode()
    assert 'tiergate_cache_lookups_total{category="factual",outcome="exact"} 1.0' in text
    assert "tenant-1" not in text


def test_lookup_many_matches_single_lookups(make_cache) -> None:
    cache = make_cache()
    cache.insert("t", "m", chat("How do I reverse a list in Python?"), answer("lst[::-1]"))
    cache.insert("t", "m", chat("Who wrote Hamlet?"), answer("Shakespeare"))
    items = [("t", "m", chat("How can I reverse a Python list?"), None),
             ("t", "m", chat("Who wrote Hamlet?"), None),
             ("t", "m", chat("How do I reverse a list in Java?"), None),
             ("u", "m", chat("Who wrote Hamlet?"), None),
             ("t", "m", {"messages": []}, None),
             ("t", "m", chat("What is my account balance?"), None)]
    many = [lk.outcome for lk in cache.lookup_many(items)]
    assert many == ["semantic", "exact", "miss", "miss", "bypass", "bypass"]
    assert many[:4] == [cache.lookup(*it).outcome for it in items[:4]]


def test_a_failed_record_write_leaves_no_orphan_answer(make_cache) -> None:
    class RecordWritesFail(MemoryEntryStore):  # a full disk between the two writes cannot be timed
        def put(self, namespace, key, value, **kw):
            if key.startswith("m/"):
                raise OSError(28, "No space left on device")
            super().put(namespace, key, value, **kw)

    store = RecordWritesFail()
    cache = make_cache(store=store)
    with pytest.raises(OSError):
        cache.insert("t", "m", chat("How do I sort a list in Python?"), answer("Use sorted()."))
    assert not [k for ns, k in store.data if k.startswith("p/")]


def test_batched_exact_hits_are_not_embedded(make_cache) -> None:
    cache = make_cache()
    cache.insert("t", "m", chat("How do I sort a list in Python?"), answer("Use sorted()."))
    encoded: list[str] = []
    encode = cache.encoder.encode
    cache.encoder.encode = lambda texts, **kw: (encoded.extend(texts), encode(texts, **kw))[1]
    found = cache.lookup_many([("t", "m", chat("How do I sort a list in Python?"), None),
                               ("t", "m", chat("How can I sort a list in Python?"), None)])
    assert [f.outcome for f in found] == ["exact", "semantic"]
    assert encoded == ["How can I sort a list in Python?"]
