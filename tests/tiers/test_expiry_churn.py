"""The expiry heap under churn: deleted and overwritten objects must not pile up in it."""

from __future__ import annotations

from tiergate.tiers import StoreConfig, TieredStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_expiry_heap_stays_bounded_under_put_delete_churn() -> None:
    clock = Clock()
    store = TieredStore(StoreConfig(sweep_interval_s=0), clock=clock)
    try:
        for i in range(30_000):  # a cache at its quota: every insert evicts an older entry
            store.put("ns", f"k{i}", b"x" * 16, ttl=7 * 86400)
            if i >= 100:
                store.delete("ns", f"k{i - 100}")
        for _ in range(10_000):  # overwriting one key leaves its older items stale too
            store.put("ns", "same", b"y", ttl=86400)
        assert len(store._expiry) <= 2 * 4096 + 1
    finally:
        store.close()


def test_expiry_still_removes_live_objects_after_the_heap_is_rebuilt() -> None:
    clock = Clock()
    store = TieredStore(StoreConfig(sweep_interval_s=0), clock=clock)
    try:
        for i in range(10_000):
            store.put("ns", f"gone{i}", b"x", ttl=60)
            store.delete("ns", f"gone{i}")
        store.put("ns", "short", b"s", ttl=10)
        store.put("ns", "long", b"l", ttl=1000)
        clock.now += 100
        assert store.sweep() == 1
        assert store.get("ns", "short") is None
        assert store.get("ns", "long", as_="bytes") == b"l"
    finally:
        store.close()
