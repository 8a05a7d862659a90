"""A bounded queue of generations served by worker threads, bridged to asyncio.

The event loop never runs a forward pass: `submit` puts a job on a bounded queue (or raises
OverloadedError at once when it is full) and returns an async iterator that receives the
worker's events through `call_soon_threadsafe`. Abandoning the iterator (a client that hung
up) cancels the generation at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from tiergate.engine.generate import Engine, Event, Finished, GenerationRequest
from tiergate.errors import OverloadedError, TiergateError, UnavailableError

log = logging.getLogger(__name__)

_DONE = object()


@dataclass
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancel: threading.Event = field(default_factory=threading.Event)


class EngineRunner:
    def __init__(self, engine_factory: Callable[[], Engine], *, workers: int = 1, queue_size: int = 16) -> None:
        self._factory = engine_factory
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._busy = 0
        self._lock = threading.Lock()
        self.model_id: str | None = None

    # lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Load the model on a background thread; `ready` turns true when it is loaded."""
        threading.Thread(target=self._load, name="engine-load", daemon=True).start()

    def _load(self) -> None:
        try:
            engines = [self._factory()]
            # Workers share the weights: extra engines wrap the same loaded model.
            engines += [engines[0].sibling() for _ in range(self._workers - 1)]
        except BaseException as exc:
            log.exception("engine failed to load")
            self._failed = exc
            return
        self.model_id = engines[0].model_id
        for i, engine in enumerate(engines):
            t = threading.Thread(target=self._work, args=(engine,), name=f"engine-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def stop(self) -> None:
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._jobs.put_nowait(None)
        for t in self._threads:
            t.join(timeout=10)

    @property
    def queue_depth(self) -> int:
        return self._jobs.qsize()

    @property
    def busy(self) -> int:
        return self._busy

    # requests ------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Queue a generation; raises OverloadedError when the queue is full."""
        if self._failed is not None:
            raise UnavailableError(f"the local model failed to load: {self._failed}")
        if not self.ready:
            raise UnavailableError("the local model is still loading", code="model_loading")
        job = _Job(request, asyncio.get_running_loop(), asyncio.Queue())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise OverloadedError(
                f"the local engine queue is full ({self._jobs.maxsize} waiting)", retry_after=1.0
            ) from None
        return self._events(job)

    async def _events(self, job: _Job) -> AsyncIterator[Event]:
        try:
            while True:
                item = await job.events.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel.set()  # a consumer that stops early frees the worker at the next token

    def _work(self, engine: Engine) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancel.is_set():
                continue
            with self._lock:
                self._busy += 1
            done = False
            try:
                for event in self._guarded(engine.run(job.request, job.cancel)):
                    if done:
                        continue  # work after the answer (storing computed KV): nobody waits on it
                    job.loop.call_soon_threadsafe(job.events.put_nowait, event)
                    if isinstance(event, Finished):
                        job.loop.call_soon_threadsafe(job.events.put_nowait, _DONE)
                        done = True
            finally:
                if not done:
                    job.loop.call_soon_threadsafe(job.events.put_nowait, _DONE)
                with self._lock:
                    self._busy -= 1

    @staticmethod
    def _guarded(events: Iterator[Event]) -> Iterator[Event | BaseException]:
        try:
            yield from events
        except TiergateError as exc:
            yield exc
        except Exception as exc:  # a worker must survive any one request's failure
            log.exception("generation failed")
            yield TiergateError(f"generation failed: {type(exc).__name__}")
