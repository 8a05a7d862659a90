"""One partition of the semantic cache (a tenant's entries of one category), held in columns.

What a lookup compares (setting, context, expiry, model, query text) and what the quota needs
(payload size, recency) sit in one structured numpy array indexed by row, beside the ANN index
over the rows' query vectors. Query texts are UTF-8 in one byte arena; labels are found through a
sorted label array (binary search; an insert or delete shifts it, a memmove that is small beside
the HNSW insert). Freed rows are reused. That is about 200 bytes per entry besides the index,
where an object per entry holding an object per field took about 700, and a dict from label to
row alone about 110. `Entry` objects are made on demand, for the few rows a lookup looks at.
Not thread-safe on its own: the cache holds a lock.
"""

from __future__ import annotations

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
        ("text_at", "<u8"),  # the query's offset in the text arena
        ("text_len", "<u4"),
        ("size", "<u4"),  # payload bytes (a category's quota caps them far below 4 GiB)
        ("history", "<u2"),
        ("model", "<u2"),
    ]
)
_FREE = np.iinfo(np.int64).max  # `used` of a free row: never the least recently used
_MAX_U16 = np.iinfo(np.uint16).max
_MAX_U32 = np.iinfo(np.uint32).max


class EntryTable:
    def __init__(self, tenant: str, category: str, ann: AnnIndex) -> None:
        self.tenant = tenant
        self.category = category
        self.ann = ann
        self.bytes = 0  # payload bytes of the entries held
        self._cols = np.zeros(0, dtype=_ROW)
        self._rows_used = 0  # rows ever handed out (live or free)
        self._free: list[int] = []
        self._sorted = np.zeros(0, dtype=np.int64)  # labels held, ascending
        self._sorted_rows = np.zeros(0, dtype=np.int32)  # the row of each label in `_sorted`
        self._count = 0
        self._text = bytearray()  # query texts, UTF-8, back to back
        self._dead_text = 0  # arena bytes of removed entries, reclaimed by `_compact_text`
        self._models: list[str] = []  # models are few: each row holds an index into this list
        self._model_codes: dict[str, int] = {}
        self._tick = 0  # orders inserts (stamps) and uses (recency)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, label: int) -> bool:
        return self._row(label) is not None

    def get(self, label: int) -> Entry | None:
        row = self._row(label)
        return None if row is None else self._entry(row)

    def entries(self) -> Iterator[Entry]:
        for row in self._sorted_rows[: self._count].tolist():
            yield self._entry(row)

    # ---- label index

    def _where(self, label: int) -> tuple[int, bool]:
        """Position of `label` in the sorted index, and whether it is there."""
        if not 0 <= label <= _FREE:
            return 0, False
        i = int(np.searchsorted(self._sorted[: self._count], label))
        return i, i < self._count and int(self._sorted[i]) == label

    def _row(self, label: int) -> int | None:
        i, found = self._where(label)
        return int(self._sorted_rows[i]) if found else None

    def _index_insert(self, i: int, label: int, row: int) -> None:
        n = self._count
        if n == len(self._sorted):
            size = max(64, 2 * n)
            self._sorted = np.resize(self._sorted, size)
            self._sorted_rows = np.resize(self._sorted_rows, size)
        self._sorted[i + 1 : n + 1] = self._sorted[i:n]
        self._sorted_rows[i + 1 : n + 1] = self._sorted_rows[i:n]
        self._sorted[i], self._sorted_rows[i] = label, row
        self._count = n + 1

    def _index_delete(self, i: int) -> None:
        n = self._count
        self._sorted[i : n - 1] = self._sorted[i + 1 : n]
        self._sorted_rows[i : n - 1] = self._sorted_rows[i + 1 : n]
        self._count = n - 1

    # ---- entries

    def add(self, entry: Entry, vector: np.ndarray | None) -> None:
        """Hold `entry`, replacing any entry under its label; sets `entry.stamp`."""
        self.remove(entry.label)
        if entry.size > _MAX_U32 or entry.history > _MAX_U16:
            raise ValueError("cache entry too large for the table (payload over 4 GiB or 65k turns)")
        code = self._model_codes.get(entry.model)
        if code is None:
            if len(self._models) > _MAX_U16:
                raise ValueError("more than 65k models in one cache partition")
            code = self._model_codes[entry.model] = len(self._models)
            self._models.append(entry.model)
        row = self._free.pop() if self._free else self._new_row()
        self._tick += 1
        entry.stamp = self._tick
        text = entry.query.encode("utf-8", "surrogatepass")
        expires = np.inf if entry.expires_at is None else entry.expires_at
        self._cols[row] = (
            entry.label,
            entry.setting,
            entry.context,
            expires,
            self._tick,
            self._tick,
            len(self._text),
            len(text),
            entry.size,
            entry.history,
            code,
        )
        self._text += text
        i, _ = self._where(entry.label)
        self._index_insert(i, entry.label, row)
        self.bytes += entry.size
        if vector is not None:
            self.ann.add([row], np.asarray(vector, dtype=np.float32).reshape(1, -1))

    def _new_row(self) -> int:
        row = self._rows_used
        if row == len(self._cols):
            grown = np.zeros(max(64, 2 * row), dtype=_ROW)  # rows past `row` are written before use
            grown[:row] = self._cols
            self._cols = grown
        self._rows_used += 1
        return row

    def remove(self, label: int, stamp: int | None = None) -> bool:
        """Drop the entry under `label` (only the one with `stamp`, when given)."""
        i, found = self._where(label)
        if not found:
            return False
        row = int(self._sorted_rows[i])
        if stamp is not None and int(self._cols["stamp"][row]) != stamp:
            return False
        self._index_delete(i)
        self.ann.remove(row)
        self.bytes -= int(self._cols["size"][row])
        self._cols["used"][row] = _FREE
        self._dead_text += int(self._cols["text_len"][row])
        self._cols["text_len"][row] = 0
        self._free.append(row)
        if self._dead_text > 1 << 16 and self._dead_text > len(self._text) // 2:
            self._compact_text()
        return True

    def _compact_text(self) -> None:
        """Rewrite the arena with the live texts only."""
        text = bytearray()
        at, length = self._cols["text_at"], self._cols["text_len"]
        for row in self._sorted_rows[: self._count].tolist():
            start, n = int(at[row]), int(length[row])
            at[row] = len(text)
            text += self._text[start : start + n]
        self._text, self._dead_text = text, 0

    def touch(self, label: int) -> None:
        row = self._row(label)
        if row is not None:
            self._tick += 1
            self._cols["used"][row] = self._tick

    def least_recent(self) -> Entry | None:
        """The least recently used entry (inserted or hit), the quota's next victim."""
        if not self._count:
            return None
        return self._entry(int(np.argmin(self._cols["used"][: self._rows_used])))

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """The k nearest entries of each query vector as (label, cosine), best first."""
        labels = self._cols["label"]
        return [[(int(labels[row]), sim) for row, sim in hits] for hits in self.ann.search_many(vectors, k)]

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        return self.search_many(np.asarray(vector).reshape(1, -1), k)[0]

    def matching(self, model: str | None, label: int | None, prefix: str | None) -> list[Entry]:
        """Entries of `model`, under `label`, whose query starts with `prefix` (lower case);
        a None filter matches all."""
        if label is None:
            rows = self._sorted_rows[: self._count].tolist()
        else:
            row = self._row(label)
            rows = [] if row is None else [row]
        if model is not None:
            code = self._model_codes.get(model)
            rows = [r for r in rows if code is not None and self._cols["model"][r] == code]
        if prefix is not None:
            rows = [r for r in rows if self._query(r).lower().startswith(prefix)]
        return [self._entry(r) for r in rows]

    def memory_bytes(self) -> int:
        """Bytes held for the entries: columns, query texts, label index, ANN index."""
        index = self._sorted.nbytes + self._sorted_rows.nbytes + 8 * len(self._free)
        return int(self._cols.nbytes + len(self._text) + index + self.ann.memory_bytes())

    def _query(self, row: int) -> str:
        start, n = int(self._cols["text_at"][row]), int(self._cols["text_len"][row])
        return self._text[start : start + n].decode("utf-8", "surrogatepass")

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
            self._query(row),
            int(r["history"]),
            None if expires == np.inf else expires,
            int(r["size"]),
            int(r["stamp"]),
        )
