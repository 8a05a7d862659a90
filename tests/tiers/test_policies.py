from __future__ import annotations

import pytest

from tiergate.tiers import GDSFPolicy, LRUPolicy, make_policy
from tiergate.tiers.base import Kind, ObjectMeta


def meta(key: str, size: int = 100, cost: float = 1.0, hits: int = 0) -> ObjectMeta:
    return ObjectMeta("ns", key, size, Kind.BYTES, "uint8", (size,), cost=cost, hits=hits)


def drain(policy, skip=lambda k: False) -> list[str]:
    out = []
    while (k := policy.pop_victim(skip)) is not None:
        out.append(k)
    return out


def test_lru_evicts_least_recently_used_first() -> None:
    p = LRUPolicy()
    ms = {k: meta(k) for k in "abcd"}
    for k in "abcd":
        p.insert(k, ms[k])
    p.touch("a", ms["a"])
    p.touch("c", ms["c"])
    assert drain(p) == ["b", "d", "a", "c"]


def test_lru_skips_pinned_and_keeps_them() -> None:
    p = LRUPolicy()
    for k in "abc":
        p.insert(k, meta(k))
    assert p.pop_victim(lambda k: k == "a") == "b"
    assert "a" in p and len(p) == 2


def test_gdsf_prefers_evicting_cheap_large_and_cold_objects() -> None:
    p = GDSFPolicy()
    p.insert("cheap", meta("cheap", cost=1))
    p.insert("dear", meta("dear", cost=100))
    p.insert("big", meta("big", size=20_000, cost=100))  # 0.005
    p.insert("hot", meta("hot", cost=1, hits=50))  # frequency 51 x 0.01 = 0.51
    assert drain(p) == ["big", "cheap", "hot", "dear"]


def test_gdsf_clock_ages_objects_that_are_no_longer_hit() -> None:
    p = GDSFPolicy()
    old = meta("old", cost=100)  # priority 1.0
    p.insert("old", old)
    p.insert("x", meta("x", cost=50))  # 0.5
    assert p.pop_victim() == "x"
    assert p.clock == pytest.approx(0.5)
    # a new object inserted after the eviction starts from the raised clock: 0.5 + 0.6 > 1.0
    p.insert("new", meta("new", cost=60))
    assert p.pop_victim() == "old"


def test_gdsf_touch_updates_priority_and_remove_forgets() -> None:
    p = GDSFPolicy()
    a, b = meta("a"), meta("b")
    p.insert("a", a)
    p.insert("b", b)
    a.hits = 10
    p.touch("a", a)
    p.remove("b")
    assert drain(p) == ["a"]
    assert len(p) == 0


def test_gdsf_skip_keeps_skipped_keys() -> None:
    p = GDSFPolicy()
    for k, c in (("a", 1), ("b", 2), ("c", 3)):
        p.insert(k, meta(k, cost=c))
    assert p.pop_victim(lambda k: k in ("a", "b")) == "c"
    assert drain(p) == ["a", "b"]


def test_make_policy_rejects_unknown_names() -> None:
    assert isinstance(make_policy("lru"), LRUPolicy)
    with pytest.raises(ValueError, match="unknown eviction policy"):
        make_policy("fifo")
