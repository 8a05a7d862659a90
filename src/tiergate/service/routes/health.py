"""Liveness, readiness and Prometheus metrics: open routes for orchestrators and scrapers."""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.responses import Response

from tiergate.service.backends.router import describe
from tiergate.service.deps import Services, services
from tiergate.service.schemas import BackendStatus

router = APIRouter()


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    draining: bool
    embedder: bool
    backends: list[BackendStatus]


@router.get("/healthz", responses={200: {"model": Health, "description": "The process is up."}})
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz", responses={
    200: {"model": Readiness, "description": "Models, cache and backends are ready."},
    503: {"model": Readiness, "description": "Still loading, or draining: take this replica out of rotation."},
})
async def readyz(svc: Services = Depends(services)) -> Response:
    body = {"ready": svc.ready, "draining": svc.draining, "embedder": svc.embeddings.ready,
            "backends": describe(svc.backends)}
    return Response(orjson.dumps(body), status_code=200 if svc.ready else 503, media_type="application/json")


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text exposition format.",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}})
async def metrics(svc: Services = Depends(services)) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
