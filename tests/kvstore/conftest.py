from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tiergate.config import ModelsConfig
from tiergate.engine.generate import Engine
from tiergate.kvstore import KVConfig, KVStore
from tiergate.models import Generator, load_generator
from tiergate.tiers import StoreConfig, TieredStore


@pytest.fixture(scope="session")
def generator(generator_dir: Path) -> Generator:
    return load_generator(ModelsConfig(generator=str(generator_dir), device="cpu"), generator_dir.parent)


def memory_store_config(**kw: Any) -> StoreConfig:
    return StoreConfig(gpu={"enabled": False}, host={"budget_bytes": 1 << 30}, disk={"enabled": False},
                       sweep_interval_s=0, **kw)


@pytest.fixture
def make_engine(generator: Generator) -> Iterator[Callable[..., Engine]]:
    """Engines over fresh tiered stores (memory only unless a StoreConfig is given)."""
    stores: list[TieredStore] = []

    def make(store_config: StoreConfig | None = None, gen: Generator | None = None, **kv: Any) -> Engine:
        tiers = TieredStore(store_config or memory_store_config())
        stores.append(tiers)
        return Engine(gen or generator, kv_store=KVStore(tiers, KVConfig(**kv)))

    yield make
    for s in stores:
        s.close()
