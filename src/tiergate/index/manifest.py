"""The manifest: format version, model, dimensions, parameters, counts and a checksum per file."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tiergate.index.errors import CorruptIndexError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class FileEntry:
    bytes: int
    sha256: str


@dataclass
class Manifest:
    name: str
    tenant: str
    model_id: str
    dim: int
    passages: int  # live passages (excluding deleted)
    nodes: int  # graph nodes, deleted ones included
    raw_text_bytes: int  # UTF-8 bytes of live passage text
    params: dict[str, Any]
    pq: dict[str, Any]  # m, nbits
    margin: float  # calibrated PQ error margin for re-scoring
    text_segments: list[str]
    recompute: int | None = None  # calibrated re-scoring depth; None in indexes built before it
    files: dict[str, FileEntry] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    format_version: int = FORMAT_VERSION
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["files"] = {k: FileEntry(**v) for k, v in data.get("files", {}).items()}
        return cls(**data)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def record_files(manifest: Manifest, folder: Path, names: list[str]) -> None:
    for name in names:
        p = folder / name
        manifest.files[name] = FileEntry(p.stat().st_size, sha256_file(p))


def write_manifest(folder: Path, manifest: Manifest) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: Path, verify: bool = True, full: bool = False) -> Manifest:
    """Read and check a version's manifest: every file present with its recorded size and, with
    verify, its checksum (text segments only with full: they can be large, and Parquet checks
    its own structure when read)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CorruptIndexError(f"{path}: manifest is missing")
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise CorruptIndexError(f"{path}: manifest is not valid: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise CorruptIndexError(
            f"{path}: format version {manifest.format_version} is not supported (expected {FORMAT_VERSION})"
        )
    for name, entry in manifest.files.items():
        p = folder / name
        if not p.is_file():
            raise CorruptIndexError(f"{p}: index file is missing")
        size = p.stat().st_size
        if size != entry.bytes:
            raise CorruptIndexError(f"{p}: index file has {size} bytes, manifest says {entry.bytes}")
        if verify and (full or name not in manifest.text_segments) and sha256_file(p) != entry.sha256:
            raise CorruptIndexError(f"{p}: checksum mismatch (file is corrupt)")
    return manifest
