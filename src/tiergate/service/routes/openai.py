"""The OpenAI-compatible API: chat completions (JSON and SSE), embeddings, models."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from tiergate.errors import TiergateError
from tiergate.service.backends.base import Backend, Chunk
from tiergate.service.deps import Services, principal, services
from tiergate.service.errors import error_body
from tiergate.service.schemas import ChatCompletionRequest, EmbeddingRequest

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json(data: Any, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json", headers=headers)


@router.post("/v1/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, svc: Services = Depends(services), who=Depends(principal)
) -> Response:
    request.state.tenant = who.tenant
    headers = {"X-Tiergate-Cache": "bypass"}
    request.state.cache = "bypass"
    if body.stream:
        stream, backend = await svc.router.call(body.model, lambda b: b.open_stream(body))
        request.state.backend = backend.name
        sse = _sse(stream, backend, svc, include_usage=body.include_usage(), started=time.perf_counter())
        return StreamingResponse(sse, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    result, backend = await svc.router.call(body.model, lambda b: b.complete(body))
    request.state.backend = backend.name
    _count_tokens(svc, backend, result.get("usage"))
    return _json(result, headers)


async def _sse(stream: AsyncIterator[Chunk], backend: Backend, svc: Services, *, include_usage: bool,
               started: float) -> AsyncIterator[bytes]:
    first = True
    try:
        async for chunk in stream:
            if first and _has_content(chunk):
                svc.metrics.ttft.labels(backend.name).observe(time.perf_counter() - started)
                first = False
            if chunk.get("usage"):
                _count_tokens(svc, backend, chunk["usage"])
                if not chunk.get("choices") and not include_usage:
                    continue  # usage was asked for internally, for metrics; the client did not
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except TiergateError as exc:
        # Headers are gone already: the error travels as an event, and no [DONE] follows.
        yield b"data: " + orjson.dumps(error_body(exc.message, exc.type, exc.code)) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


def _has_content(chunk: Chunk) -> bool:
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ())


def _count_tokens(svc: Services, backend: Backend, usage: dict[str, Any] | None) -> None:
    if not isinstance(usage, dict):
        return
    tokens = svc.metrics.tokens
    for kind, value in (("prompt", usage.get("prompt_tokens")), ("completion", usage.get("completion_tokens")),
                        ("cached", (usage.get("prompt_tokens_details") or {}).get("cached_tokens"))):
        if isinstance(value, int) and value > 0:
            tokens.labels(backend.name, kind).inc(value)


@router.post("/v1/embeddings")
async def embeddings(
    body: EmbeddingRequest, request: Request, svc: Services = Depends(services), who=Depends(principal)
) -> Response:
    request.state.tenant = who.tenant
    if body.model == svc.embeddings.name:
        request.state.backend = "embedder"
        return _json(await svc.embeddings.respond(body.texts(), body.model, body.encoding_format), {})
    result, backend = await svc.router.call(body.model, lambda b: b.embed(body))
    request.state.backend = backend.name
    return _json(result, {})


@router.get("/v1/models")
async def models(svc: Services = Depends(services), who=Depends(principal)) -> Response:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": bs[0].name} for m, bs in svc.router.by_model.items()]
    data.append({"id": svc.embeddings.name, "object": "model", "created": 0, "owned_by": "embedder"})
    return _json({"object": "list", "data": data}, {})
