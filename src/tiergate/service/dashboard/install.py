"""Wiring: routes, static files, the savings observer, collectors and the sampler's lifecycle."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from tiergate.service.dashboard import api, routes
from tiergate.service.dashboard.config import DashboardConfig
from tiergate.service.dashboard.headers import SecureStatic
from tiergate.service.dashboard.metrics import DashboardCollector
from tiergate.service.dashboard.sampler import Sampler
from tiergate.service.dashboard.savings import Savings
from tiergate.service.dashboard.session import SessionSigner
from tiergate.service.dashboard.state import Dashboard

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI, svc: Any) -> None:
    config: DashboardConfig = getattr(svc.settings, "dashboard", None) or DashboardConfig()
    if not config.enabled:
        return
    savings = Savings(config.cost_per_1k_tokens, set(svc.router.by_model))
    sampler = Sampler(svc, savings, config, svc.settings.path("dashboard", "series.json"))
    admin_key = svc.settings.auth.admin_key()
    signer = SessionSigner(admin_key, config.session_ttl_s) if admin_key else None
    app.state.dashboard = Dashboard(config, sampler, savings, signer)
    DashboardCollector(sampler, svc.metrics.registry)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        # Entered after the app's own start-up (the store is open) and left before its shutdown.
        sampler.start()
        try:
            yield
        finally:
            await sampler.stop()

    app.include_router(APIRouter(lifespan=lifespan))
    app.include_router(routes.build_router())
    app.include_router(api.build_router())
    app.mount("/admin/static", SecureStatic(directory=STATIC), name="dashboard-static")
    svc.request_observers.append(savings.observe_request)
