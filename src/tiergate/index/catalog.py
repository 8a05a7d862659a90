"""Where indexes live and how versions are swapped.

Layout: <data_dir>/indexes/<tenant>/<name>/CURRENT names the live version folder (v000001, ...),
which holds the manifest and every file of that version. A build writes a whole index folder
under a hidden staging name and renames it into place; an update writes a new version folder and
swaps CURRENT with an atomic rename. Readers therefore see a complete old or a complete new
index, never a half-written one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tiergate.config import Settings
from tiergate.errors import InvalidRequestError
from tiergate.index.errors import CorruptIndexError, IndexNotFoundError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURRENT = "CURRENT"


def check_name(value: str, what: str = "index name") -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
        raise InvalidRequestError(
            f"invalid {what} {value!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter "
            "or digit", param="name" if what == "index name" else "tenant",
        )
    return value


def root(settings: Settings) -> Path:
    return settings.path("indexes")


def tenant_dir(settings: Settings, tenant: str) -> Path:
    return root(settings) / check_name(tenant, "tenant")


def index_dir(settings: Settings, name: str, tenant: str = "default") -> Path:
    return tenant_dir(settings, tenant) / check_name(name)


def version_name(number: int) -> str:
    return f"v{number:06d}"


def current_version(folder: Path) -> Path:
    pointer = folder / CURRENT
    if not folder.is_dir():
        raise IndexNotFoundError(f"index {folder.name!r} not found")
    if not pointer.is_file():
        raise CorruptIndexError(f"{pointer}: version pointer is missing")
    name = pointer.read_text().strip()
    if not re.fullmatch(r"v\d{6}", name):
        raise CorruptIndexError(f"{pointer}: invalid version pointer {name!r}")
    return folder / name


def set_current(folder: Path, version: str) -> None:
    tmp = folder / f".{CURRENT}.{uuid.uuid4().hex}"
    with tmp.open("w") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / CURRENT)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_dir(settings: Settings, tenant: str, name: str) -> Path:
    parent = tenant_dir(settings, tenant)
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".staging-{name}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


@contextlib.contextmanager
def staging(settings: Settings, tenant: str, name: str) -> Iterator[Path]:
    """A hidden folder to build an index in: locked while the build lives, so that
    `remove_leftovers` can tell it from what a killed build left, and removed unless published."""
    path = staging_dir(settings, tenant, name)
    try:
        with locked(path):
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(settings: Settings) -> list[Path]:
    """Remove what killed builds and updates left behind: staging folders no live build holds,
    trash, and unpublished update versions of indexes no one is updating. Returns what went."""
    base = root(settings)
    if not base.is_dir():
        return []
    removed: list[Path] = []
    for tenant in (p for p in base.iterdir() if p.is_dir()):
        for path in tenant.iterdir():
            if path.name.startswith((".staging-", ".trash-")) and path.is_dir():
                removed += _remove_unlocked(path, [path])
            elif NAME_RE.fullmatch(path.name) and path.is_dir():
                removed += _remove_unlocked(path, [p for p in path.iterdir() if p.name.startswith(".tmp-")])
    return removed


def _remove_unlocked(folder: Path, victims: list[Path]) -> list[Path]:
    """Remove `victims` if `folder`'s lock is free (the writer that held it is gone)."""
    if not victims:
        return []
    try:
        with (folder / ".lock").open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # a live build or update holds it
            for victim in victims:
                shutil.rmtree(victim, ignore_errors=True)
    except FileNotFoundError:  # removed meanwhile by its owner
        return []
    return victims


def publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Move a complete staged index into place (atomic rename)."""
    from tiergate.index.errors import IndexExistsError

    fsync_dir(staging)
    if target.exists():
        if not overwrite:
            raise IndexExistsError(f"index {target.name!r} already exists (delete it or pass overwrite)")
        trash = target.with_name(f".trash-{target.name}-{uuid.uuid4().hex[:12]}")
        os.rename(target, trash)
        os.rename(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, target)
    fsync_dir(target.parent)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One writer per index at a time (within this host)."""
    with (folder / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def list_names(settings: Settings, tenant: str | None = None) -> list[tuple[str, str]]:
    """(tenant, name) of every published index, for one tenant or all."""
    base = root(settings)
    tenants = [check_name(tenant, "tenant")] if tenant else (
        sorted(p.name for p in base.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name)) if base.is_dir() else []
    )
    out = []
    for t in tenants:
        d = base / t
        if d.is_dir():
            out.extend((t, p.name) for p in sorted(d.iterdir())
                       if p.is_dir() and NAME_RE.fullmatch(p.name) and (p / CURRENT).is_file())
    return out


def remove(settings: Settings, name: str, tenant: str = "default") -> None:
    folder = index_dir(settings, name, tenant)
    if not folder.is_dir():
        raise IndexNotFoundError(f"index {name!r} not found for tenant {tenant!r}")
    trash = folder.with_name(f".trash-{name}-{uuid.uuid4().hex[:12]}")
    os.rename(folder, trash)  # invisible at once, then deleted
    shutil.rmtree(trash, ignore_errors=True)
