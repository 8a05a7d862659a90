"""/v1/indexes: build jobs (uploaded documents or a server-side path), search, document updates.
Every route works within the caller's tenant: other tenants' indexes do not exist for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from tiergate.errors import InvalidRequestError
from tiergate.index import BuildParams
from tiergate.service.auth import Principal
from tiergate.service.deps import Services, principal, services
from tiergate.service.indexes import IndexService
from tiergate.service.schemas import JsonBody, error_responses

# Every route needs an API key and counts against the key's rate limit.
router = APIRouter(prefix="/v1/indexes", responses=error_responses(401, 429))


class DocumentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=256)
    text: str = Field(min_length=1)
    metadata: dict[str, Any] | None = None


class BuildBody(JsonBody):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    documents: list[DocumentBody] | None = Field(None, description="The corpus itself.")
    path: str | None = Field(None, description="A server-side file or folder inside server.index_source_dirs.")
    chunk_tokens: int = Field(0, ge=0, le=8192)
    overlap: int = Field(0, ge=0, le=4096)


class SearchBody(JsonBody):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=8192)
    k: int = Field(5, ge=1, le=100)
    filters: dict[str, str | int | float | bool] | None = None


class DocumentsBody(JsonBody):
    model_config = ConfigDict(extra="forbid")
    documents: list[DocumentBody] = Field(min_length=1)


class DeleteDocumentsBody(JsonBody):
    model_config = ConfigDict(extra="forbid")
    ids: list[str] = Field(min_length=1)


class JobOut(BaseModel):
    id: str
    tenant: str
    index: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: str
    done: int
    total: int | None  # unknown while passages stream in
    progress: float
    error: str | None
    created: float
    finished: float | None


class JobAccepted(BaseModel):
    job: JobOut


class JobList(BaseModel):
    object: Literal["list"]
    data: list[JobOut]


class IndexOut(BaseModel):
    name: str
    tenant: str
    passages: int
    deleted: int
    raw_text_bytes: int
    text_store_bytes: int
    index_bytes: int
    files: dict[str, int]
    model_id: str
    dim: int
    pq: dict[str, Any]
    params: dict[str, Any]
    created_at: float
    updated_at: float
    version: str
    stats: dict[str, Any]
    index_ratio: float
    index_bytes_per_passage: float


class IndexList(BaseModel):
    object: Literal["list"]
    data: list[IndexOut]


class Hit(BaseModel):
    id: str
    score: float
    text: str
    metadata: dict[str, Any] | None


class SearchResults(BaseModel):
    object: Literal["list"]
    index: str
    data: list[Hit]


class Updated(BaseModel):
    inserted: int
    deleted: int
    missing: list[str] | None
    passages: int
    version: str


class Deleted(BaseModel):
    deleted: str


def _ok(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description}}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json")


def _indexes(svc: Services) -> IndexService:
    assert svc.indexes is not None
    return svc.indexes


def _source_path(svc: Services, path: str) -> Path:
    try:
        return _indexes(svc).allowed_path(path)
    except ValueError as exc:  # the OS cannot even look a path with a NUL byte up
        raise InvalidRequestError("the server-side path holds a NUL byte", param="path") from exc
    except OSError as exc:  # e.g. a name too long for the file system
        raise InvalidRequestError(f"the server-side path cannot be used: {exc.strerror}", param="path") from exc


@router.post("", status_code=202, responses={202: {"model": JobAccepted, "description": "The build job, queued."},
                                             **error_responses(400, 413)})
async def build(body: BuildBody, svc: Services = Depends(services), who: Principal = Depends(principal)) -> Response:
    if (body.documents is None) == (body.path is None):
        raise InvalidRequestError("give either documents or a server-side path")
    sources: list[Any] = ([d.model_dump(exclude_none=True) for d in body.documents] if body.documents is not None
                          else [_source_path(svc, body.path or "")])
    params = BuildParams(chunk_tokens=body.chunk_tokens, overlap=body.overlap)
    job = _indexes(svc).start_build(who.tenant, body.name, [sources] if body.documents is not None else sources,
                                    params)
    return _json({"job": job.to_dict()}, status=202)


@router.get("", responses=_ok(IndexList, "The tenant's indexes."))
async def list_(svc: Services = Depends(services), who: Principal = Depends(principal)) -> Response:
    return _json({"object": "list", "data": await svc.blocking(_indexes(svc).list, who.tenant)})


@router.get("/jobs", responses=_ok(JobList, "The tenant's build jobs."))
async def jobs(svc: Services = Depends(services), who: Principal = Depends(principal)) -> Response:
    return _json({"object": "list", "data": _indexes(svc).jobs(who.tenant)})


@router.get("/jobs/{job_id}", responses={**_ok(JobOut, "The job's state and progress."), **error_responses(404)})
async def job(job_id: str, svc: Services = Depends(services), who: Principal = Depends(principal)) -> Response:
    return _json(_indexes(svc).job(job_id, who.tenant).to_dict())


@router.delete("/jobs/{job_id}", responses={**_ok(JobOut, "Cancellation asked for; the job's state."),
                                            **error_responses(404)})
async def cancel(job_id: str, svc: Services = Depends(services), who: Principal = Depends(principal)) -> Response:
    return _json(_indexes(svc).cancel_job(job_id, who.tenant))


@router.get("/{name}", responses={**_ok(IndexOut, "Sizes, parameters and version."),
                                  **error_responses(400, 404, 409)})
async def info(name: str, svc: Services = Depends(services), who: Principal = Depends(principal)) -> Response:
    return _json(await svc.blocking(_indexes(svc).info, who.tenant, name))


@router.delete("/{name}", responses={**_ok(Deleted, "The index is gone."), **error_responses(400, 404)})
async def delete(name: str, svc: Services = Depends(services), who: Principal = Depends(principal)) -> Response:
    await svc.blocking(_indexes(svc).delete, who.tenant, name)
    return _json({"deleted": name})


@router.post("/{name}/search", responses={**_ok(SearchResults, "The best passages, best first."),
                                          **error_responses(400, 404, 409, 413)})
async def search(name: str, body: SearchBody, svc: Services = Depends(services),
                 who: Principal = Depends(principal)) -> Response:
    hits = await svc.blocking(_indexes(svc).search, who.tenant, name, body.query, body.k, body.filters)
    return _json({"object": "list", "index": name, "data": hits})


@router.post("/{name}/documents", responses={**_ok(Updated, "Documents added or replaced."),
                                             **error_responses(400, 404, 409, 413)})
async def add_documents(name: str, body: DocumentsBody, svc: Services = Depends(services),
                        who: Principal = Depends(principal)) -> Response:
    docs = [d.model_dump(exclude_none=True) for d in body.documents]
    return _json(await svc.blocking(_indexes(svc).insert, who.tenant, name, docs))


@router.delete("/{name}/documents", responses={**_ok(Updated, "Documents removed."),
                                               **error_responses(400, 404, 409, 413)})
async def remove_documents(name: str, body: DeleteDocumentsBody, svc: Services = Depends(services),
                           who: Principal = Depends(principal)) -> Response:
    return _json(await svc.blocking(_indexes(svc).delete_documents, who.tenant, name, body.ids))
