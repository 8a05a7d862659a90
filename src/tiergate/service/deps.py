"""What the routes share, built once by the app factory and reached through `request.app.state`.

The dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies on a thread
pool, a thread hop per dependency per request.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from tiergate.cache import SemanticCache
from tiergate.config import Settings
from tiergate.kvstore import KVStats
from tiergate.service.auth import Authenticator, Principal
from tiergate.service.backends.base import Backend
from tiergate.service.backends.router import Router
from tiergate.service.caching import Coalescer
from tiergate.service.embeddings import EmbeddingService
from tiergate.service.indexes import IndexService
from tiergate.service.metrics import Metrics
from tiergate.service.ratelimit import RateLimiter
from tiergate.tiers import TieredStore

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    auth: Authenticator
    backends: list[Backend]
    router: Router
    embeddings: EmbeddingService
    limiter: RateLimiter
    kv_stats: KVStats | None = None
    indexes: IndexService | None = None
    store: TieredStore | None = None  # opened at start-up, closed at shutdown
    cache: SemanticCache | None = None  # built once the embedder has loaded
    coalescer: Coalescer = field(default_factory=Coalescer)
    # Cache inserts and index searches block (fsync, Redis, embedding): they run here, never on the
    # event loop. Inserts mostly wait on the disk and Redis, so more threads than cores keep their
    # waits overlapped (and let the disk tier's group commit share fsyncs).
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="cache"))
    draining: bool = False
    # Called with (path, status, request state, seconds) once a response's last byte has left.
    request_observers: list[Callable[[str, int, dict[str, Any], float], None]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        cache_ready = self.cache is not None or not self.settings.cache.enabled
        return not self.draining and cache_ready and self.embeddings.ready and all(b.ready for b in self.backends)

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))


async def services(request: Request) -> Services:
    return request.app.state.services


async def principal(request: Request) -> Principal:
    svc: Services = request.app.state.services
    who = svc.auth.authenticate(request.headers.get("authorization"))
    request.state.tenant = who.tenant
    svc.limiter.admit(who.key_id, who.tenant)
    return who


async def admin(request: Request) -> Principal:
    who = request.app.state.services.auth.admin(request.headers.get("authorization"))
    request.state.tenant = who.tenant
    return who


async def json_body(request: Request, model: type[M]) -> M:
    """The request body validated straight from its bytes by pydantic-core, for hot routes that skip
    FastAPI's body and dependency machinery; errors take the same path as FastAPI's own."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        error = exc
    if error.errors()[0]["type"] == "json_invalid":
        # pydantic-core refuses JSON that Python's parser reads (an unpaired \ud800 escape):
        # parse it that way, so that the error names the field rather than the whole body.
        try:
            return model.model_validate(json.loads(raw))
        except ValidationError as exc:
            error = exc
        except ValueError:
            pass
    errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
    raise RequestValidationError(errors, body=raw)
