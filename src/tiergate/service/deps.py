"""What the routes share, built once by the app factory and reached through `request.app.state`.

The dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies on a thread
pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from tiergate.config import Settings
from tiergate.service.auth import Authenticator, Principal
from tiergate.service.backends.base import Backend
from tiergate.service.backends.router import Router
from tiergate.service.embeddings import EmbeddingService
from tiergate.service.metrics import Metrics
from tiergate.tiers import TieredStore


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    auth: Authenticator
    backends: list[Backend]
    router: Router
    embeddings: EmbeddingService
    store: TieredStore | None = None  # opened at start-up, closed at shutdown
    draining: bool = False

    @property
    def ready(self) -> bool:
        return not self.draining and self.embeddings.ready and all(b.ready for b in self.backends)


async def services(request: Request) -> Services:
    return request.app.state.services


async def principal(request: Request) -> Principal:
    who = request.app.state.services.auth.authenticate(request.headers.get("authorization"))
    request.state.tenant = who.tenant
    return who


async def admin(request: Request) -> Principal:
    who = request.app.state.services.auth.admin(request.headers.get("authorization"))
    request.state.tenant = who.tenant
    return who
