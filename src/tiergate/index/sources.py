"""Source readers: JSONL, Parquet, CSV and folders of .txt/.md files, streamed as records.

Every problem is a SourceError naming the file and, for line formats, the line number. A record
needs a non-empty `text`; `id` is optional (default: a hash of the text, so it is stable) and
`metadata` must be an object of JSON values. Other columns of Parquet/CSV sources become metadata.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiergate.index.errors import SourceError

TEXT_SUFFIXES = (".txt", ".md")
Source = str | Path | Iterable[Mapping[str, Any]]


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def text_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def make_record(raw: Any, where: str, extra_meta: Mapping[str, Any] | None = None) -> Record:
    if not isinstance(raw, Mapping):
        raise SourceError(f"{where}: expected an object with a 'text' field, got {type(raw).__name__}")
    text = raw.get("text")
    if text is None:
        raise SourceError(f"{where}: missing 'text' field")
    if not isinstance(text, str):
        raise SourceError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise SourceError(f"{where}: 'text' is empty")
    rid = raw.get("id")
    if rid is None or rid == "":
        rid = text_id(text)
    elif isinstance(rid, (int, str)) and not isinstance(rid, bool):
        rid = str(rid)
    else:
        raise SourceError(f"{where}: 'id' must be a string or an integer")
    meta = raw.get("metadata")
    if meta is None:
        meta = {}
    elif isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{where}: 'metadata' is not valid JSON: {exc.msg}") from exc
    if not isinstance(meta, dict):
        raise SourceError(f"{where}: 'metadata' must be an object")
    if extra_meta:
        meta = {**extra_meta, **meta}
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise SourceError(f"{where}: 'metadata' holds a value that is not JSON: {exc}") from exc
    return Record(rid, text, meta)


def read_jsonl(path: Path) -> Iterator[Record]:
    any_record = False
    with path.open("r", encoding="utf-8", errors="strict") as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
                any_record = True
                yield make_record(raw, f"{path}:{lineno}")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if not any_record:
        raise SourceError(f"{path}: no records (empty file)")


def read_csv(path: Path) -> Iterator[Record]:
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise SourceError(f"{path}: no records (empty file)")
        if "text" not in reader.fieldnames:
            raise SourceError(f"{path}:1: header has no 'text' column (columns: {', '.join(reader.fieldnames)})")
        any_record = False
        for row in reader:
            lineno = reader.line_num
            extra = {k: v for k, v in row.items() if k not in ("id", "text", "metadata") and k is not None}
            any_record = True
            yield make_record(row, f"{path}:{lineno}", extra)
    if not any_record:
        raise SourceError(f"{path}: no records (header only)")


def read_parquet(path: Path, batch_rows: int = 4096) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SourceError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    if "text" not in names:
        raise SourceError(f"{path}: no 'text' column (columns: {', '.join(names)})")
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        for raw in batch.to_pylist():
            extra = {k: v for k, v in raw.items() if k not in ("id", "text", "metadata")}
            yield make_record(raw, f"{path}: row {row}", extra)
            row += 1
    if row == 0:
        raise SourceError(f"{path}: no records (empty table)")


def read_folder(path: Path) -> Iterator[Record]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise SourceError(f"{path}: no .txt or .md files in folder")
    for file in files:
        rel = file.relative_to(path).as_posix()
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{file}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
        if text.strip():
            yield Record(rel, text, {"path": rel})


def read_source(src: str | Path) -> Iterator[Record]:
    path = Path(src)
    if not path.exists():
        raise SourceError(f"{path}: source not found")
    if path.is_dir():
        return read_folder(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(path)
    if suffix == ".csv":
        return read_csv(path)
    if suffix in (".parquet", ".pq"):
        return read_parquet(path)
    if suffix in TEXT_SUFFIXES:
        return read_folder_file(path)
    raise SourceError(f"{path}: unknown source type {suffix!r} (use .jsonl, .parquet, .csv, .txt/.md or a folder)")


def read_folder_file(path: Path) -> Iterator[Record]:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise SourceError(f"{path}: no records (empty file)")
    yield Record(path.name, text, {"path": path.name})


def read_sources(sources: Iterable[Source] | Source) -> Iterator[Record]:
    """All records of all sources in order; rejects duplicate ids, naming the record."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    seen: set[str] = set()
    for src in sources:
        if isinstance(src, (str, Path)):
            records: Iterable[Record] = read_source(src)
        else:
            records = (make_record(r, f"record {i}") for i, r in enumerate(src))
        for rec in records:
            if rec.id in seen:
                raise SourceError(f"duplicate id {rec.id!r} in {src if isinstance(src, (str, Path)) else 'records'}")
            seen.add(rec.id)
            yield rec


def estimate_records(sources: Iterable[Source] | Source) -> int | None:
    """A cheap record count for progress totals (None when a source is not a file or folder)."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    total = 0
    for src in sources:
        if not isinstance(src, (str, Path)):
            return None
        path = Path(src)
        try:
            if path.is_dir():
                total += sum(1 for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            elif path.suffix.lower() in (".parquet", ".pq"):
                import pyarrow.parquet as pq

                total += pq.ParquetFile(path).metadata.num_rows
            elif path.suffix.lower() == ".csv":
                with path.open("rb") as f:
                    total += max(0, sum(1 for _ in f) - 1)
            else:
                with path.open("rb") as f:
                    total += sum(1 for line in f if line.strip())
        except Exception:  # the real read reports the problem properly
            return None
    return total
