"""Indexes behind the HTTP API: build jobs on a worker thread (progress, cancel), opened indexes
kept per tenant, search and document updates off the event loop."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiergate.config import Settings
from tiergate.errors import InvalidRequestError, NotFoundError, OverloadedError
from tiergate.index import (
    BuildCancelled,
    BuildParams,
    Index,
    build_index,
    delete_documents,
    delete_index,
    index_info,
    insert_documents,
    list_indexes,
    open_index,
)
from tiergate.index.catalog import check_name, index_dir, remove_leftovers
from tiergate.index.errors import CorruptIndexError
from tiergate.models import Embedder

log = logging.getLogger(__name__)


@dataclass
class BuildJob:
    id: str
    tenant: str
    index: str
    state: str = "queued"  # queued | running | done | failed | cancelled
    stage: str = ""
    done: int = 0
    total: int | None = 0  # None while a streamed source is still being read
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        progress = self.done / self.total if self.total else (1.0 if self.state == "done" else 0.0)
        return {"id": self.id, "tenant": self.tenant, "index": self.index, "state": self.state, "stage": self.stage,
                "done": self.done, "total": self.total, "progress": round(progress, 4), "error": self.error,
                "created": self.created, "finished": self.finished}


class IndexService:
    def __init__(self, settings: Settings, *, max_queued_jobs: int = 8) -> None:
        self.settings = settings
        self.embedder: Embedder | None = None  # set once the shared embedder has loaded
        self._jobs: dict[str, BuildJob] = {}
        self._builds = ThreadPoolExecutor(1, thread_name_prefix="index-build")  # builds use every core
        self._open: dict[tuple[str, str], Index] = {}
        self._lock = threading.Lock()
        self.max_queued = max_queued_jobs
        for path in remove_leftovers(settings):  # a build or update killed mid-way, before a restart
            log.info("indexes: removed %s, left by a build or update that did not finish", path)

    def close(self) -> None:
        for job in self._jobs.values():
            job.cancel.set()
        self._builds.shutdown(wait=True, cancel_futures=True)

    # jobs --------------------------------------------------------------------
    def start_build(self, tenant: str, name: str, sources: list[Any], params: BuildParams) -> BuildJob:
        check_name(name)
        with self._lock:
            waiting = sum(j.state in ("queued", "running") for j in self._jobs.values())
            if waiting >= self.max_queued:
                raise OverloadedError(f"{waiting} index builds are already queued", retry_after=30)
            job = BuildJob(id=uuid.uuid4().hex[:16], tenant=tenant, index=name)
            self._jobs[job.id] = job
        self._builds.submit(self._run, job, sources, params)
        return job

    def _run(self, job: BuildJob, sources: list[Any], params: BuildParams) -> None:
        if job.cancel.is_set():
            job.state, job.finished = "cancelled", time.time()
            return
        job.state = "running"

        def progress(stage: str, done: int, total: int | None) -> None:
            job.stage, job.done, job.total = stage, done, total

        try:
            build_index(self.settings, job.index, sources, tenant=job.tenant, params=params, embedder=self.embedder,
                        progress=progress, cancel=job.cancel)
            job.state = "done"
        except BuildCancelled:
            job.state = "cancelled"
        except Exception as exc:  # reported on the job; the gateway keeps serving
            job.state, job.error = "failed", str(exc)
            log.warning("index build %s/%s failed: %s", job.tenant, job.index, exc)
        finally:
            job.finished = time.time()
            self._forget(job.tenant, job.index)

    def jobs(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return [j.to_dict() for j in self._jobs.values() if tenant is None or j.tenant == tenant]

    def list_jobs(self) -> list[dict[str, Any]]:  # the dashboard's view: every tenant
        return self.jobs()

    def job(self, job_id: str, tenant: str | None) -> BuildJob:
        job = self._jobs.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFoundError(f"build job {job_id!r} not found")
        return job

    def cancel_job(self, job_id: str, tenant: str | None = None) -> dict[str, Any]:
        job = self.job(job_id, tenant)
        job.cancel.set()
        return job.to_dict()

    # indexes -----------------------------------------------------------------
    def open(self, tenant: str, name: str) -> Index:
        check_name(name)
        key = (tenant, name)
        with self._lock:
            index = self._open.get(key)
        if index is None:
            index = open_index(self.settings, name, tenant, embedder=self.embedder)
            with self._lock:
                self._open[key] = index
        return index

    def _forget(self, tenant: str, name: str) -> None:
        with self._lock:
            self._open.pop((tenant, name), None)

    @contextlib.contextmanager
    def _corruption_reported(self, tenant: str, name: str) -> Iterator[None]:
        """A damaged index: logged with its path; the client learns which file, not where the data dir is."""
        try:
            yield
        except CorruptIndexError as exc:
            self._forget(tenant, name)
            log.error("index %s/%s is corrupt: %s", tenant, name, exc.message)
            detail = exc.message.replace(f"{index_dir(self.settings, name, tenant)}{os.sep}", "")
            raise CorruptIndexError(f"index {name!r} is corrupt ({detail}): delete it and build it again") from exc

    def search(self, tenant: str, name: str, query: str, k: int, filters: dict[str, Any] | None = None,
               ) -> list[dict[str, Any]]:
        if not query.strip():
            raise InvalidRequestError("query must not be empty", param="query")
        with self._corruption_reported(tenant, name):
            hits = self.open(tenant, name).search(query, k=k, filters=filters)
        return [h.to_dict() for h in hits]

    def insert(self, tenant: str, name: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
        with self._corruption_reported(tenant, name):
            result = insert_documents(self.settings, name, documents, tenant=tenant, embedder=self.embedder)
        self._forget(tenant, name)
        return dataclasses.asdict(result)

    def delete_documents(self, tenant: str, name: str, ids: list[str]) -> dict[str, Any]:
        with self._corruption_reported(tenant, name):
            result = delete_documents(self.settings, name, ids, tenant=tenant)
        self._forget(tenant, name)
        return dataclasses.asdict(result)

    def info(self, tenant: str, name: str) -> dict[str, Any]:
        with self._corruption_reported(tenant, name):
            return index_info(self.settings, check_name(name), tenant).to_dict()

    def list(self, tenant: str | None) -> list[dict[str, Any]]:
        return [i.to_dict() for i in list_indexes(self.settings, tenant)]

    def delete(self, tenant: str, name: str) -> None:
        self._forget(tenant, name)
        delete_index(self.settings, check_name(name), tenant)

    def allowed_path(self, path: str) -> Path:
        """A server-side source must lie inside one of the configured folders (no traversal, no symlink escape)."""
        resolved = Path(path).resolve()
        for folder in self.settings.server.index_source_dirs:
            if resolved.is_relative_to(Path(folder).resolve()):
                if not resolved.exists():
                    raise InvalidRequestError(f"source not found: {path}", param="path")
                return resolved
        raise InvalidRequestError(
            f"server-side path {path!r} is outside the allowed folders (server.index_source_dirs)", param="path"
        )
