"""Per-tier, per-namespace counters and gauges of the store."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, fields

COUNTERS = (
    "hits",
    "misses",
    "evictions",
    "promotions",
    "demotions",
    "expirations",
    "errors",
    "read_bytes",
    "read_seconds",
    "write_bytes",
    "write_seconds",
)
GAUGES = ("objects", "bytes")


@dataclass(slots=True)
class TierStats:
    """Counters of one (tier, namespace) pair; `objects` and `bytes` are current values."""

    objects: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    promotions: int = 0
    demotions: int = 0
    expirations: int = 0
    errors: int = 0
    read_bytes: int = 0
    read_seconds: float = 0.0
    write_bytes: int = 0
    write_seconds: float = 0.0

    def add(self, other: TierStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class StatsBook:
    """Thread-safe table of `TierStats` keyed by (tier, namespace)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: defaultdict[tuple[str, str], TierStats] = defaultdict(TierStats)

    def add(self, tier: str, namespace: str, **deltas: float) -> None:
        with self._lock:
            s = self._table[(tier, namespace)]
            for name, d in deltas.items():
                setattr(s, name, getattr(s, name) + d)

    def count_lookup(self, namespace: str, missed: tuple[str, ...], hit: str | None = None) -> None:
        """One lookup: a miss in each tier of `missed`, then a hit in `hit` if found (a get's hot path)."""
        with self._lock:
            for t in missed:
                self._table[(t, namespace)].misses += 1
            if hit is not None:
                self._table[(hit, namespace)].hits += 1

    def snapshot(self) -> dict[tuple[str, str], TierStats]:
        with self._lock:
            return {k: TierStats(**v.as_dict()) for k, v in self._table.items()}
