"""Index build jobs, read from whatever job manager the service carries (none: the panel says so).

The manager is `svc.indexes` (or `svc.jobs`); it may offer `list_jobs()`/`jobs()`/`list()` and
`cancel_job(id)`/`cancel(id)`. Jobs may be dicts, dataclasses or objects with `to_dict()`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tiergate.errors import NotFoundError, UnavailableError


def manager(svc: Any) -> Any | None:
    for name in ("indexes", "jobs"):
        found = getattr(svc, name, None)
        if found is not None and _method(found, ("list_jobs", "jobs", "list")) is not None:
            return found
    return None


def _method(obj: Any, names: tuple[str, ...]) -> Any | None:
    for name in names:
        fn = getattr(obj, name, None)
        if callable(fn):
            return fn
    return None


def _as_dict(job: Any) -> dict[str, Any]:
    if isinstance(job, dict):
        d = dict(job)
    elif hasattr(job, "to_dict"):
        d = job.to_dict()
    elif dataclasses.is_dataclass(job) and not isinstance(job, type):
        d = dataclasses.asdict(job)
    else:
        d = dict(vars(job))
    d.setdefault("id", d.get("job_id"))
    d.setdefault("state", d.get("status"))
    d.setdefault("index", d.get("name"))
    if d.get("progress") is None and d.get("total"):
        d["progress"] = (d.get("done") or 0) / d["total"]
    return {k: v for k, v in d.items() if isinstance(v, str | int | float | bool | type(None) | dict | list)}


def list_jobs(svc: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(jobs, None), or (None, why there are none to show)."""
    m = manager(svc)
    if m is None:
        return None, "this gateway runs no index build jobs (no jobs API wired in)"
    jobs = _method(m, ("list_jobs", "jobs", "list"))()  # type: ignore[misc]
    return [_as_dict(j) for j in jobs], None


def cancel(svc: Any, job_id: str) -> Any:
    m = manager(svc)
    fn = _method(m, ("cancel_job", "cancel")) if m is not None else None
    if fn is None:
        raise UnavailableError("this gateway has no job API to cancel builds with")
    result = fn(job_id)
    if result is False:  # managers that raise their own not-found error never get here
        raise NotFoundError(f"no running build job {job_id!r}")
    return result
