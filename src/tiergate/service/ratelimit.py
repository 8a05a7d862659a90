"""Per-key rate limits: requests and tokens per minute, as token buckets in this process.

Requests are counted when they arrive; tokens when the answer's usage is known, so a key that
ran over its token budget is refused (429 with Retry-After) until the bucket refills.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tiergate.config import AuthConfig, RateLimit
from tiergate.errors import OverloadedError


@dataclass
class _Bucket:
    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.capacity / 60.0
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available."""
        return max(0.0, (amount - self.level) * 60.0 / self.capacity)


class RateLimiter:
    def __init__(self, config: AuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.default = config.rate_limit
        self.per_tenant = config.tenant_rate_limits
        self.clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def _limit(self, tenant: str) -> RateLimit:
        return self.per_tenant.get(tenant, self.default)

    def _bucket(self, key_id: str, kind: str, capacity: int, now: float) -> _Bucket:
        bucket = self._buckets.get((key_id, kind))
        if bucket is None or bucket.capacity != capacity:
            bucket = self._buckets[(key_id, kind)] = _Bucket(capacity, capacity, now)
        bucket.refill(now)
        return bucket

    def admit(self, key_id: str, tenant: str) -> None:
        """Count one request; raise OverloadedError when the key is over either limit."""
        limit = self._limit(tenant)
        if limit.requests_per_minute is None and limit.tokens_per_minute is None:
            return
        now = self.clock()
        with self._lock:
            if limit.tokens_per_minute is not None:
                tokens = self._bucket(key_id, "tokens", limit.tokens_per_minute, now)
                if tokens.level <= 0:
                    raise _limited("tokens", limit.tokens_per_minute, tokens.wait_for(1))
            if limit.requests_per_minute is not None:
                requests = self._bucket(key_id, "requests", limit.requests_per_minute, now)
                if requests.level < 1:
                    raise _limited("requests", limit.requests_per_minute, requests.wait_for(1))
                requests.level -= 1

    def charge(self, key_id: str, tenant: str, tokens: int) -> None:
        """Debit the tokens an answer used (the bucket may go negative: the next request waits)."""
        limit = self._limit(tenant).tokens_per_minute
        if limit is None or tokens <= 0:
            return
        with self._lock:
            self._bucket(key_id, "tokens", limit, self.clock()).level -= tokens


def _limited(kind: str, per_minute: int, wait_s: float) -> OverloadedError:
    return OverloadedError(f"rate limit reached: {per_minute} {kind} per minute for this key",
                           retry_after=max(1.0, wait_s), code="rate_limit_exceeded")
