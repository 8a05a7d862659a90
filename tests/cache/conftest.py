"""Fixtures for the cache tests: the real packaged embedder and lexicon, loaded once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tiergate.cache.config import CacheConfig
from tiergate.cache.entries import MemoryEntryStore
from tiergate.cache.lexicon import Lexicon
from tiergate.cache.semantic import SemanticCache


@pytest.fixture(scope="session")
def embedder() -> Any:
    import torch

    from tiergate.config import ModelsConfig
    from tiergate.models import load_embedder

    torch.set_num_threads(1)  # a loaded 2-core machine encodes faster on one thread
    return load_embedder(ModelsConfig(device="cpu"))


@pytest.fixture(scope="session")
def lexicon() -> Lexicon:
    return Lexicon.load()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_cache(embedder: Any, lexicon: Lexicon, clock: Clock) -> Iterator[Callable[..., SemanticCache]]:
    made: list[SemanticCache] = []

    def make(config: CacheConfig | None = None, store: Any = None, **kw: Any) -> SemanticCache:
        if config is None:  # no verification sampling, so that hits are deterministic
            config = CacheConfig()
            config.budget.sample_rate = config.budget.warmup_sample_rate = 0.0
        cfg = config
        kw.setdefault("registry", CollectorRegistry())
        kw.setdefault("clock", clock)
        cache = SemanticCache(cfg, embedder, store if store is not None else MemoryEntryStore(),
                              lexicon=lexicon, **kw)
        made.append(cache)
        return cache

    yield make
    for c in made:
        c.close()


def chat(*turns: str, system: str | None = None, **params: Any) -> dict[str, Any]:
    """A chat request; turns alternate user, assistant, user, ..."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    params.setdefault("temperature", 0)
    return {"messages": messages, **params}


def answer(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
