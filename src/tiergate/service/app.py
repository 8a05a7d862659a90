"""The app factory: `create_app(settings)` wires every part; nothing is global."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from tiergate import __version__
from tiergate.cache import SemanticCache
from tiergate.config import Settings
from tiergate.engine.generate import Engine
from tiergate.engine.runner import EngineRunner
from tiergate.errors import ConfigError
from tiergate.kvstore import KVStats, KVStore
from tiergate.models import Embedder, load_generator
from tiergate.service import errors
from tiergate.service.auth import Authenticator
from tiergate.service.backends.base import Backend
from tiergate.service.backends.local import LocalBackend
from tiergate.service.backends.openai import OpenAIBackend
from tiergate.service.backends.router import Router
from tiergate.service.dashboard.install import install as install_dashboard
from tiergate.service.deps import Services
from tiergate.service.embeddings import EmbeddingService
from tiergate.service.indexes import IndexService
from tiergate.service.metrics import Metrics
from tiergate.service.middleware import RequestContextMiddleware
from tiergate.service.ratelimit import RateLimiter
from tiergate.service.routes import admin, health, indexes, openai
from tiergate.service.schemas import COMPONENT_REF, ChatCompletionRequest
from tiergate.tiers import TieredStore, TierStatsCollector

log = logging.getLogger(__name__)


def build_backends(settings: Settings, kv_store: Callable[[], KVStore | None]) -> list[Backend]:
    """`kv_store` is called when the local model loads, after start-up has opened the tiered store."""
    backends: list[Backend] = []
    for cfg in settings.backends:
        if cfg.kind == "openai":
            backends.append(OpenAIBackend(cfg))
            continue

        def engine_factory() -> Engine:
            if settings.engine.threads:
                import torch

                torch.set_num_threads(settings.engine.threads)
            generator = load_generator(settings.models, settings.data_dir)
            return Engine(generator, max_prompt_tokens=settings.engine.max_prompt_tokens, kv_store=kv_store())

        runner = EngineRunner(engine_factory, workers=settings.engine.workers, queue_size=settings.engine.queue_size)
        backends.append(LocalBackend(cfg, settings.engine, runner))
    return backends


def build_cache(settings: Settings, svc: Services, embedder: Embedder) -> SemanticCache:
    config = settings.cache.model_copy(deep=True)
    for backend in settings.backends:  # backends that opt out take their models with them
        if not backend.cache:
            config.disabled_models += [m for m in backend.models if m not in config.disabled_models]
    redis_url = config.redis_url or (settings.tiers.redis.url if settings.tiers.redis.enabled else None)
    assert svc.store is not None
    return SemanticCache(config, embedder, svc.store, registry=svc.metrics.registry, redis_url=redis_url)


def create_app(settings: Settings) -> FastAPI:
    auth = Authenticator(settings.auth)
    if auth.open and not settings.is_loopback_only():
        raise ConfigError(
            f"refusing to serve on {settings.server.host} without API keys: configure auth.api_keys "
            "or bind to 127.0.0.1"
        )
    metrics = Metrics()
    kv_stats = KVStats()
    if settings.local_backend() is not None:  # KV reuse happens only in the in-process engine
        kv_stats.register(metrics.registry)

    def kv_store() -> KVStore | None:
        if not settings.kv.enabled or svc.store is None:
            return None
        return KVStore(svc.store, settings.kv, stats=kv_stats)

    backends = build_backends(settings, kv_store)
    svc = Services(
        settings=settings,
        metrics=metrics,
        auth=auth,
        backends=backends,
        router=Router(backends, metrics),
        embeddings=EmbeddingService(settings.models, cache_dir=settings.data_dir / "models"),
        limiter=RateLimiter(settings.auth),
        kv_stats=kv_stats if settings.local_backend() is not None else None,
        indexes=IndexService(settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        svc.store = TieredStore(settings.tiers)
        TierStatsCollector(svc.store, metrics.registry)
        svc.embeddings.on_ready.append(lambda embedder: setattr(svc.indexes, "embedder", embedder))
        if settings.cache.enabled:
            svc.embeddings.on_ready.append(lambda embedder: setattr(svc, "cache", build_cache(settings, svc, embedder)))
        svc.embeddings.start()
        for backend in backends:
            await backend.start()
        log.info("tiergate started", extra={"data_dir": str(settings.data_dir),
                                            "backends": [b.name for b in backends]})
        try:
            yield
        finally:
            for backend in backends:
                await backend.close()
            svc.embeddings.close()
            svc.pool.shutdown(wait=True)
            svc.indexes.close()
            if svc.cache is not None:
                svc.cache.close()
            svc.store.close()

    app = FastAPI(title="tiergate", version=__version__, lifespan=lifespan)
    _document_bodies(app, [ChatCompletionRequest])
    app.state.services = svc
    errors.install(app)
    app.include_router(openai.router)
    app.include_router(indexes.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    install_dashboard(app, svc)  # /admin pages and API, its sampler (in the lifespan), metrics
    if settings.server.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.server.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["*"])
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.server.max_body_bytes,
                       observers=svc.request_observers)
    return app


def _document_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the schemas of bodies that routes parse themselves (see `deps.json_body`) to the OpenAPI
    components, where those routes' `openapi_extra` refers to them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, defs = models_json_schema([(m, "validation") for m in models], ref_template=COMPONENT_REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
