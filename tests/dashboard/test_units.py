"""The dashboard's parts without a browser: sessions, the series, quantiles, savings."""

from __future__ import annotations

import pytest

from tiergate.service.dashboard.quantiles import diff, quantile
from tiergate.service.dashboard.sampler import derive
from tiergate.service.dashboard.savings import Savings
from tiergate.service.dashboard.session import SessionSigner
from tiergate.service.dashboard.timeseries import Series


def test_session_tokens_expire_and_resist_tampering():
    signer = SessionSigner("sk-admin-000000003", ttl_s=60)
    token = signer.issue(now=1000)
    assert signer.valid(token, now=1059)
    assert not signer.valid(token, now=1060)
    expiry, nonce, mac = token.split(".")
    assert not signer.valid(f"{int(expiry) + 3600}.{nonce}.{mac}", now=1000)
    assert not SessionSigner("another-admin-key", ttl_s=60).valid(token, now=1000)
    assert not signer.valid("", now=1000) and not signer.valid("a.b", now=1000)
    assert signer.csrf(token) != signer.csrf(signer.issue(now=1000))


def test_series_is_bounded_aligned_and_survives_a_restart(tmp_path):
    s = Series(points=3)
    s.append(1.0, {"a": 1.0})
    s.append(2.0, {"a": 2.0, "b": 5.0})
    s.append(3.0, {"b": 6.0})
    s.append(4.0, {"a": 4.0})
    d = s.to_dict()
    assert d == {"t": [2.0, 3.0, 4.0], "series": {"a": [2.0, None, 4.0], "b": [5.0, 6.0, None]}}
    assert s.to_dict(since=2.5)["t"] == [3.0, 4.0]
    path = tmp_path / "dashboard" / "series.json"
    s.save(path)
    restored = Series.load(path, points=2)
    assert restored.to_dict() == {"t": [3.0, 4.0], "series": {"a": [None, 4.0], "b": [6.0, None]}}
    path.write_text("{not json")
    assert len(Series.load(path, points=5)) == 0  # a damaged file starts an empty series, not a crash


def test_quantiles_from_histogram_buckets():
    before = {0.1: 0.0, 1.0: 0.0, float("inf"): 0.0}
    now = {0.1: 50.0, 1.0: 100.0, float("inf"): 100.0}
    window = diff(now, before)
    assert quantile(0.5, window) == pytest.approx(0.1)
    assert quantile(0.99, window) == pytest.approx(0.1 + 0.9 * 49 / 50)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert diff({1.0: 3.0}, {1.0: 9.0}) == {1.0: 3.0}  # the counter restarted


def test_savings_count_hits_against_the_models_backend_calls():
    savings = Savings({"m": 2.0}, {"m"})
    savings.observe("miss", "m", 100, 1.0)
    savings.observe("exact", "m", 100, 0.1)
    savings.observe("semantic", "m", None, 0.2)  # a stream without usage: the typical count
    savings.observe("exact", "unknown-model", 50, 0.1)
    snap = savings.snapshot()
    assert snap["m"]["hits"] == 2 and snap["m"]["tokens"] == 200
    assert snap["m"]["seconds"] == pytest.approx(0.9 + 0.8)
    assert snap["m"]["cost"] == pytest.approx(0.4)
    assert set(snap) == {"m", "other"}  # bounded labels


def test_savings_observe_finished_chat_completions_only():
    savings = Savings({}, {"m"})
    savings.observe_request("/v1/chat/completions", 200, {"cache": "miss", "model": "m", "tokens": 10}, 1.0)
    savings.observe_request("/v1/chat/completions", 200, {"cache": "exact", "model": "m", "tokens": 10}, 0.1)
    savings.observe_request("/v1/chat/completions", 502, {"cache": "exact", "model": "m", "tokens": 10}, 0.1)
    savings.observe_request("/v1/embeddings", 200, {"cache": "exact", "model": "m", "tokens": 10}, 0.1)
    savings.observe_request("/v1/chat/completions", 200, {"cache": "bypass", "model": "m"}, 0.1)
    assert savings.totals()["hits"] == 1 and savings.totals()["tokens"] == 10


def test_series_points_are_amounts_per_interval():
    def ov(exact: int, miss: int) -> dict:
        return {
            "cache": {"available": True, "exact": exact, "semantic": 0, "miss": miss, "bypass": 0, "entries": 1,
                      "payload_bytes": 10, "categories": [], "tenants": [],
                      "saved": {"hits": exact, "tokens": 0.0, "seconds": 0.0, "cost": 0.0}},
            "kv": {"available": False}, "tiers": {"tiers": []}, "backends": {"backends": [], "inflight": 0},
            "indexes": {"count": 0, "passages": 0, "jobs": None},
        }
    p = derive(ov(5, 5), ov(2, 4), {})
    assert p["cache.exact"] == 3 and p["cache.miss"] == 1 and p["cache.hit_rate"] == 0.75
    assert derive(ov(1, 0), ov(9, 9), {})["cache.exact"] == 1  # restarted counters count from zero
    assert derive(ov(2, 4), ov(2, 4), {})["cache.hit_rate"] is None  # no lookups: a gap, not 0%
