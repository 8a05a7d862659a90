"""The semantic cache in the request path: what the headers ask for, replaying a stored answer
(as JSON or as SSE), assembling a finished stream into a storable answer, and letting identical
concurrent misses share one backend call."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers

from tiergate.errors import InvalidRequestError


@dataclass(frozen=True)
class CacheDirectives:
    no_cache: bool = False  # skip the lookup (still store the fresh answer)
    no_store: bool = False  # do not store the answer
    ttl_s: float | None = None  # shorter TTL for what gets stored
    category: str | None = None

    @classmethod
    def from_request(cls, headers: Headers, category_field: str | None) -> CacheDirectives:
        control = {part.strip().lower() for part in headers.get("cache-control", "").split(",")}
        ttl_s = None
        if (raw := headers.get("x-tiergate-cache-ttl")) is not None:
            try:
                ttl_s = float(raw)
            except ValueError:
                ttl_s = math.nan
            if math.isnan(ttl_s):  # a NaN TTL would never expire
                raise InvalidRequestError(f"X-Tiergate-Cache-TTL must be a number of seconds, got {raw!r}")
            if ttl_s < 0:
                raise InvalidRequestError("X-Tiergate-Cache-TTL must not be negative")
        return cls(
            no_cache="no-cache" in control,
            no_store="no-store" in control,
            ttl_s=ttl_s,
            category=headers.get("x-tiergate-category") or category_field,
        )


def replay_json(payload: bytes) -> dict[str, Any]:
    """A stored answer with a fresh id and time, as the client would get it live."""
    data = orjson.loads(payload)
    data["id"] = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    data["created"] = int(time.time())
    return data


def replay_chunks(data: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A replayed answer (`replay_json`) as the chunks of a live stream: role, content, finish, usage."""
    base = {"id": data["id"], "object": "chat.completion.chunk", "created": data["created"], "model": data["model"]}
    chunks = []
    for choice in data.get("choices", []):
        message = choice.get("message") or {}
        i = choice.get("index", 0)
        chunks.append({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": i, "delta": {"content": message.get("content") or ""},
                                            "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": i, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    if include_usage and data.get("usage"):
        chunks.append({**base, "choices": [], "usage": data["usage"]})
    return chunks


class StreamAssembler:
    """Collects a stream's chunks into the complete answer it amounts to, or None when the stream
    carried something a replay could not reproduce (tool calls, several choices)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.first: dict[str, Any] | None = None
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.storable = True

    def add(self, chunk: dict[str, Any]) -> None:
        if self.first is None:
            self.first = chunk
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if choice.get("index", 0) != 0 or "tool_calls" in delta or "function_call" in delta:
                self.storable = False
            if delta.get("content"):
                self.parts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def result(self) -> dict[str, Any] | None:
        if not self.storable or self.first is None or self.finish is None:
            return None
        answer = {
            "id": self.first.get("id"), "object": "chat.completion", "created": self.first.get("created"),
            "model": self.first.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.parts)},
                         "finish_reason": self.finish}],
        }
        if self.usage:
            answer["usage"] = self.usage
        return answer


def storable(answer: dict[str, Any]) -> bool:
    """Only complete, plain-text answers are worth replaying."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        return False
    choice = choices[0]
    message = choice.get("message") or {}
    return (choice.get("finish_reason") in ("stop", "length") and isinstance(message.get("content"), str)
            and not message.get("tool_calls"))


class Coalescer:
    """Identical concurrent misses wait for one leader's answer instead of each calling the backend."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    def follow(self, key: str) -> asyncio.Future[bytes] | None:
        """The leader's future when an identical request is already in flight."""
        return self._inflight.get(key)

    def lead(self, key: str) -> Callable[[bytes | BaseException], None]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future

        def settle(outcome: bytes | BaseException) -> None:
            if self._inflight.get(key) is future:
                del self._inflight[key]
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
                future.exception()  # followers may be gone: never "exception was never retrieved"
            else:
                future.set_result(outcome)

        return settle

    def __len__(self) -> int:
        return len(self._inflight)


async def wait_for(future: Awaitable[bytes], timeout: float) -> bytes:
    return await asyncio.wait_for(asyncio.shield(future), timeout)
