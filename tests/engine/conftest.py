from __future__ import annotations

from pathlib import Path

import pytest

from tiergate.config import ModelsConfig
from tiergate.engine.generate import Engine
from tiergate.models import Generator, load_generator


@pytest.fixture(scope="session")
def generator(generator_dir: Path) -> Generator:
    return load_generator(ModelsConfig(generator=str(generator_dir), device="cpu"), generator_dir.parent)


@pytest.fixture(scope="session")
def engine(generator: Generator) -> Engine:
    return Engine(generator)
