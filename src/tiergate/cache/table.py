"""One partition of the semantic cache (a tenant's entries of one category), held in columns.

What a lookup compares (setting, context, expiry, model, query text) and what the quota needs
(payload size, recency) sit in one structured numpy array indexed by row, beside the ANN index
over the rows' query vectors. A dict maps entry labels to rows; freed rows are reused. That is
about 300 bytes per entry besides the index, where an object per entry holding an object per
field took about 700. `Entry` objects are made on demand, for the few rows a lookup looks at.
Not thread-safe on its own: the cache holds a lock.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np

from tiergate.cache.ann import AnnIndex
from tiergate.cache.entries import Entry

_ROW = np.dtype(
    [
        ("label", "<i8"),
        ("setting", "<i8"),
        ("context", "<i8"),
        ("expires", "<f8"),
        ("used", "<i8"),
        ("stamp", "<i8"),
        ("size", "<u8"),
        ("history", "<u4"),
        ("model", "<u4"),
    ]
)
_FREE = np.iinfo(np.int64).max  # `used` of a free row: never the least recently used


class EntryTable:
    def __init__(self, tenant: str, category: str, ann: AnnIndex) -> None:
        self.tenant = tenant
        self.category = category
        self.ann = ann
        self.bytes = 0  # payload bytes of the entries held
        self._rows: dict[int, int] = {}  # label -> row
        self._free: list[int] = []
        self._cols = np.zeros(0, dtype=_ROW)
        self._queries: list[str | None] = []
        self._query_bytes = 0
        self._models: list[str] = []  # models are few: each row holds an index into this list
        self._model_codes: dict[str, int] = {}
        self._tick = 0  # orders inserts (stamps) and uses (recency)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, label: int) -> bool:
        return label in self._rows

    def get(self, label: int) -> Entry | None:
        row = self._rows.get(label)
        return None if row is None else self._entry(row)

    def entries(self) -> Iterator[Entry]:
        for row in list(self._rows.values()):
            yield self._entry(row)

    def add(self, entry: Entry, vector: np.ndarray | None) -> None:
        """Hold `entry`, replacing any entry under its label; sets `entry.stamp`."""
        self.remove(entry.label)
        row = self._free.pop() if self._free else self._append()
        self._tick += 1
        entry.stamp = self._tick
        code = self._model_codes.get(entry.model)
        if code is None:
            code = self._model_codes[entry.model] = len(self._models)
            self._models.append(entry.model)
        expires = np.inf if entry.expires_at is None else entry.expires_at
        self._cols[row] = (
            entry.label,
            entry.setting,
            entry.context,
            expires,
            self._tick,
            self._tick,
            entry.size,
            entry.history,
            code,
        )
        self._queries[row] = entry.query
        self._query_bytes += sys.getsizeof(entry.query)
        self._rows[entry.label] = row
        self.bytes += entry.size
        if vector is not None:
            self.ann.add([row], np.asarray(vector, dtype=np.float32).reshape(1, -1))

    def _append(self) -> int:
        row = len(self._queries)
        if row == len(self._cols):
            grown = np.zeros(max(64, 2 * row), dtype=_ROW)  # rows past `row` are written before use
            grown[:row] = self._cols
            self._cols = grown
        self._queries.append(None)
        return row

    def remove(self, label: int, stamp: int | None = None) -> bool:
        """Drop the entry under `label` (only the one with `stamp`, when given)."""
        row = self._rows.get(label)
        if row is None or (stamp is not None and int(self._cols["stamp"][row]) != stamp):
            return False
        del self._rows[label]
        self.ann.remove(row)
        self.bytes -= int(self._cols["size"][row])
        self._cols["used"][row] = _FREE
        self._query_bytes -= sys.getsizeof(self._queries[row])
        self._queries[row] = None
        self._free.append(row)
        return True

    def touch(self, label: int) -> None:
        row = self._rows.get(label)
        if row is not None:
            self._tick += 1
            self._cols["used"][row] = self._tick

    def least_recent(self) -> Entry | None:
        """The least recently used entry (inserted or hit), the quota's next victim."""
        if not self._rows:
            return None
        return self._entry(int(np.argmin(self._cols["used"][: len(self._queries)])))

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """The k nearest entries of each query vector as (label, cosine), best first."""
        labels = self._cols["label"]
        return [[(int(labels[row]), sim) for row, sim in hits] for hits in self.ann.search_many(vectors, k)]

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        return self.search_many(np.asarray(vector).reshape(1, -1), k)[0]

    def matching(self, model: str | None, label: int | None, prefix: str | None) -> list[Entry]:
        """Entries of `model`, under `label`, whose query starts with `prefix` (lower case);
        a None filter matches all."""
        rows = list(self._rows.values()) if label is None else [r for r in (self._rows.get(label),) if r is not None]
        if model is not None:
            code = self._model_codes.get(model)
            rows = [r for r in rows if code is not None and self._cols["model"][r] == code]
        if prefix is not None:
            rows = [r for r in rows if (self._queries[r] or "").lower().startswith(prefix)]
        return [self._entry(r) for r in rows]

    def memory_bytes(self) -> int:
        """Bytes held for the entries: columns, query texts, label map, ANN index."""
        keys = sum(sys.getsizeof(k) for k in list(self._rows)[:64]) / max(1, min(64, len(self._rows)))
        label_map = sys.getsizeof(self._rows) + len(self._rows) * (keys + sys.getsizeof(1 << 20))
        lists = sys.getsizeof(self._queries) + sys.getsizeof(self._free)
        return int(self._cols.nbytes + self._query_bytes + label_map + lists + self.ann.memory_bytes())

    def _entry(self, row: int) -> Entry:
        r = self._cols[row]
        expires = float(r["expires"])
        return Entry(
            int(r["label"]),
            self.tenant,
            self.category,
            self._models[int(r["model"])],
            int(r["setting"]),
            int(r["context"]),
            self._queries[row] or "",
            int(r["history"]),
            None if expires == np.inf else expires,
            int(r["size"]),
            int(r["stamp"]),
        )
