"""The admin API: the numbers behind the dashboard, behind the admin key."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from tiergate import __version__
from tiergate.cache import SemanticCache
from tiergate.errors import InvalidRequestError, UnavailableError
from tiergate.service.backends.router import describe
from tiergate.service.deps import Services, admin, services
from tiergate.service.schemas import BackendStatus, JsonBody, error_responses

router = APIRouter(prefix="/admin/api", dependencies=[Depends(admin)], responses=error_responses(401, 403))


class EmbedderStatus(BaseModel):
    name: str
    ready: bool


class Status(BaseModel):
    version: str
    ready: bool
    data_dir: str
    embedder: EmbedderStatus
    backends: list[BackendStatus]


class Invalidated(BaseModel):
    invalidated: int
    filters: dict[str, str]


@router.get("/status", responses={200: {"model": Status, "description": "Version, readiness and backends."}})
async def status(svc: Services = Depends(services)) -> Response:
    body = {
        "version": __version__,
        "ready": svc.ready,
        "data_dir": str(svc.settings.data_dir),
        "embedder": {"name": svc.embeddings.name, "ready": svc.embeddings.ready},
        "backends": describe(svc.backends),
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/tiers", responses={200: {"model": dict[str, Any], "description": "Per-tier statistics."}})
async def tiers(svc: Services = Depends(services)) -> Response:
    """Objects, bytes vs budget, hits, misses, evictions, promotions and demotions per tier and namespace."""
    stats = svc.store.stats() if svc.store is not None else {}
    return Response(orjson.dumps(stats, default=str), media_type="application/json")


class InvalidateRequest(JsonBody):
    model_config = ConfigDict(extra="forbid")
    tenant: str | None = None
    category: str | None = None
    model: str | None = None
    entry_id: str | None = Field(None, pattern=r"^[0-9a-fA-F]{1,16}$", description="An entry id (16 hex digits).")
    prompt_prefix: str | None = None
    all: bool = Field(False, description="Required to drop every entry when no filter is given.")


def _cache(svc: Services) -> SemanticCache:
    if svc.cache is None:
        reason = "disabled in config" if not svc.settings.cache.enabled else "still loading"
        raise UnavailableError(f"the response cache is {reason}")
    return svc.cache


@router.get("/cache", responses={200: {"model": dict[str, Any], "description": "Cache statistics."},
                                  **error_responses(503)})
async def cache_stats(svc: Services = Depends(services)) -> Response:
    """Hits, misses and false hits per tenant and category, thresholds in force, entries and bytes."""
    return Response(orjson.dumps(_cache(svc).stats(), default=str), media_type="application/json")


@router.post("/cache/invalidate", responses={200: {"model": Invalidated, "description": "Entries dropped."},
                                             **error_responses(400, 413, 503)})
async def cache_invalidate(body: InvalidateRequest, svc: Services = Depends(services)) -> Response:
    filters = body.model_dump(exclude={"all"}, exclude_none=True)
    if not filters and not body.all:
        raise InvalidRequestError("name a filter (tenant, category, model, entry_id, prompt_prefix) or set all=true")
    removed = await svc.blocking(_cache(svc).invalidate, **filters)
    return Response(orjson.dumps({"invalidated": removed, "filters": filters}), media_type="application/json")
