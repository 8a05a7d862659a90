"""Invalidation broadcast between replicas over Redis pub/sub.

Each replica publishes what it invalidated (and which entries it inserted, so the others can
index them from the shared tier); a listener thread applies other replicas' messages locally.
Pub/sub is fire-and-forget: a replica that was down misses messages, and TTLs bound how long
it can serve what it missed.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis

log = logging.getLogger(__name__)


class Invalidator:
    def __init__(self, url: str, channel: str, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self.on_message = on_message
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="tiergate-cache-invalidation", daemon=True)
        self._thread.start()
        self.received = 0
        self.published = 0

    def publish(self, message: dict[str, Any]) -> None:
        try:
            self._redis.publish(self.channel, orjson.dumps({**message, "origin": self.origin}))
            self.published += 1
        except redis.RedisError as exc:  # never fail a request because a broadcast failed
            log.warning("cache invalidation broadcast failed: %s", exc)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._pubsub.get_message(timeout=0.2)
            except (redis.RedisError, ValueError, OSError) as exc:
                if self._stop.is_set():
                    return
                log.warning("cache invalidation listener: %s", exc)
                self._stop.wait(1.0)
                continue
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
        except redis.RedisError:
            pass
