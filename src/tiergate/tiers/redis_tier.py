"""Redis tier: a tier shared by every replica pointing at the same Redis.

Writes are write-through from `put` (replicas see an object as soon as the put returns, and no
dirty state is lost if this process dies); reads fall back to Redis after a local miss. Values
use the same self-describing, checksummed format as the disk tier, and keys embed the namespace
(`<prefix><namespace>|<key>`; namespaces cannot contain '|'), so namespaces stay isolated here too.

Redis being down or slow must never stall the gateway: every socket operation has
`timeout_s`, redis-py's own retries are off, and a circuit breaker skips Redis entirely for
`retry_interval_s` after a failure (doubling up to `max_backoff_s` while failures continue), then
lets one probe call through; the first success closes it again. Callers see
`TierUnavailableError` and carry on with the local tiers. Memory limits inside Redis are Redis's
business (`maxmemory` + an eviction policy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tiergate.tiers.base import TierName
from tiergate.tiers.config import RedisTierConfig
from tiergate.tiers.errors import TierUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")


class CircuitBreaker:
    """Closed: calls pass. Open: calls are refused until `open_until`, then one probe passes."""

    def __init__(self, retry_interval_s: float, max_backoff_s: float, clock: Callable[[], float] = time.monotonic):
        self.retry_interval_s = retry_interval_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._interval = retry_interval_s
        self.open_until: float | None = None
        self._probing = False
        self.failures = 0
        self.consecutive_failures = 0
        self.skipped = 0

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allow(self) -> bool:
        with self._lock:
            if self.open_until is None:
                return True
            if not self._probing and self._clock() >= self.open_until:
                self._probing = True
                return True
            self.skipped += 1
            return False

    def success(self) -> None:
        with self._lock:
            self.open_until = None
            self._probing = False
            self._interval = self.retry_interval_s
            self.consecutive_failures = 0

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            self.consecutive_failures += 1
            interval = self._interval if self.open_until is not None else self.retry_interval_s
            self.open_until = self._clock() + interval
            self._interval = min(interval * 2, self.max_backoff_s)
            self._probing = False


class RedisTier:
    name = TierName.REDIS

    def __init__(self, cfg: RedisTierConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.prefix = cfg.key_prefix
        self.breaker = CircuitBreaker(cfg.retry_interval_s, cfg.max_backoff_s, clock)
        self._pool = redis.ConnectionPool.from_url(
            cfg.url,
            socket_timeout=cfg.timeout_s,
            socket_connect_timeout=cfg.timeout_s,
            max_connections=cfg.max_connections,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._client = redis.Redis(connection_pool=self._pool)

    def rkey(self, namespace: str, key: str) -> str:
        return f"{self.prefix}{namespace}|{key}"

    def _call(self, what: str, fn: Callable[[redis.Redis], T]) -> T:
        if not self.breaker.allow():
            raise TierUnavailableError(f"redis tier unavailable ({self.cfg.url}); retrying later", tier=self.name)
        try:
            result = fn(self._client)
        except (redis.RedisError, OSError) as e:
            self.breaker.failure()
            log.warning("redis tier %s failed (%s): %s", what, self.cfg.url, e)
            self._pool.disconnect(inuse_connections=False)
            raise TierUnavailableError(f"redis tier {what} failed at {self.cfg.url}: {e}", tier=self.name) from e
        self.breaker.success()
        return result

    def get(self, rkey: str) -> bytes | None:
        return self._call("GET", lambda c: c.get(rkey))

    def mget(self, rkeys: Sequence[str]) -> list[bytes | None]:
        return self._call("MGET", lambda c: c.mget(rkeys)) if rkeys else []

    def set_many(self, items: Iterable[tuple[str, bytes, int | None]]) -> None:
        """SET each (key, blob, ttl in ms or None) in one pipeline round trip."""
        items = list(items)
        if not items:
            return

        def run(c: redis.Redis) -> Any:
            pipe = c.pipeline(transaction=False)
            for k, blob, ttl_ms in items:
                pipe.set(k, blob, px=ttl_ms)
            return pipe.execute()

        self._call("SET", run)

    def delete(self, rkeys: Sequence[str]) -> int:
        return int(self._call("DEL", lambda c: c.delete(*rkeys))) if rkeys else 0

    def exists(self, rkey: str) -> bool:
        return bool(self._call("EXISTS", lambda c: c.exists(rkey)))

    def delete_namespace(self, namespace: str) -> int:
        pattern = _glob_escape(f"{self.prefix}{namespace}|") + "*"

        def run(c: redis.Redis) -> int:
            n, batch = 0, []
            for k in c.scan_iter(match=pattern, count=500):
                batch.append(k)
                if len(batch) >= 500:
                    n += c.delete(*batch)
                    batch.clear()
            if batch:
                n += c.delete(*batch)
            return n

        return self._call("SCAN/DEL", run)

    def status(self) -> dict[str, Any]:
        b = self.breaker
        return {
            "url": _redact(self.cfg.url),
            "up": not b.is_open,
            "failures": b.failures,
            "consecutive_failures": b.consecutive_failures,
            "skipped_calls": b.skipped,
        }

    def close(self) -> None:
        self._pool.disconnect()


def _glob_escape(s: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
