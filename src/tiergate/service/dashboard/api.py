"""The JSON the dashboard polls, and its actions, under /admin/api (the admin key as bearer, or the
dashboard's session cookie plus CSRF header)."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from tiergate.errors import InvalidRequestError, UnavailableError
from tiergate.service.dashboard import access, jobs
from tiergate.service.dashboard.headers import secure
from tiergate.service.dashboard.state import Dashboard, dashboard
from tiergate.service.deps import Services, services
from tiergate.service.schemas import error_responses


async def allowed(request: Request, dash: Dashboard = Depends(dashboard)) -> access.Access:
    who = access.check(request, dash.signer)
    request.state.tenant = "admin"
    return who


def _json(data: object) -> Response:
    return secure(Response(orjson.dumps(data, default=str), media_type="application/json"))


class Invalidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str | None = Field(None, max_length=128)
    category: str | None = Field(None, max_length=64)
    model: str | None = Field(None, max_length=256)
    all: bool = False


def build_router() -> APIRouter:
    router = APIRouter(prefix="/admin/api", dependencies=[Depends(allowed)], responses=error_responses(401, 403))

    @router.get("/overview")
    async def overview(dash: Dashboard = Depends(dashboard)) -> Response:
        """Every number on the page now: cache, KV store, tiers, backends, indexes and jobs."""
        return _json(await asyncio.to_thread(dash.sampler.overview))

    @router.get("/series", responses=error_responses(400))
    async def series(
        dash: Dashboard = Depends(dashboard),
        since: float | None = Query(None, description="Only samples after this Unix time."),
        prefix: list[str] = Query(default_factory=list, description="Only series whose key starts so."),
    ) -> Response:
        """The sampled history: `t` (Unix seconds) and one column per number, aligned, null where absent."""
        return _json(dash.sampler.series_dict(since, tuple(prefix)))

    @router.post("/actions/invalidate", responses=error_responses(400, 413, 503))
    async def invalidate(body: Invalidate, svc: Services = Depends(services)) -> Response:
        filters = body.model_dump(exclude={"all"}, exclude_none=True)
        filters = {k: v for k, v in filters.items() if v}
        if not filters and not body.all:
            raise InvalidRequestError("pick a tenant, category or model, or tick 'everything'")
        if svc.cache is None:
            raise UnavailableError("the response cache is not running")
        removed = await svc.blocking(svc.cache.invalidate, **filters)
        return _json({"invalidated": removed, "filters": filters})

    @router.post("/actions/jobs/{job_id}/cancel", responses=error_responses(404))
    async def cancel_job(job_id: str, svc: Services = Depends(services)) -> Response:
        result = await asyncio.to_thread(jobs.cancel, svc, job_id)
        return _json({"cancelled": job_id, "result": result if isinstance(result, dict | str | bool) else None})

    return router
