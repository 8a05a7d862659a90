"""Per-key limits on requests and tokens per minute."""

from __future__ import annotations

import httpx
import pytest

from tests.service.conftest import run_gateway, upstream_settings
from tests.upstream_server import UpstreamServer
from tiergate.config import AuthConfig
from tiergate.errors import OverloadedError
from tiergate.service.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_refill():
    clock = Clock()
    limiter = RateLimiter(AuthConfig(rate_limit={"requests_per_minute": 2}), clock=clock)
    limiter.admit("k", "t")
    limiter.admit("k", "t")
    with pytest.raises(OverloadedError) as err:
        limiter.admit("k", "t")
    assert 29 <= err.value.retry_after <= 31  # one request comes back every 30 s
    limiter.admit("other-key", "t")  # keys are limited separately
    clock.now += 30
    limiter.admit("k", "t")


def test_tokens_per_minute_charged_after_use():
    clock = Clock()
    limiter = RateLimiter(AuthConfig(rate_limit={"tokens_per_minute": 600}), clock=clock)
    limiter.admit("k", "t")
    limiter.charge("k", "t", 900)  # over budget: the bucket goes negative
    with pytest.raises(OverloadedError, match="600 tokens per minute"):
        limiter.admit("k", "t")
    clock.now += 31  # 10 tokens a second: 31 s bring the bucket from -300 back above zero
    limiter.admit("k", "t")


def test_tenant_override_and_unlimited_default():
    limiter = RateLimiter(AuthConfig(tenant_rate_limits={"small": {"requests_per_minute": 1}}), clock=Clock())
    for _ in range(50):
        limiter.admit("k1", "big")
    limiter.admit("k2", "small")
    with pytest.raises(OverloadedError):
        limiter.admit("k2", "small")


def test_http_429_with_retry_after(tmp_path):
    up = UpstreamServer().start()
    keys = {"sk-limited-0000001": "a", "sk-limited-0000002": "b"}
    settings = upstream_settings(tmp_path, {"name": "up", "kind": "openai", "base_url": up.base_url,
                                            "models": ["m"]},
                                 auth={"api_keys": keys, "rate_limit": {"requests_per_minute": 2}})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    try:
        with run_gateway(settings) as url:
            def post(key: str) -> httpx.Response:
                return httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})

            assert [post("sk-limited-0000001").status_code for _ in range(2)] == [200, 200]
            refused = post("sk-limited-0000001")
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert post("sk-limited-0000002").status_code == 200
            assert up.requests == 3
    finally:
        up.stop()
