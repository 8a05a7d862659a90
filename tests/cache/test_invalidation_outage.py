"""Invalidation broadcasts while Redis is hung or gone: inserts must not wait on it."""

from __future__ import annotations

import time

import pytest

from tiergate.cache.invalidation import Invalidator


def _eventually(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _delivered(sender: Invalidator, received: list[dict], id_: str) -> bool:
    sender.publish({"op": "insert", "id": id_})
    return any(m.get("id") == id_ for m in received)


def test_a_hung_redis_opens_the_breaker_and_later_broadcasts_skip_it(redis_process) -> None:
    received: list[dict] = []
    sender = Invalidator(redis_process.url, "ch", lambda m: None, retry_interval_s=60.0)
    listener = Invalidator(redis_process.url, "ch", received.append)
    try:
        time.sleep(0.2)  # both subscribed
        sender.publish({"op": "insert", "id": "1"})
        assert _eventually(lambda: len(received) == 1)

        redis_process.pause()  # accepts connections, never answers
        for i in range(20):
            sender.publish({"op": "insert", "id": str(i)})
        # Only the first broadcast waited on the socket; the other 19 never touched it.
        assert sender.breaker.is_open
        assert sender.breaker.failures == 1
        assert sender.breaker.skipped == 19
        assert sender.dropped == 20 and sender.published == 1
    finally:
        redis_process.resume()
        sender.close()
        listener.close()


@pytest.mark.parametrize(("retry_s", "backoff_s"), [(0.1, 0.2), (60.0, 60.0)])
def test_broadcasts_resume_after_redis_restarts(redis_process, retry_s: float, backoff_s: float) -> None:
    """After an outage broadcasts go out once Redis answers again; with a 60 s retry interval, that is
    only so because the listener's reconnect closes the breaker (a skipped broadcast is lost)."""
    received: list[dict] = []
    sender = Invalidator(redis_process.url, "ch", lambda m: None, retry_interval_s=retry_s,
                         max_backoff_s=backoff_s)
    listener = Invalidator(redis_process.url, "ch", received.append)
    try:
        time.sleep(0.2)
        redis_process.stop()
        sender.publish({"op": "insert", "id": "lost"})
        assert sender.dropped == 1 and sender.breaker.is_open
        redis_process.start()  # same port, empty

        assert _eventually(lambda: _delivered(sender, received, "after"))
        assert not sender.breaker.is_open
    finally:
        sender.close()
        listener.close()
