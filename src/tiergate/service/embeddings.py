"""The packaged embedder behind /v1/embeddings: loaded in the background, run on a worker thread."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tiergate.config import PACKAGED_EMBEDDER, ModelsConfig
from tiergate.errors import OverloadedError, UnavailableError
from tiergate.models import Embedder, load_embedder

log = logging.getLogger(__name__)


class EmbeddingService:
    def __init__(self, config: ModelsConfig, *, cache_dir: Path | None = None, max_waiting: int = 32) -> None:
        self.config = config
        self.cache_dir = cache_dir  # where the embedder keeps its exported ONNX graph
        self.name = PACKAGED_EMBEDDER if not config.embedder else config.embedder.rstrip("/").split("/")[-1]
        self.embedder: Embedder | None = None
        self.failed: BaseException | None = None
        self._loaded = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._slots = threading.BoundedSemaphore(max_waiting)
        self.on_ready: list[Callable[[Embedder], None]] = []  # run on the loading thread, in order

    def start(self) -> None:
        threading.Thread(target=self._load, name="embedder-load", daemon=True).start()

    def _load(self) -> None:
        try:
            embedder = load_embedder(self.config, self.cache_dir)
            for hook in self.on_ready:
                hook(embedder)
            self.embedder = embedder
        except BaseException as exc:
            log.exception("embedder failed to load")
            self.failed = exc
        finally:
            self._loaded.set()

    @property
    def ready(self) -> bool:
        return self.embedder is not None

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._loaded.wait(timeout)
        return self.ready

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def encode(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            if self.failed is not None:
                raise UnavailableError(f"the embedder failed to load: {self.failed}")
            raise UnavailableError("the embedder is still loading", code="model_loading")
        if not self._slots.acquire(blocking=False):
            raise OverloadedError("too many embedding requests waiting", retry_after=1.0)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self.embedder.encode, texts)
        finally:
            self._slots.release()

    async def respond(self, texts: list[str], model: str, encoding: str) -> dict[str, Any]:
        vectors = await self.encode(texts)
        assert self.embedder is not None
        tokens = sum(self.embedder.count_tokens(t) for t in texts)
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if encoding == "base64"
                 else v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
