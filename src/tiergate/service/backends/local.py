"""The in-process engine as a backend: OpenAI requests in, OpenAI responses and chunks out."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from tiergate.config import PACKAGED_GENERATOR, BackendConfig, EngineConfig
from tiergate.engine.generate import Finished, GenerationRequest, TextDelta, Usage
from tiergate.engine.prompt import Document
from tiergate.engine.runner import EngineRunner
from tiergate.engine.sampling import SamplingParams
from tiergate.errors import InvalidRequestError
from tiergate.kvstore import KVOptions
from tiergate.service.backends.base import Backend, Chunk
from tiergate.service.schemas import ChatCompletionRequest

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class LocalBackend(Backend):
    kind = "local"

    def __init__(self, config: BackendConfig, engine: EngineConfig, runner: EngineRunner) -> None:
        self.name = config.name
        self.models = list(config.models) or [PACKAGED_GENERATOR]
        self.limits = engine
        self.runner = runner

    async def start(self) -> None:
        self.runner.start()

    async def close(self) -> None:
        self.runner.stop()

    @property
    def ready(self) -> bool:
        return self.runner.ready

    def pressure(self) -> float:
        return min(1.0, self.runner.queue_depth / max(1, self.limits.queue_size))

    def status(self) -> dict[str, Any]:
        return {**super().status(), "model_id": self.runner.model_id, "queue_depth": self.runner.queue_depth,
                "busy_workers": self.runner.busy}

    def to_generation(self, req: ChatCompletionRequest, tenant: str) -> GenerationRequest:
        if req.n != 1:
            raise InvalidRequestError("the local model serves n=1 only", param="n")
        messages = []
        for i, m in enumerate(req.messages):
            if m.role not in _ROLES:
                raise InvalidRequestError(f"messages[{i}]: role {m.role!r} is not supported by the local model",
                                          param=f"messages.{i}.role")
            if m.has_non_text():
                raise InvalidRequestError(f"messages[{i}]: the local model accepts text content only",
                                          param=f"messages.{i}.content")
            messages.append({"role": _ROLES[m.role], "content": m.text()})
        max_tokens = req.requested_max_tokens() or self.limits.default_max_tokens
        if max_tokens > self.limits.max_tokens_limit:
            raise InvalidRequestError(
                f"max_tokens {max_tokens} is over this server's limit of {self.limits.max_tokens_limit}",
                param="max_tokens",
            )
        sampling = SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=req.stop_list(),
            seed=req.seed,
        )
        documents = [Document(text=d.text, id=d.id) for d in req.documents or ()]
        kv = KVOptions(enabled=req.kv.enabled, recompute_ratio=req.kv.recompute_ratio, adaptive=req.kv.adaptive,
                       namespace=tenant) if req.kv is not None else KVOptions(namespace=tenant)
        return GenerationRequest(messages=messages, sampling=sampling, documents=documents, kv=kv)

    async def complete(self, req: ChatCompletionRequest, tenant: str) -> dict[str, Any]:
        events = self.runner.submit(self.to_generation(req, tenant))
        parts: list[str] = []
        finished: Finished | None = None
        async for event in events:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                finished = event
        assert finished is not None
        return {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "".join(parts)},
                "finish_reason": finished.reason,
            }],
            "usage": usage_dict(finished.usage),
        }

    async def open_stream(self, req: ChatCompletionRequest, tenant: str) -> AsyncIterator[Chunk]:
        events = self.runner.submit(self.to_generation(req, tenant))  # raises at once when the queue is full
        return self._chunks(req, events)

    async def _chunks(self, req: ChatCompletionRequest, events: AsyncIterator[Any]) -> AsyncIterator[Chunk]:
        base = {"id": _completion_id(), "object": "chat.completion.chunk", "created": int(time.time()),
                "model": req.model}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        async for event in events:
            if isinstance(event, TextDelta):
                yield chunk({"content": event.text})
            else:
                yield chunk({}, event.reason)
                # Always sent; the route drops it unless the client asked for usage.
                yield {**base, "choices": [], "usage": usage_dict(event.usage)}


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"
