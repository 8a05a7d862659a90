"""What every backend offers the router: a complete answer, or a stream of OpenAI chunks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from tiergate.errors import NotFoundError, UpstreamError
from tiergate.service.schemas import ChatCompletionRequest, EmbeddingRequest

Chunk = dict[str, Any]


class BackendUnavailable(UpstreamError):
    """Nothing reached the client yet, so another attempt or another backend may serve it.

    `retryable` is true for connect errors and 5xx answers (try the same backend again after
    a backoff); false for overload (go straight to the next backend).
    """

    def __init__(self, message: str, *, retryable: bool, status: int = 502, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class Backend(ABC):
    name: str
    kind: str
    models: list[str]
    max_retries: int = 0
    retry_backoff_s: float = 0.0

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections or start loading; must not block the event loop."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and workers."""

    @property
    def ready(self) -> bool:
        return True

    def pressure(self) -> float:
        """How overloaded this backend is, 0 (idle) to 1 (saturated)."""
        return 0.0

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "ready": self.ready, "models": self.models}

    @abstractmethod
    async def complete(self, req: ChatCompletionRequest, tenant: str) -> dict[str, Any]:
        """The whole chat completion as OpenAI's JSON object. `tenant` scopes any state the
        backend keeps between requests (the local engine's KV chunks)."""

    @abstractmethod
    async def open_stream(self, req: ChatCompletionRequest, tenant: str) -> AsyncIterator[Chunk]:
        """Connect and check the answer's status, then return an iterator of chunks.

        Everything that can fail before the first byte fails here, so the router can retry.
        """

    async def embed(self, req: EmbeddingRequest) -> dict[str, Any]:
        raise NotFoundError(f"backend {self.name!r} does not serve embeddings")
