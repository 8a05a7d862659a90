"""The Redis tier: shared by replicas, isolated by namespace, and never a single point of failure."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import redis
import torch

from .helpers import check_invariants, config


def redis_cfg(url: str, tmp=None, **kw):
    return config(
        tmp, redis={"enabled": True, "url": url, "timeout_s": 0.2, "retry_interval_s": 0.05, "max_backoff_s": 0.2}, **kw
    )


def call_with_deadline(fn, seconds: float = 20.0):
    """Run `fn` in a thread; fail (instead of hanging the suite) if it never returns."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "a store call blocked on an unresponsive Redis"
    return out.get("v")


def wait_until(pred, attempts: int = 400) -> bool:
    ev = threading.Event()
    for _ in range(attempts):
        if pred():
            return True
        ev.wait(0.025)
    return False


def test_replicas_share_objects_through_redis(make_store, redis_server) -> None:
    a = make_store(redis_cfg(redis_server))
    b = make_store(redis_cfg(redis_server))
    t = torch.randn(3, 4, dtype=torch.float16)
    a.put("kv", "chunk", t)
    a.put_many("cache/t1", {"x": b"1", "y": b"2"})
    assert not b.contains("kv", "chunk", local_only=True) and b.contains("kv", "chunk")
    assert torch.equal(b.get("kv", "chunk"), t)
    assert b.contains("kv", "chunk", local_only=True)  # promoted into b's host tier
    assert b.get_many("cache/t1", ["x", "y", "z"]) == {"x": b"1", "y": b"2"}
    st = b.stats()["tiers"]["redis"]
    assert st["hits"] == 3 and st["misses"] == 1 and st["promotions"] == 3 and st["up"]
    a.delete("kv", "chunk")
    assert b.get("kv", "chunk") is not None  # b's local copy; coherence is the caller's business
    assert a.get("kv", "chunk") is None
    check_invariants(b)


def test_namespaces_are_isolated_in_redis(make_store, redis_server) -> None:
    a = make_store(redis_cfg(redis_server))
    b = make_store(redis_cfg(redis_server))
    a.put("cache/tenantA", "k", b"secret")
    assert b.get("cache/tenantB", "k") is None
    assert b.get("cache", "tenantA|k") is None
    assert b.get("cache/tenantA", "k") == b"secret"
    a.clear("cache/tenantA")
    c = make_store(redis_cfg(redis_server))
    assert c.get("cache/tenantA", "k") is None


def test_ttl_is_passed_to_redis(make_store, redis_server) -> None:
    s = make_store(redis_cfg(redis_server))
    s.put("ns", "k", b"v", ttl=100)
    pttl = redis.Redis.from_url(redis_server).pttl(s.redis.rkey("ns", "k"))
    assert 0 < pttl <= 100_000


def test_corrupt_redis_value_is_a_miss(make_store, redis_server) -> None:
    s = make_store(redis_cfg(redis_server))
    r = redis.Redis.from_url(redis_server)
    r.set(s.redis.rkey("ns", "bad"), b"TGO1 not really")
    other = make_store(redis_cfg(redis_server))
    other.put("ns", "moved", b"x")
    r.copy(s.redis.rkey("ns", "moved"), s.redis.rkey("ns", "stolen"))  # valid object, wrong name
    assert s.get("ns", "bad") is None and s.get("ns", "stolen") is None
    assert r.exists(s.redis.rkey("ns", "bad")) == 0
    assert s.stats()["tiers"]["redis"]["errors"] == 2


def test_redis_stopped_and_restarted_mid_run(make_store, redis_process, tmp_path) -> None:
    a = make_store(redis_cfg(redis_process.url, tmp_path / "a"))
    b = make_store(redis_cfg(redis_process.url))
    a.put("ns", "before", np.arange(10))
    redis_process.stop()
    # local tiers keep serving reads and writes while Redis is gone
    assert call_with_deadline(lambda: a.get("ns", "before")).tolist() == list(range(10))
    call_with_deadline(lambda: a.put("ns", "during", b"local only"))
    assert a.get("ns", "during") == b"local only"
    assert call_with_deadline(lambda: b.get("ns", "before")) is None  # b has no local copy: a miss
    st = a.stats()["tiers"]["redis"]
    assert st["failures"] >= 1 and not st["up"]
    for _ in range(20):  # while the circuit is open, calls skip Redis instead of waiting on it
        a.get("ns", "nothing")
    assert a.stats()["tiers"]["redis"]["skipped_calls"] > 0
    redis_process.start()  # an empty Redis on the same port

    def reconnected() -> bool:
        a.put("ns", "after", b"shared again")
        return b.get("ns", "after") == b"shared again"

    assert wait_until(reconnected), "the store did not reconnect to Redis"
    assert a.stats()["tiers"]["redis"]["up"]
    check_invariants(a)


def test_unresponsive_redis_never_blocks_longer_than_the_timeout(make_store, redis_process) -> None:
    s = make_store(redis_cfg(redis_process.url))
    s.put("ns", "local", b"x")
    redis_process.pause()  # accepts TCP connections, never answers
    try:
        assert call_with_deadline(lambda: s.get("ns", "missing")) is None
        call_with_deadline(lambda: s.put("ns", "k2", b"y"))
        assert s.get("ns", "local") == b"x" and s.get("ns", "k2") == b"y"
        assert s.stats()["tiers"]["redis"]["failures"] >= 1
    finally:
        redis_process.resume()
    assert wait_until(lambda: s.contains("ns", "k-never") is False and s.stats()["tiers"]["redis"]["up"])


def test_redis_down_at_start(make_store) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = make_store(redis_cfg(f"redis://127.0.0.1:{port}/0"))
    s.put("ns", "k", b"v")
    assert s.get("ns", "k") == b"v" and s.get("ns", "nope") is None
    assert not s.stats()["tiers"]["redis"]["up"]


@pytest.mark.parametrize("local", [True, False])
def test_redis_only_store(make_store, redis_server, local) -> None:
    kw = {} if local else {"host": {"enabled": False}}
    s = make_store(redis_cfg(redis_server, **kw))
    s.put("ns", "k", b"v")
    assert s.get("ns", "k") == b"v"
