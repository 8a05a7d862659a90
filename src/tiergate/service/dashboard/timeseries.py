"""A bounded in-memory time series: one timestamp column and one column per named number.

Columns are aligned (None where a number was absent at that time); the oldest samples fall off
at `points`. Saved as JSON with an atomic rename, so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)
Point = dict[str, float | None]


class Series:
    def __init__(self, points: int, max_keys: int = 4000) -> None:
        self.points = points
        self.max_keys = max_keys
        self.t: deque[float] = deque(maxlen=points)
        self.columns: dict[str, deque[float | None]] = {}

    def __len__(self) -> int:
        return len(self.t)

    def append(self, t: float, point: Point) -> None:
        for key in point:
            if key not in self.columns and len(self.columns) < self.max_keys:
                self.columns[key] = deque([None] * len(self.t), maxlen=self.points)
        self.t.append(t)
        for key, column in self.columns.items():
            column.append(point.get(key))

    def prune(self) -> None:
        """Forget columns with nothing left in the window (a tenant or backend that went away)."""
        for key in [k for k, c in self.columns.items() if all(v is None for v in c)]:
            del self.columns[key]

    def to_dict(self, since: float | None = None, prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
        start = 0
        if since is not None:
            start = next((i for i, t in enumerate(self.t) if t > since), len(self.t))
        keep = [k for k in self.columns if not prefixes or k.startswith(prefixes)]
        return {"t": list(self.t)[start:], "series": {k: list(self.columns[k])[start:] for k in keep}}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = orjson.dumps({"version": 1, **self.to_dict()})
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, points: int, max_keys: int = 4000) -> Series:
        """The saved series (its newest `points`), or an empty one when the file is absent or unreadable."""
        series = cls(points, max_keys)
        if not path.is_file():
            return series
        try:
            data = orjson.loads(path.read_bytes())
            times = [float(t) for t in data["t"]]
            columns = {str(k): list(v) for k, v in data["series"].items()}
            if any(len(c) != len(times) for c in columns.values()):
                raise ValueError("columns and timestamps differ in length")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("dashboard series at %s not restored: %s", path, exc)
            return series
        for i, t in enumerate(times[-points:], start=max(0, len(times) - points)):
            series.append(t, {k: _num(c[i]) for k, c in columns.items()})
        return series


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
