"""What the response cache saves: backend calls, tokens, seconds and money, per model.

A plain ASGI middleware watches chat completions as they leave: the cache outcome header says
whether the backend was called. Answers the backend produced teach the typical latency and token
count of each model; every hit then counts the replayed answer's tokens (or the model's typical
count when a stream carried no usage) and the time the typical backend call would have taken
beyond the hit's own time. Nothing is parsed before the response has been sent.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CHAT = "/v1/chat/completions"
HITS = ("exact", "semantic")
OTHER = "other"
_MAX_BODY = 1 << 20  # larger answers are not inspected (usage then falls back on the typical count)


@dataclass
class ModelSavings:
    hits: int = 0
    tokens: float = 0.0
    seconds: float = 0.0
    cost: float = 0.0
    # What a backend call of this model typically costs (exponential moving averages).
    backend_seconds: float | None = None
    backend_tokens: float | None = None


class Savings:
    """Thread-safe totals per model; models outside `known` add up under 'other' (bounded labels)."""

    def __init__(self, cost_per_1k: dict[str, float], known: set[str], alpha: float = 0.1) -> None:
        self.cost_per_1k = cost_per_1k
        self.known = known
        self.alpha = alpha
        self._lock = threading.Lock()
        self._models: dict[str, ModelSavings] = {}

    def label(self, model: str | None) -> str:
        return model if model in self.known else OTHER

    def observe(self, outcome: str, model: str | None, tokens: int | None, seconds: float) -> None:
        name = self.label(model)
        with self._lock:
            m = self._models.setdefault(name, ModelSavings())
            if outcome == "miss":
                m.backend_seconds = _ewma(m.backend_seconds, seconds, self.alpha)
                if tokens:
                    m.backend_tokens = _ewma(m.backend_tokens, tokens, self.alpha)
                return
            if outcome not in HITS:
                return
            saved_tokens = tokens if tokens else (m.backend_tokens or 0.0)
            m.hits += 1
            m.tokens += saved_tokens
            if m.backend_seconds is not None:
                m.seconds += max(0.0, m.backend_seconds - seconds)
            m.cost += saved_tokens / 1000.0 * self.cost_per_1k.get(name, 0.0)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v.__dict__) for k, v in self._models.items()}

    def totals(self) -> dict[str, float]:
        snap = self.snapshot().values()
        return {k: float(sum(m[k] for m in snap)) for k in ("hits", "tokens", "seconds", "cost")}


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else old + alpha * (new - old)


class SavingsMiddleware:
    def __init__(self, app: ASGIApp, *, savings: Savings) -> None:
        self.app = app
        self.savings = savings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request: list[bytes] = []
        response: list[bytes] = []
        outcome = ""
        size = 0

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.request" and sum(map(len, request)) < _MAX_BODY:
                request.append(message.get("body", b""))
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal outcome, size
            if message["type"] == "http.response.start" and message["status"] == 200:
                for k, v in message.get("headers", ()):
                    if k.lower() == b"x-tiergate-cache":
                        outcome = v.decode("latin-1")
            elif message["type"] == "http.response.body" and outcome and size < _MAX_BODY:
                body = message.get("body", b"")
                size += len(body)
                response.append(body)
            await send(message)

        await self.app(scope, receive_wrapper, send_wrapper)
        if outcome in (*HITS, "miss"):
            model, tokens = _read(b"".join(request), b"".join(response))
            self.savings.observe(outcome, model, tokens, time.perf_counter() - started)


def _read(request: bytes, response: bytes) -> tuple[str | None, int | None]:
    """The requested model, and the answer's total tokens when its usage is known."""
    try:
        model = orjson.loads(request).get("model")
    except (orjson.JSONDecodeError, AttributeError):
        model = None
    usage: Any = None
    if response.startswith(b"data:"):
        for line in response.split(b"\n"):
            if b'"usage"' in line and line.startswith(b"data: {"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    usage = orjson.loads(line[6:]).get("usage") or usage
    else:
        try:
            usage = orjson.loads(response).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            usage = None
    tokens = None
    if isinstance(usage, dict):
        total = usage.get("total_tokens") or (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
        tokens = int(total) if isinstance(total, int | float) and total > 0 else None
    return (model if isinstance(model, str) else None), tokens
