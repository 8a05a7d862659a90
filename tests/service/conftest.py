"""A real gateway on a loopback port (uvicorn in a thread), and a real upstream beside it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.upstream_server import UpstreamServer, free_port
from tiergate.config import Settings, load_settings
from tiergate.service.app import create_app


@contextlib.contextmanager
def run_gateway(settings: Settings, *, wait_ready: bool = True) -> Iterator[str]:
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    if wait_ready:
        while httpx.get(url + "/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not become ready")
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def upstream_settings(tmp: Path, *backends: dict[str, Any], **extra: Any) -> Settings:
    """Settings for routing tests: the response cache is off unless a test turns it on."""
    extra.setdefault("cache", {"enabled": False})
    return load_settings(data_dir=tmp, backends=list(backends), **extra)


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer().start()
    yield server
    server.stop()
