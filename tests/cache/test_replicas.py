from __future__ import annotations

import time

from .conftest import answer, chat


def _eventually(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_invalidation_reaches_other_replicas_over_redis(redis_server, make_cache) -> None:
    # Two replicas over one shared store (the shared Redis tier in production).
    from tiergate.cache.entries import MemoryEntryStore

    shared = MemoryEntryStore()
    a = make_cache(store=shared, redis_url=redis_server)
    b = make_cache(store=shared, redis_url=redis_server)
    time.sleep(0.2)  # both subscribed
    a.insert("t", "m", chat("Who wrote Hamlet?"), answer("Shakespeare"))
    assert _eventually(lambda: len(b) == 1)  # b indexed a's insert from the shared store
    assert b.lookup("t", "m", chat("Who wrote Hamlet?")).outcome == "exact"
    assert a.invalidate(tenant="t", prompt_prefix="who wrote") == 1
    assert _eventually(lambda: len(b) == 0)
    assert b.lookup("t", "m", chat("Who wrote Hamlet?")).outcome == "miss"
    assert a.invalidator.published == 2 and b.invalidator.received == 2
