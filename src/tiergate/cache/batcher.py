"""Group concurrent cache lookups into one batched embedding pass.

Embedding one short query costs about as much as embedding sixteen (the forward pass is bound by
reading the weights, not by the tokens), so lookups that arrive together should be embedded
together. `LookupBatcher.lookup` is awaited from the event loop; a worker thread runs
`SemanticCache.lookup_many` on everything that queued while the previous batch ran. There is no
timer: a lone request starts at once, and batches grow only under concurrent load. When a
forward pass runs on one thread (the int8 ONNX graph, or torch on one thread), a second worker
runs a second batch on the other core.

    lookup = await cache.batcher.lookup(tenant, model, request, category_hint)

Blocking work stays off the event loop; the queue is bounded (`max_waiting`), and a full queue
raises `OverloadedError` (the service answers 429).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tiergate.errors import OverloadedError

if TYPE_CHECKING:
    from tiergate.cache.semantic import Lookup, SemanticCache
    from tiergate.errors import InvalidRequestError

Item = tuple[str, str, dict[str, Any], str | None]


class LookupBatcher:
    def __init__(self, cache: SemanticCache, *, max_batch: int = 32, max_waiting: int = 1024,
                 workers: int | None = None) -> None:
        self.cache = cache
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.workers = workers if workers is not None else default_workers(cache.encoder.mode)
        self._pending: list[tuple[Item, asyncio.Future[Lookup]]] = []
        self._running = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.batches = 0  # how many batches ran, and how many lookups they held: batching at work
        self.batched = 0

    async def lookup(self, tenant: str, model: str, request: dict[str, Any],
                     category_hint: str | None = None) -> Lookup:
        # A bypass (cache off, model not cached, a sampled request) or an exact hit from memory
        # is decided right here: a thread hop, or a wait behind a batch's embeddings, would
        # cost more than the decision.
        early = self.cache.quick(tenant, model, request, category_hint)
        if early is not None:
            return early
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Lookup] = loop.create_future()
        with self._lock:
            if len(self._pending) >= self.max_waiting:
                raise OverloadedError("too many cache lookups waiting", retry_after=1.0)
            self._pending.append(((tenant, model, request, category_hint), future))
            start = self._running < self.workers
            if start:
                self._running += 1
        if start:
            self._next(loop)
        return await future

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the next batch on this worker slot, or give the slot back when nothing waits."""
        with self._lock:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            if not batch:
                self._running -= 1
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cache-batch")
        items = [item for item, _ in batch]
        done = loop.run_in_executor(self._pool, lambda: self.cache.lookup_many(items, errors=True))
        done.add_done_callback(lambda f: self._settle(loop, batch, f))

    def _settle(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Item, asyncio.Future[Lookup]]],
                done: asyncio.Future[list[Lookup | InvalidRequestError]]) -> None:
        self.batches += 1
        self.batched += len(batch)
        error = done.exception()
        for i, (_, future) in enumerate(batch):
            if future.done():  # the caller went away
                continue
            result = error if error is not None else done.result()[i]
            if isinstance(result, BaseException):  # the batch failed, or this request is malformed
                future.set_exception(result)
            else:
                future.set_result(result)
        self._next(loop)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def default_workers(encoder_mode: str) -> int:
    """Two batches at once when each forward pass runs on one thread and there are two cores or
    more; else one (a forward pass already spread over the cores gains nothing)."""
    import os

    import torch

    one_thread = encoder_mode == "onnx-int8" or torch.get_num_threads() == 1
    return 2 if one_thread and (os.cpu_count() or 1) >= 2 else 1
