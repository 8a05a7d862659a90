"""The admin API: the numbers behind the dashboard, behind the admin key."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends
from starlette.responses import Response

from tiergate import __version__
from tiergate.service.backends.router import describe
from tiergate.service.deps import Services, admin, services

router = APIRouter(prefix="/admin/api", dependencies=[Depends(admin)])


@router.get("/status")
async def status(svc: Services = Depends(services)) -> Response:
    body = {
        "version": __version__,
        "ready": svc.ready,
        "data_dir": str(svc.settings.data_dir),
        "embedder": {"name": svc.embeddings.name, "ready": svc.embeddings.ready},
        "backends": describe(svc.backends),
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/tiers")
async def tiers(svc: Services = Depends(services)) -> Response:
    """Objects, bytes vs budget, hits, misses, evictions, promotions and demotions per tier and namespace."""
    stats = svc.store.stats() if svc.store is not None else {}
    return Response(orjson.dumps(stats, default=str), media_type="application/json")
