"""Eviction policies: small interchangeable classes, one instance per tier.

A policy only orders keys; the store owns sizes, budgets and pins. `pop_victim(skip)` removes
and returns the key to evict next, passing over keys for which `skip(key)` is true (pinned or
in-flight objects), which stay tracked.

- `LRUPolicy`: least recently inserted or hit first.
- `GDSFPolicy`: Greedy-Dual-Size-Frequency (Cherkasova 1998). Each object has priority
  `H = L + frequency * cost / size`, where `L` is the tier's clock: the priority of the last
  evicted object. The lowest `H` is evicted first; raising `L` on every eviction ages objects
  that are no longer hit, so a once-popular object cannot stay forever.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

from tiergate.tiers.base import ObjectMeta

Key = Hashable


class Policy(Protocol):
    name: str

    def insert(self, key: Key, meta: ObjectMeta) -> None: ...
    def load(self, items: list[tuple[Key, ObjectMeta]]) -> None: ...
    def touch(self, key: Key, meta: ObjectMeta) -> None: ...
    def remove(self, key: Key) -> None: ...
    def pop_victim(self, skip: Callable[[Key], bool] = ...) -> Key | None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...


def _never(_key: Key) -> bool:
    return False


class LRUPolicy:
    """Least recently used first."""

    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[Key, None] = OrderedDict()

    def insert(self, key: Key, meta: ObjectMeta) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def load(self, items: list[tuple[Key, ObjectMeta]]) -> None:
        """Bulk insert into an empty policy, oldest first (reopening a store)."""
        self._order.update((k, None) for k, _ in items)

    def touch(self, key: Key, meta: ObjectMeta) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def remove(self, key: Key) -> None:
        self._order.pop(key, None)

    def pop_victim(self, skip: Callable[[Key], bool] = _never) -> Key | None:
        for key in self._order:
            if not skip(key):
                del self._order[key]
                return key
        return None

    def order(self) -> list[Key]:
        """Keys in eviction order (first is evicted first)."""
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order


class GDSFPolicy:
    """Greedy-Dual-Size-Frequency: evicts the lowest `clock + hits * cost / size` first."""

    name = "gdsf"

    def __init__(self) -> None:
        self.clock = 0.0
        self._prio: dict[Key, tuple[float, int]] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = itertools.count()

    def priority(self, meta: ObjectMeta) -> float:
        return self.clock + (meta.hits + 1) * max(meta.cost, 0.0) / max(meta.size, 1)

    def _push(self, key: Key, meta: ObjectMeta) -> None:
        entry = (self.priority(meta), next(self._seq))
        self._prio[key] = entry
        heapq.heappush(self._heap, (entry[0], entry[1], key))
        if len(self._heap) > 2 * len(self._prio) + 64:
            self._heap = [(p, s, k) for k, (p, s) in self._prio.items()]
            heapq.heapify(self._heap)

    def insert(self, key: Key, meta: ObjectMeta) -> None:
        self._push(key, meta)

    def load(self, items: list[tuple[Key, ObjectMeta]]) -> None:
        """Bulk insert into an empty policy (reopening a store): one heapify instead of n pushes."""
        clock, prio = self.clock, self._prio
        for seq, (k, m) in enumerate(items, start=next(self._seq)):
            cost, size = m.cost, m.size  # the same as priority(), inlined: this runs once per stored object
            prio[k] = (clock + (m.hits + 1) * (cost if cost > 0.0 else 0.0) / (size if size > 1 else 1), seq)
        self._seq = itertools.count(next(self._seq) + len(items))
        self._heap = [(p, s, k) for k, (p, s) in prio.items()]
        heapq.heapify(self._heap)

    def touch(self, key: Key, meta: ObjectMeta) -> None:
        if key in self._prio:
            self._push(key, meta)

    def remove(self, key: Key) -> None:
        self._prio.pop(key, None)

    def pop_victim(self, skip: Callable[[Key], bool] = _never) -> Key | None:
        skipped: list[tuple[float, int, Key]] = []
        victim = None
        while self._heap:
            item = heapq.heappop(self._heap)
            prio, seq, key = item
            if self._prio.get(key) != (prio, seq):
                continue  # stale heap entry
            if skip(key):
                skipped.append(item)
                continue
            del self._prio[key]
            self.clock = max(self.clock, prio)
            victim = key
            break
        for item in skipped:
            heapq.heappush(self._heap, item)
        return victim

    def order(self) -> list[Key]:
        return [k for k, _ in sorted(self._prio.items(), key=lambda kv: kv[1])]

    def __len__(self) -> int:
        return len(self._prio)

    def __contains__(self, key: object) -> bool:
        return key in self._prio


POLICIES: dict[str, type[LRUPolicy] | type[GDSFPolicy]] = {"lru": LRUPolicy, "gdsf": GDSFPolicy}


def make_policy(name: str) -> LRUPolicy | GDSFPolicy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; choose one of {sorted(POLICIES)}") from None
