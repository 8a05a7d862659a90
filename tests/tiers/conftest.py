from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tiergate.tiers import StoreConfig, TieredStore

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store() -> Iterator[Callable[..., TieredStore]]:
    """Build stores that are closed at the end of the test."""
    stores: list[TieredStore] = []

    def make(cfg: StoreConfig, **kw: Any) -> TieredStore:
        s = TieredStore(cfg, **kw)
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close()
