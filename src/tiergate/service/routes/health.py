"""Liveness, readiness and Prometheus metrics: open routes for orchestrators and scrapers."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from tiergate.service.backends.router import describe
from tiergate.service.deps import Services, services

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz")
async def readyz(svc: Services = Depends(services)) -> Response:
    body = {"ready": svc.ready, "draining": svc.draining, "embedder": svc.embeddings.ready,
            "backends": describe(svc.backends)}
    return Response(orjson.dumps(body), status_code=200 if svc.ready else 503, media_type="application/json")


@router.get("/metrics")
async def metrics(svc: Services = Depends(services)) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
