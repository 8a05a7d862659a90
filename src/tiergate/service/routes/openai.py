"""The OpenAI-compatible API: chat completions (JSON and SSE), embeddings, models."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from tiergate.cache import Lookup, SemanticCache
from tiergate.errors import TiergateError, UpstreamError
from tiergate.service.auth import Principal
from tiergate.service.backends.base import Backend, Chunk
from tiergate.service.caching import (
    CacheDirectives,
    StreamAssembler,
    replay_chunks,
    replay_json,
    storable,
    wait_for,
)
from tiergate.service.deps import Services, json_body, principal, services
from tiergate.service.errors import error_body
from tiergate.service.schemas import (
    ChatCompletionRequest,
    DocumentIn,
    EmbeddingRequest,
    KVIn,
    body_schema,
    dump_request,
    error_responses,
)

log = logging.getLogger(__name__)
router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Before OpenAPI 3.2 the schema of text/event-stream describes one event.
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "description": "A chat.completion.chunk as JSON; the last event is [DONE]."}}}
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A chat completion; with stream: true, server-sent events ending with data: [DONE].",
          "content": {"text/event-stream": {"schema": SSE_EVENT}}},
    **error_responses(400, 401, 404, 409, 413, 429, 502, 503, 504),
}
Finish = Callable[[dict[str, Any] | None], Awaitable[None]]


def _json(data: Any, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json", headers=headers)


def _sse_bytes(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


@router.post("/v1/chat/completions", responses=CHAT_RESPONSES, openapi_extra=body_schema(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    # The hot route: authenticated and parsed here rather than through Depends and a body
    # parameter, whose generic machinery cost about a third of a proxied request's CPU.
    svc: Services = request.app.state.services
    who = await principal(request)
    body = await json_body(request, ChatCompletionRequest)
    directives = CacheDirectives.from_request(request.headers, body.category)
    request.state.model = body.model
    if request.headers.get("x-tiergate-kv", "").lower() == "off":
        body = body.model_copy(update={"kv": KVIn(enabled=False)})
    retrieved: dict[str, Any] | None = None
    if body.retrieval is not None:
        body, retrieved = await _retrieve(svc, who, body)
    cache = _cache_for(svc, body.model)
    # Documents, given or retrieved, are part of what the cache keys on.
    view = dump_request(body) if cache is not None else {}
    lookup: Lookup | None = None
    if cache is not None and not directives.no_cache:
        _report_pressure(svc, cache, body.model)
        # Concurrent lookups are embedded together, one batch per worker (see LookupBatcher).
        lookup = await cache.batcher.lookup(who.tenant, body.model, view, directives.category)
    headers = lookup.headers() if lookup is not None else {"X-Tiergate-Cache": "bypass"}
    if retrieved is not None:
        headers["X-Tiergate-Retrieved"] = str(len(retrieved["ids"]))
    if lookup is not None and lookup.category is None and directives.category:
        headers["X-Tiergate-Category"] = directives.category
    request.state.cache = headers["X-Tiergate-Cache"]

    if lookup is not None and lookup.hit and lookup.payload is not None:
        request.state.backend = "cache"
        return _replay(request, body, lookup.payload, headers)

    # Identical concurrent misses: one leader calls the backend, the rest replay its answer.
    key = lookup.view.exact_key if lookup is not None and lookup.view is not None and not lookup.sampled else None
    if key is not None and (leader := svc.coalescer.follow(key)) is not None:
        payload = await wait_for(leader, svc.settings.cache.coalesce_timeout_s)
        request.state.backend = "coalesced"
        return _replay(request, body, payload, {**headers, "X-Tiergate-Coalesced": "1"})
    settle = svc.coalescer.lead(key) if key is not None else None
    store = cache is not None and not directives.no_store

    async def finish(answer: dict[str, Any] | None) -> None:
        """Called once with the complete answer, or None when the request failed. The answer is
        stored before the client gets its last byte, so an immediate repeat is a hit."""
        if answer is not None:
            request.state.tokens = total_tokens(answer.get("usage"))
        if settle is not None:
            settle(orjson.dumps(answer) if answer else UpstreamError("the shared backend call failed"))
        if store and answer is not None and storable(answer):
            assert cache is not None
            await svc.blocking(_insert, cache, who.tenant, body.model, view, answer, directives, lookup)

    try:
        if body.stream:
            stream, backend = await svc.router.call(body.model, lambda b: b.open_stream(body, who.tenant))
        else:
            result, backend = await svc.router.call(body.model, lambda b: b.complete(body, who.tenant))
    except BaseException:
        await finish(None)
        raise
    request.state.backend = backend.name
    if body.stream:
        sse = _sse(stream, backend, svc, include_usage=body.include_usage(), started=time.perf_counter(),
                   finish=finish, who=who)
        return StreamingResponse(sse, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    _count_tokens(svc, backend, result.get("usage"), who)
    if retrieved is not None:
        result["retrieval"] = retrieved
    await finish(result)
    return _json(result, headers)


async def _retrieve(svc: Services, who: Principal, body: ChatCompletionRequest,
                    ) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """Search the named index with the last user turn; the passages join the request's documents."""
    assert body.retrieval is not None and svc.indexes is not None
    query = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
    spec = body.retrieval
    hits = await svc.blocking(svc.indexes.search, who.tenant, spec.index, query, spec.k, spec.filters)
    documents = [*(body.documents or ()), *(DocumentIn(id=h["id"], text=h["text"]) for h in hits)]
    return body.model_copy(update={"documents": documents}), {"index": spec.index, "ids": [h["id"] for h in hits]}


def _cache_for(svc: Services, model: str) -> SemanticCache | None:
    if svc.cache is None or model in svc.cache.config.disabled_models:
        return None
    return svc.cache


def _report_pressure(svc: Services, cache: SemanticCache, model: str) -> None:
    """Let the cache loosen thresholds (within bounds) while the model's backends are overloaded."""
    level = max((b.pressure() for b in svc.router.by_model.get(model, ())), default=0.0)
    cache.set_pressure(model, level)


def _insert(cache: SemanticCache, tenant: str, model: str, view: dict[str, Any], answer: dict[str, Any],
            directives: CacheDirectives, lookup: Lookup | None) -> None:
    try:
        cache.insert(tenant, model, view, answer, category=directives.category if lookup is None else None,
                     ttl_override=directives.ttl_s, lookup=lookup)
    except Exception:  # storing is best effort; the client already has its answer
        log.exception("cache insert failed")


def _replay(request: Request, body: ChatCompletionRequest, payload: bytes, headers: dict[str, str]) -> Response:
    answer = replay_json(payload)
    request.state.tokens = total_tokens(answer.get("usage"))
    if body.stream:
        chunks = replay_chunks(answer, body.include_usage())
        return StreamingResponse(_replayed(chunks), media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    return _json(answer, headers)


async def _replayed(chunks: Iterable[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield _sse_bytes(chunk)
    yield b"data: [DONE]\n\n"


async def _sse(stream: AsyncIterator[Chunk], backend: Backend, svc: Services, *, include_usage: bool,
               started: float, finish: Finish, who: Principal) -> AsyncIterator[bytes]:
    first = True
    assembled = StreamAssembler()
    try:
        async for chunk in stream:
            assembled.add(chunk)
            if first and _has_content(chunk):
                svc.metrics.ttft.labels(backend.name).observe(time.perf_counter() - started)
                first = False
            if chunk.get("usage"):
                _count_tokens(svc, backend, chunk["usage"], who)
                if not chunk.get("choices") and not include_usage:
                    continue  # usage was asked for internally, for metrics; the client did not
            yield _sse_bytes(chunk)
    except TiergateError as exc:
        await finish(None)
        # Headers are gone already: the error travels as an event, and no [DONE] follows.
        yield _sse_bytes(error_body(exc.message, exc.type, exc.code))
        return
    except BaseException:  # the client went away mid-stream: nothing complete to store
        await finish(None)
        raise
    await finish(assembled.result())
    yield b"data: [DONE]\n\n"


def _has_content(chunk: Chunk) -> bool:
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ())


def total_tokens(usage: Any) -> int | None:
    """An answer's total tokens, when its usage says."""
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens") or (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
    return int(total) if isinstance(total, int | float) and total > 0 else None


def _count_tokens(svc: Services, backend: Backend, usage: dict[str, Any] | None, who: Principal) -> None:
    if not isinstance(usage, dict):
        return
    total = usage.get("total_tokens")
    if isinstance(total, int):
        svc.limiter.charge(who.key_id, who.tenant, total)
    tokens = svc.metrics.tokens
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    for kind, value in (("prompt", usage.get("prompt_tokens")), ("completion", usage.get("completion_tokens")),
                        ("cached", cached)):
        if isinstance(value, int) and value > 0:
            tokens.labels(backend.name, kind).inc(value)


@router.post("/v1/embeddings", responses=error_responses(400, 401, 404, 413, 429, 502, 503, 504))
async def embeddings(
    body: EmbeddingRequest, request: Request, svc: Services = Depends(services), who=Depends(principal)
) -> Response:
    if body.model == svc.embeddings.name:
        request.state.backend = "embedder"
        return _json(await svc.embeddings.respond(body.texts(), body.model, body.encoding_format), {})
    result, backend = await svc.router.call(body.model, lambda b: b.embed(body))
    request.state.backend = backend.name
    return _json(result, {})


@router.get("/v1/models", responses=error_responses(401, 429))
async def models(svc: Services = Depends(services), who=Depends(principal)) -> Response:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": bs[0].name}
            for m, bs in svc.router.by_model.items()]
    data.append({"id": svc.embeddings.name, "object": "model", "created": 0, "owned_by": "embedder"})
    return _json({"object": "list", "data": data}, {})
