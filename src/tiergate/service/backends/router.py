"""Model name -> backends, with retries (same backend) and fallback (next backend).

Retries happen only before anything reached the client: on connect errors and 5xx answers,
with exponential backoff. Overload (429 / a full local queue) skips straight to the next
backend serving the same model name. A backend that times out mid-answer is not retried:
the request may have been billed, and the client has waited long enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tiergate.errors import ModelNotFoundError, OverloadedError, UpstreamError
from tiergate.service.backends.base import Backend, BackendUnavailable
from tiergate.service.metrics import Metrics

T = TypeVar("T")


class Router:
    def __init__(self, backends: list[Backend], metrics: Metrics) -> None:
        self.backends = backends
        self.metrics = metrics
        self.by_model: dict[str, list[Backend]] = {}
        for backend in backends:
            for model in backend.models:
                self.by_model.setdefault(model, []).append(backend)

    def models(self) -> list[str]:
        return list(self.by_model)

    def candidates(self, model: str) -> list[Backend]:
        found = self.by_model.get(model)
        if not found:
            known = ", ".join(sorted(self.by_model)) or "none"
            raise ModelNotFoundError(f"model {model!r} is not served here (available: {known})", param="model")
        return found

    async def call(self, model: str, op: Callable[[Backend], Awaitable[T]]) -> tuple[T, Backend]:
        """Run `op` on the first backend for `model` that takes it."""
        last: Exception | None = None
        candidates = self.candidates(model)
        for i, backend in enumerate(candidates):
            for attempt in range(backend.max_retries + 1):
                try:
                    return await op(backend), backend
                except BackendUnavailable as exc:
                    last = exc
                    self.metrics.backend_errors.labels(backend.name, "unavailable").inc()
                    if not exc.retryable or attempt == backend.max_retries:
                        break
                    self.metrics.retries.labels(backend.name).inc()
                    await asyncio.sleep(backend.retry_backoff_s * (2**attempt))
                except OverloadedError as exc:
                    last = exc
                    self.metrics.backend_errors.labels(backend.name, "overloaded").inc()
                    break
                except UpstreamError:
                    self.metrics.backend_errors.labels(backend.name, "upstream").inc()
                    raise
            if i + 1 < len(candidates):
                self.metrics.fallbacks.labels(backend.name).inc()
        raise _final_error(model, last)


def _final_error(model: str, last: Exception | None) -> Exception:
    if isinstance(last, OverloadedError):
        return last
    if isinstance(last, BackendUnavailable) and last.status == 429:
        return OverloadedError(str(last), retry_after=last.retry_after or 1.0, code="upstream_rate_limited")
    return UpstreamError(f"no backend could serve model {model!r}: {last}")


def describe(backends: list[Backend]) -> list[dict[str, Any]]:
    return [b.status() for b in backends]
