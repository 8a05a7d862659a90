"""Passage text and metadata in Parquet segments (zstd), read back by row with a small cache.

Rows are in node order. An index has one segment per build or insert batch; node ids run
through the segments in order. Row groups are kept small (about 256 KB of text) so that fetching
a few dozen random passages for re-scoring decodes little.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tiergate.index.errors import CorruptIndexError

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("record_id", pa.string()),
    ("text", pa.string()),
    ("metadata", pa.string()),  # JSON object
])


def rows_per_group(mean_text_bytes: float) -> int:
    return int(min(8192, max(64, (256 * 1024) // max(1.0, mean_text_bytes))))


def write_segment(path: Path, table: pa.Table, group_rows: int) -> None:
    # Page checksums: Parquet's structure checks alone let some flipped bytes through as wrong text.
    pq.write_table(table.cast(SCHEMA), path, compression="zstd", compression_level=9,
                   row_group_size=group_rows, write_statistics=False, write_page_checksum=True)


def make_table(ids: Sequence[str], record_ids: Sequence[str], texts: Sequence[str],
               metadata: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "record_id": pa.array(record_ids, pa.string()),
        "text": pa.array(texts, pa.string()),
        "metadata": pa.array([json.dumps(m, separators=(",", ":")) for m in metadata], pa.string()),
    }, schema=SCHEMA)


class TextStore:
    def __init__(self, paths: list[Path], cache_groups: int = 256) -> None:
        self._lock = threading.Lock()  # the row-group cache is shared by searching threads
        self.paths = paths
        self._files: list[pq.ParquetFile] = []
        starts = [0]
        group_starts: list[np.ndarray] = []
        for path in paths:
            try:
                f = pq.ParquetFile(path, memory_map=True, page_checksum_verification=True)
            except Exception as exc:
                raise CorruptIndexError(f"{path}: text store is unreadable: {exc}") from exc
            self._files.append(f)
            md = f.metadata
            g = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
            group_starts.append(g)
            starts.append(starts[-1] + md.num_rows)
        self.seg_starts = np.array(starts, dtype=np.int64)
        self.group_starts = group_starts
        self._cache: OrderedDict[tuple[int, int], dict[str, list]] = OrderedDict()
        self._cache_groups = cache_groups

    def __len__(self) -> int:
        return int(self.seg_starts[-1])

    def column(self, name: str) -> list[Any]:
        out: list[Any] = []
        for path, f in zip(self.paths, self._files, strict=True):
            try:
                values = f.read(columns=[name]).column(0).to_pylist()
            except Exception as exc:
                raise CorruptIndexError(f"{path}: column {name!r} is unreadable: {exc}") from exc
            if len(values) != f.metadata.num_rows:
                raise CorruptIndexError(f"{path}: column {name!r} has {len(values)} rows, not {f.metadata.num_rows}")
            out.extend(values)
        return out

    def _group(self, seg: int, group: int) -> dict[str, list]:
        key = (seg, group)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        rows = int(self.group_starts[seg][group + 1] - self.group_starts[seg][group])
        try:
            t = self._files[seg].read_row_group(group, columns=["text", "metadata"])
            value = {"text": t.column("text").to_pylist(), "metadata": t.column("metadata").to_pylist()}
            if len(value["text"]) != rows or len(value["metadata"]) != rows:
                raise ValueError(f"{len(value['text'])} texts and {len(value['metadata'])} metadata, not {rows} rows")
        except Exception as exc:
            raise CorruptIndexError(f"{self.paths[seg]}: row group {group} is unreadable: {exc}") from exc
        with self._lock:
            self._cache[key] = value
            if len(self._cache) > self._cache_groups:
                self._cache.popitem(last=False)
        return value

    def take(self, nodes: Sequence[int] | np.ndarray, field: str = "text") -> list[Any]:
        nodes = np.asarray(nodes, dtype=np.int64)
        if len(nodes) and (nodes.min() < 0 or nodes.max() >= len(self)):
            raise IndexError("node id out of range")
        segs = np.searchsorted(self.seg_starts, nodes, side="right") - 1
        out: list[Any] = []
        for node, seg in zip(nodes.tolist(), segs.tolist(), strict=True):
            row = node - int(self.seg_starts[seg])
            g = int(np.searchsorted(self.group_starts[seg], row, side="right") - 1)
            out.append(self._group(seg, g)[field][row - int(self.group_starts[seg][g])])
        return out

    def texts(self, nodes: Sequence[int] | np.ndarray) -> list[str]:
        return self.take(nodes, "text")

    def metadata(self, nodes: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.take(nodes, "metadata")]
