"""Helpers shared by the tier tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiergate.tiers import StoreConfig, TieredStore


class FakeClock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def config(tmp: Path | None = None, **kw: Any) -> StoreConfig:
    """A StoreConfig for tests: no GPU tier unless asked, no sweep thread, disk under `tmp` with
    every object in a file of its own (test_inline.py covers objects kept in the manifest)."""
    base: dict[str, Any] = {"gpu": {"enabled": False}, "sweep_interval_s": 0}
    if tmp is not None:
        base["disk"] = {"path": str(tmp), "fsync": False, "inline_max_bytes": 0}
    else:
        base["disk"] = {"enabled": False}
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return StoreConfig.model_validate(base)


def check_invariants(store: TieredStore) -> None:
    """Budgets hold, and each tier's accounting equals the objects it holds."""
    with store._lock:
        sums: dict[str, int] = {}
        for e in store._entries.values():
            assert e.local, "an entry with no local copy is left in the index"
            if e.mem is not None:
                sums[e.mem] = sums.get(e.mem, 0) + e.meta.size
            if e.disk_id is not None:
                sums["disk"] = sums.get("disk", 0) + e.disk_bytes
            assert e.moving is None, "a move is still in flight after the call returned"
        for name, st in store._tiers.items():
            assert st.used <= st.budget, f"{name}: {st.used} bytes used > budget {st.budget}"
            assert st.used == sums.get(name, 0), f"{name}: accounted {st.used} != held {sums.get(name, 0)}"
            assert len(st.policy) == sum(
                1 for e in store._entries.values() if e.mem == name or (name == "disk" and e.disk_id is not None)
            )
