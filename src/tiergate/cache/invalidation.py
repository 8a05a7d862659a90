"""Invalidation broadcast between replicas over Redis pub/sub.

Each replica publishes what it invalidated (and which entries it inserted, so the others can
index them from the shared tier); a listener thread applies other replicas' messages locally.
Pub/sub is fire-and-forget: a replica that was down misses messages, and TTLs bound how long
it can serve what it missed. Publishing runs in the request path (every insert), so a down or hung
Redis must cost next to nothing: short timeouts, no redis-py retries, and a circuit breaker that
skips publishing while Redis keeps failing (one warning when it opens, one line when it closes).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tiergate.tiers.redis_tier import CircuitBreaker

log = logging.getLogger(__name__)


class Invalidator:
    def __init__(self, url: str, channel: str, on_message: Callable[[dict[str, Any]], None], *,
                 publish_timeout_s: float = 0.25, retry_interval_s: float = 1.0, max_backoff_s: float = 30.0) -> None:
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self.on_message = on_message
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._publisher = redis.Redis.from_url(url, socket_timeout=publish_timeout_s,
                                               socket_connect_timeout=publish_timeout_s, retry=Retry(NoBackoff(), 0))
        self.breaker = CircuitBreaker(retry_interval_s, max_backoff_s)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="tiergate-cache-invalidation", daemon=True)
        self._thread.start()
        self.received = 0
        self.published = 0
        self.dropped = 0  # not sent: Redis failed, or the breaker skipped it

    def publish(self, message: dict[str, Any]) -> None:
        if not self.breaker.allow():
            self.dropped += 1
            return
        try:
            self._publisher.publish(self.channel, orjson.dumps({**message, "origin": self.origin}))
        except (redis.RedisError, OSError) as exc:  # never fail or stall a request because a broadcast failed
            self.dropped += 1
            if not self.breaker.is_open:
                log.warning("cache invalidation broadcast failed, skipping broadcasts while Redis fails: %s", exc)
            self.breaker.failure()
            return
        if self.breaker.is_open:
            log.info("cache invalidation broadcasts resumed (%d dropped so far)", self.dropped)
        self.breaker.success()
        self.published += 1

    def _listen(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                msg = self._pubsub.get_message(timeout=0.2)
            except (redis.RedisError, ValueError, OSError) as exc:
                if self._stop.is_set():
                    return
                if not failing:  # once per outage, not once a second
                    log.warning("cache invalidation listener lost Redis, retrying every second: %s", exc)
                failing = True
                self._stop.wait(1.0)
                continue
            if failing:
                log.info("cache invalidation listener reconnected")
                failing = False
                # Redis answers again: broadcast from now on rather than after the publisher's
                # backoff, which can be 30 s long after an outage; a skipped broadcast is lost.
                self.breaker.success()
            if msg is None or msg.get("type") != "message":
                continue
            try:
                data = orjson.loads(msg["data"])
            except orjson.JSONDecodeError:
                continue
            if data.get("origin") == self.origin:
                continue
            self.received += 1
            try:
                self.on_message(data)
            except Exception:  # a bad message must not kill the listener
                log.exception("cache invalidation message failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        try:
            self._pubsub.close()
            self._redis.close()
            self._publisher.close()
        except redis.RedisError:
            pass
