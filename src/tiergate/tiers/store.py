"""TieredStore: one keyed object store over GPU memory, host RAM, local disk and Redis.

Placement
    A put goes to the fastest memory tier that can hold the object (the GPU tier takes only
    torch tensors), evicting that tier's victims by policy to make room. Victims move down
    (gpu → host → disk); where no lower tier has room they are dropped. With
    `disk.write_through` (default) every put is also written to disk before it returns, so
    the disk holds a durable copy of every object that fits its budget and demoting an object
    to disk costs nothing. Memory tiers are exclusive (an object is in at most one of them);
    the disk may hold a copy as well. Redis is written through on put (shared by replicas)
    and read after a local miss.
Hits
    A hit in a slower tier promotes the object into memory (the GPU tier when the caller asks
    for a CUDA tensor, else host). Pinned objects (`pin`/`unpin`, counted) are never evicted,
    demoted or expired. TTLs expire lazily on access and by a periodic sweep.
Concurrency
    One lock guards the index, budgets and policies; file and Redis I/O and large copies run
    outside it. An object being moved between tiers keeps serving reads from its old copy;
    a move whose object was replaced or deleted meanwhile is rolled back. Each tier's budget
    counts committed objects plus reservations for objects in flight, so it is never exceeded.
Values
    Memory tiers keep native objects and `get` returns them without copying: treat returned
    tensors and arrays as read-only (numpy arrays are marked so). `as_` and `device` convert.
"""

from __future__ import annotations

import gc
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from tiergate.tiers import codec
from tiergate.tiers.base import (
    MEMORY_TIERS,
    Kind,
    ObjectMeta,
    TierName,
    check_key,
    check_namespace,
)
from tiergate.tiers.config import StoreConfig
from tiergate.tiers.disk import DiskTier, Record
from tiergate.tiers.errors import CorruptObjectError, StorageError, TierFullError, TierUnavailableError
from tiergate.tiers.gpu import GpuTier
from tiergate.tiers.host import HostTier
from tiergate.tiers.policies import make_policy
from tiergate.tiers.redis_tier import RedisTier
from tiergate.tiers.stats import StatsBook, TierStats
from tiergate.tiers.values import Value, convert, dtype_name, kind_of, nbytes, shape_of

log = logging.getLogger(__name__)

FullKey = tuple[str, str]
GPU, HOST, DISK, REDIS = TierName.GPU, TierName.HOST, TierName.DISK, TierName.REDIS


_MIN_EXPIRY_LIMIT = 4096  # expiry-heap items kept before the first rebuild
_DISK_READERS = 4  # parallel object reads in get_many


@dataclass(slots=True, eq=False)
class _Entry:
    meta: ObjectMeta
    gen: int
    mem: TierName | None = None  # memory tier holding `value`
    value: Value | None = None  # native value while in memory or moving out of it
    moving: TierName | None = None  # destination of an in-flight move (value still served)
    moving_from: TierName | None = None
    disk_id: int | None = None  # committed disk version
    disk_bytes: int = 0

    @property
    def local(self) -> bool:
        return self.value is not None or self.disk_id is not None


@dataclass(slots=True)
class _TierState:
    name: TierName
    budget: int
    policy: Any
    used: int = 0  # committed + reserved bytes


@dataclass(slots=True)
class _Move:
    entry: _Entry
    gen: int
    src: TierName
    dst: TierName
    reserved: int


@dataclass(slots=True)
class _Work:
    """Slow follow-ups collected under the lock and run after releasing it."""

    moves: list[_Move] = field(default_factory=list)
    unlinks: list[tuple[FullKey, int]] = field(default_factory=list)
    sync: bool = False
    redis_deletes: list[str] = field(default_factory=list)


class TieredStore:
    """Keyed objects (bytes, numpy arrays, torch tensors) over gpu, host, disk and redis tiers.

    Every call names a namespace; objects of one namespace are invisible to every other.
    Thread-safe. Use as a context manager or call `close()`.
    """

    def __init__(self, config: StoreConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.config = cfg = config or StoreConfig()
        self._clock = clock
        self._lock = threading.RLock()
        self._entries: dict[FullKey, _Entry] = {}
        self._gen = 0
        self._expiry: list[tuple[float, int, FullKey]] = []
        self._expiry_limit = _MIN_EXPIRY_LIMIT  # rebuild the heap when it grows past this
        self.stats_book = StatsBook()
        self._tiers: dict[TierName, _TierState] = {}
        self.gpu: GpuTier | None = None
        self.host: HostTier | None = None
        self.disk: DiskTier | None = None
        self.redis: RedisTier | None = None
        if cfg.gpu.enabled and GpuTier.available() and cfg.gpu.budget_bytes > 0:
            self.gpu = GpuTier(cfg.gpu.budget_bytes, device=cfg.gpu.device)
            self._tiers[GPU] = _TierState(GPU, self.gpu.budget_bytes, make_policy(cfg.policy))
        if cfg.host.enabled and cfg.host.budget_bytes > 0:
            self.host = HostTier(cfg.host.budget_bytes, pin_memory=cfg.host.pin_memory)
            self._tiers[HOST] = _TierState(HOST, self.host.budget_bytes, make_policy(cfg.policy))
        self._pin_memory = self.host.pin_memory if self.host else torch.cuda.is_available()
        if cfg.disk.enabled and cfg.disk.path is not None and cfg.disk.budget_bytes > 0:
            self.disk = DiskTier(cfg.disk.path, cfg.disk.budget_bytes, fsync=cfg.disk.fsync,
                                 inline_max=cfg.disk.inline_max_bytes)
            self._tiers[DISK] = _TierState(DISK, self.disk.budget_bytes, make_policy(cfg.policy))
        elif cfg.disk.enabled and cfg.disk.path is None:
            log.info("disk tier disabled: disk.path is not set")
        if cfg.redis.enabled:
            self.redis = RedisTier(cfg.redis)
        # the faster tiers a hit in each tier missed in (counted as their misses)
        order = list(self._tiers)
        self._above = {t: tuple(order[:i]) for i, t in enumerate([*order, REDIS])}
        self.open_seconds = 0.0
        if self.disk is not None:
            self._load_disk()
        self._executor = ThreadPoolExecutor(cfg.prefetch_workers, thread_name_prefix="tiergate-prefetch")
        self._readers = ThreadPoolExecutor(_DISK_READERS, thread_name_prefix="tiergate-disk-read")
        self._stop = threading.Event()
        self._closed = False
        self._sweeper: threading.Thread | None = None
        if cfg.sweep_interval_s > 0:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="tiergate-ttl-sweep", daemon=True)
            self._sweeper.start()

    # ---- lifecycle ---------------------------------------------------------------------------

    def _load_disk(self) -> None:
        assert self.disk is not None
        t0 = time.perf_counter()
        # Reopening allocates a few objects per stored object; with the cyclic collector on, it
        # rescans the growing heap again and again (about 40% of a 100k-object reopen).
        paused = gc.isenabled()
        gc.disable()
        try:
            self._load_records(self.disk.open())
        finally:
            if paused:
                gc.enable()
        self.open_seconds = time.perf_counter() - t0
        self.disk.start_scrub()
        log.info("disk tier %s: reopened %d objects in %.3f s", self.disk.path, self._gen, self.open_seconds)

    def _load_records(self, records: list[Record]) -> None:
        st = self._tiers[DISK]
        per_ns: dict[str, list[int]] = {}
        entries, expiry = self._entries, self._expiry
        order: list[tuple[FullKey, ObjectMeta]] = []
        used = 0
        kinds = {0: Kind.BYTES, 1: Kind.NUMPY, 2: Kind.TORCH}
        for gen, (ns, key, size, kind, dtype, shape, cost, created, expires, fid, fsize) in enumerate(records, start=1):
            meta = ObjectMeta(ns, key, size, kinds[kind], dtype, shape, cost, created, created, expires, 0, 0, DISK)
            fk = (ns, key)
            entries[fk] = _Entry(meta, gen, None, None, None, None, fid, fsize)  # positional: 100k+ of these
            order.append((fk, meta))
            used += fsize
            c = per_ns.get(ns)
            if c is None:
                c = per_ns[ns] = [0, 0]
            c[0] += 1
            c[1] += fsize
            if expires is not None:
                expiry.append((expires, gen, fk))
        st.policy.load(order)
        st.used = used
        heapq.heapify(expiry)
        self._gen = len(records)
        for ns, (n, b) in per_ns.items():
            self.stats_book.add(DISK, ns, objects=n, bytes=b)
        if st.used > st.budget:  # the budget was lowered since the last run
            work = _Work()
            with self._lock:
                while st.used > st.budget:
                    fk = st.policy.pop_victim(self._skip)
                    if fk is None:
                        break
                    self._evict(DISK, self._entries[fk], work)
            self._finish(work)

    def close(self) -> None:
        """Stop background threads and close the tiers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            if self.disk is not None:
                self.disk.close()
            if self.redis is not None:
                self.redis.close()

    def __enter__(self) -> TieredStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers -------------------------------------------------------------------------

    def _fk(self, namespace: str, key: str) -> FullKey:
        return (check_namespace(namespace), check_key(key))

    def _skip(self, fk: FullKey) -> bool:
        e = self._entries.get(fk)
        return e is None or e.meta.pins > 0

    def _next_lower(self, tier: TierName, value: Value | None) -> TierName | None:
        if tier is GPU and HOST in self._tiers:
            return HOST
        if tier in MEMORY_TIERS and DISK in self._tiers:
            return DISK
        return None

    def _disk_bound(self, meta: ObjectMeta) -> int:
        """Upper bound of an object's file size (header + payload), for disk reservations."""
        blocks = -(-meta.size // codec.BLOCK_SIZE)
        return (
            meta.size
            + 512
            + 6 * len(meta.key.encode("utf-8", "surrogatepass"))
            + 2 * len(meta.namespace)
            + 22 * len(meta.shape)
            + 21 * blocks  # a u64 checksum in decimal, and a comma
            + len(meta.dtype)
        )

    def _fits(self, tier: TierName, size: int) -> bool:
        st = self._tiers.get(tier)
        return st is not None and size <= st.budget

    # ---- budget and eviction (lock held) --------------------------------------------------

    def _make_room(self, tier: TierName, size: int, work: _Work) -> bool:
        """Evict from `tier` until `size` more bytes fit, then reserve them."""
        st = self._tiers[tier]
        if size > st.budget:
            return False
        while st.used + size > st.budget:
            fk = st.policy.pop_victim(self._skip)
            if fk is None:
                return False
            self._evict(tier, self._entries[fk], work)
        st.used += size
        return True

    def _evict(self, tier: TierName, e: _Entry, work: _Work) -> None:
        """Move `e` out of `tier` under pressure (its policy entry is already removed)."""
        st, meta, ns = self._tiers[tier], e.meta, e.meta.namespace
        if tier is DISK:
            st.used -= e.disk_bytes
            self._disk_forget(e, work)
            if e.value is None:
                self._drop(e)
                self.stats_book.add(DISK, ns, evictions=1)
            else:  # still in memory: only the disk copy goes
                self.stats_book.add(DISK, ns, evictions=1)
            return
        st.used -= meta.size
        self.stats_book.add(tier, ns, objects=-1, bytes=-meta.size)
        e.mem = None
        dst = self._next_lower(tier, e.value)
        if dst is HOST:
            if self._make_room(HOST, meta.size, work):
                e.moving, e.moving_from = HOST, tier
                work.moves.append(_Move(e, e.gen, tier, HOST, meta.size))
                self.stats_book.add(tier, ns, demotions=1)
                return
            dst = DISK if DISK in self._tiers else None
        if dst is DISK:
            if e.disk_id is not None:
                e.value = None
                meta.tier = DISK
                self.stats_book.add(tier, ns, demotions=1)
                return
            bound = self._disk_bound(meta)
            if self._make_room(DISK, bound, work):
                e.moving, e.moving_from = DISK, tier
                work.moves.append(_Move(e, e.gen, tier, DISK, bound))
                self.stats_book.add(tier, ns, demotions=1)
                return
        e.value = None
        self.stats_book.add(tier, ns, evictions=1)
        if e.disk_id is None:
            self._drop(e)
        else:
            meta.tier = DISK

    def _drop(self, e: _Entry) -> None:
        fk = (e.meta.namespace, e.meta.key)
        if self._entries.get(fk) is e:
            del self._entries[fk]
        e.meta.tier = None

    def _disk_forget(self, e: _Entry, work: _Work) -> None:
        """Remove `e`'s disk copy from the manifest (the file is unlinked after the lock)."""
        assert self.disk is not None
        fk = (e.meta.namespace, e.meta.key)
        try:
            fid = self.disk.remove(fk)
        except StorageError as err:  # manifest append failed (disk full)
            log.error("%s", err)
            self.stats_book.add(DISK, e.meta.namespace, errors=1)
            # Remove the file anyway: a record whose file is gone reads as a miss after a restart,
            # while a kept file would bring a deleted object back.
            fid = e.disk_id
        if fid is not None:
            work.unlinks.append((fk, fid))
            work.sync = True
        self.stats_book.add(DISK, e.meta.namespace, objects=-1, bytes=-e.disk_bytes)
        e.disk_id, e.disk_bytes = None, 0

    def _remove(self, e: _Entry, work: _Work, *, superseded: bool = False) -> None:
        """Remove an entry from every local tier (delete, expiry, replacement, corruption).
        `superseded`: a new version's manifest record already replaced its disk copy."""
        ns = e.meta.namespace
        fk = (ns, e.meta.key)
        if e.mem is not None:
            st = self._tiers[e.mem]
            st.policy.remove(fk)
            st.used -= e.meta.size
            self.stats_book.add(e.mem, ns, objects=-1, bytes=-e.meta.size)
            e.mem = None
        e.value = None  # an in-flight move sees the generation change and rolls back
        if e.disk_id is not None:
            st = self._tiers[DISK]
            st.policy.remove(fk)
            st.used -= e.disk_bytes
            if superseded:
                work.unlinks.append((fk, e.disk_id))
                self.stats_book.add(DISK, ns, objects=-1, bytes=-e.disk_bytes)
                e.disk_id, e.disk_bytes = None, 0
            else:
                self._disk_forget(e, work)
        self._drop(e)

    def _admit_memory(self, e: _Entry, tier: TierName, value: Value, work: _Work) -> bool:
        """Place a prepared native value into a memory tier (lock held)."""
        e.meta.pins += 1  # the cascade of demotions must not pick this object's own disk copy
        try:
            if not self._make_room(tier, e.meta.size, work):
                return False
        finally:
            e.meta.pins -= 1
        st = self._tiers[tier]
        e.mem, e.value = tier, value
        e.meta.tier = tier
        st.policy.insert((e.meta.namespace, e.meta.key), e.meta)
        self.stats_book.add(tier, e.meta.namespace, objects=1, bytes=e.meta.size)
        return True

    def _leave_memory(self, e: _Entry) -> None:
        tier = e.mem
        assert tier is not None
        st = self._tiers[tier]
        st.policy.remove((e.meta.namespace, e.meta.key))
        st.used -= e.meta.size
        self.stats_book.add(tier, e.meta.namespace, objects=-1, bytes=-e.meta.size)
        e.mem, e.value = None, None

    def _commit_disk(self, e: _Entry, file_id: int, file_size: int, reserved: int, work: _Work) -> None:
        assert self.disk is not None
        old = self.disk.commit(e.meta, file_id, file_size)
        if old is not None and old != file_id:
            work.unlinks.append(((e.meta.namespace, e.meta.key), old))
        self._register_disk(e, file_id, file_size, reserved, work)

    def _register_disk(self, e: _Entry, file_id: int, file_size: int, reserved: int, work: _Work) -> None:
        st = self._tiers[DISK]
        st.used += file_size - reserved
        e.disk_id, e.disk_bytes = file_id, file_size
        e.meta.tier = e.mem or DISK
        st.policy.insert((e.meta.namespace, e.meta.key), e.meta)
        self.stats_book.add(DISK, e.meta.namespace, objects=1, bytes=file_size)
        work.sync = True

    # ---- slow follow-ups (lock not held) ----------------------------------------------------

    def _finish(self, work: _Work) -> None:
        while work.moves:
            moves, work.moves = work.moves, []
            for mv in moves:
                self._run_move(mv, work)
        if work.sync and self.disk is not None:
            try:
                self.disk.sync()
            except OSError as e:
                log.error("disk tier %s: manifest fsync failed: %s", self.disk.path, e)
        if self.disk is not None:
            for fk, fid in work.unlinks:
                self.disk.unlink(fk, fid)
        work.unlinks.clear()
        if work.redis_deletes and self.redis is not None:
            try:
                self.redis.delete(work.redis_deletes)
            except TierUnavailableError:
                self.stats_book.add(REDIS, "", errors=1)
            work.redis_deletes.clear()

    def _current(self, mv: _Move) -> bool:
        e = mv.entry
        fk = (e.meta.namespace, e.meta.key)
        return self._entries.get(fk) is e and e.gen == mv.gen and e.moving is mv.dst and e.value is not None

    def _run_move(self, mv: _Move, work: _Work) -> None:
        e, ns = mv.entry, mv.entry.meta.namespace
        value = e.value
        if value is None:
            with self._lock:
                self._tiers[mv.dst].used -= mv.reserved
            return
        if mv.dst is HOST:
            try:
                assert self.gpu is not None
                host_value = (
                    self.gpu.to_host(value, pin_memory=self._pin_memory) if isinstance(value, torch.Tensor) else value
                )
            except Exception:
                log.exception("demotion gpu->host failed")
                host_value = None
            with self._lock:
                st = self._tiers[HOST]
                if host_value is not None and self._current(mv):
                    st.policy.insert((ns, e.meta.key), e.meta)
                    e.mem, e.value, e.moving, e.moving_from = HOST, host_value, None, None
                    e.meta.tier = HOST
                    self.stats_book.add(HOST, ns, objects=1, bytes=e.meta.size)
                else:
                    st.used -= mv.reserved
                    self._abort_move(mv)
            return
        # memory -> disk
        assert self.disk is not None
        fk = (ns, e.meta.key)
        try:
            t0 = time.perf_counter()
            head, payload = codec.encode(value, e.meta)
            file_id, size = self.disk.write(fk, head, payload)
            self.stats_book.add(DISK, ns, write_bytes=size, write_seconds=time.perf_counter() - t0)
        except StorageError as err:
            log.error("demotion to disk dropped %s/%s: %s", ns, e.meta.key, err)
            self.stats_book.add(DISK, ns, errors=1)
            with self._lock:
                self._tiers[DISK].used -= mv.reserved
                self._abort_move(mv)
            return
        with self._lock:
            if self._current(mv):
                try:
                    self._commit_disk(e, file_id, size, mv.reserved, work)
                except StorageError as err:
                    log.error("%s", err)
                    self._tiers[DISK].used -= mv.reserved
                    self.stats_book.add(DISK, ns, errors=1)
                    self._abort_move(mv)
                    work.unlinks.append((fk, file_id))
                    return
                e.value, e.moving, e.moving_from = None, None, None
                e.meta.tier = DISK
            else:
                self._tiers[DISK].used -= mv.reserved
                work.unlinks.append((fk, file_id))

    def _abort_move(self, mv: _Move) -> None:
        """A move could not complete: if the object is still current, it is dropped locally."""
        e = mv.entry
        if self._current(mv):
            e.moving = e.moving_from = None
            e.value = None
            self.stats_book.add(mv.src, e.meta.namespace, evictions=1)
            if e.disk_id is None:
                self._drop(e)

    # ---- put -------------------------------------------------------------------------------

    def put(
        self,
        namespace: str,
        key: str,
        value: Value,
        *,
        ttl: float | None = None,
        cost: float = 1.0,
        tier: TierName | str | None = None,
    ) -> None:
        """Store `value` under (namespace, key), replacing any previous version.

        `ttl`: seconds to live (default `config.default_ttl_s`); `cost`: relative cost to
        recompute, used by GDSF; `tier`: start in this tier instead of the fastest with room.
        With disk write-through the object is durable when put returns. Raises `TierFullError`
        if no tier can hold it (the message names the tier and path when the disk is full),
        `TypeError`/`ValueError` for bad input.
        """
        blob = self._put_local(namespace, key, value, ttl=ttl, cost=cost, tier=tier)
        if blob is not None:
            self._redis_write([blob])

    def put_many(
        self,
        namespace: str,
        items: Mapping[str, Value] | Iterable[tuple[str, Value]],
        *,
        ttl: float | None = None,
        cost: float = 1.0,
        tier: TierName | str | None = None,
    ) -> None:
        """Put several objects; Redis receives them in one pipelined round trip."""
        pairs = items.items() if isinstance(items, Mapping) else items
        blobs = [self._put_local(namespace, k, v, ttl=ttl, cost=cost, tier=tier) for k, v in pairs]
        self._redis_write([b for b in blobs if b is not None])

    def _meta_for(self, fk: FullKey, value: Value, ttl: float | None, cost: float) -> ObjectMeta:
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost}")
        ttl = ttl if ttl is not None else self.config.default_ttl_s
        now = self._clock()
        return ObjectMeta(
            namespace=fk[0],
            key=fk[1],
            size=nbytes(value),
            kind=kind_of(value),
            dtype=dtype_name(value),
            shape=shape_of(value),
            cost=float(cost),
            created_at=now,
            accessed_at=now,
            expires_at=None if ttl is None else now + ttl,
        )

    def _memory_target(self, value: Value, size: int, tier: TierName | None) -> TierName | None:
        order = [t for t in MEMORY_TIERS if t in self._tiers]
        if tier is not None:
            if tier is DISK or tier is REDIS:
                return None
            order = order[order.index(tier) :] if tier in order else [t for t in order if t is HOST]
        for t in order:
            if t is GPU and not isinstance(value, torch.Tensor):
                continue
            if self._fits(t, size):
                return t
        return None

    def _prepare(self, tier: TierName, value: Value) -> Value:
        if tier is GPU:
            assert self.gpu is not None
            return self.gpu.prepare(value)
        assert self.host is not None
        return self.host.prepare(value)

    def _put_local(
        self,
        namespace: str,
        key: str,
        value: Value,
        *,
        ttl: float | None,
        cost: float,
        tier: TierName | str | None,
    ) -> tuple[str, bytes, int | None] | None:
        fk = self._fk(namespace, key)
        tier = TierName(tier) if tier is not None else None
        meta = self._meta_for(fk, value, ttl, cost)
        size = meta.size
        mem_tier = self._memory_target(value, size, tier)
        native = self._prepare(mem_tier, value) if mem_tier is not None else None
        # serialise from whichever copy is in host memory (a GPU copy would cost a device round trip)
        src = value if native is None or _on_gpu(native) else native
        want_disk = (
            DISK in self._tiers
            and (self.config.disk.write_through or mem_tier is None or tier is DISK)
            and tier is not REDIS
        )
        want_redis = (
            self.redis is not None and self.config.redis.write_through and (size <= self.config.redis.max_object_bytes)
        )
        head = payload = None
        if want_disk or want_redis:
            head, payload = codec.encode(src, meta)
        work = _Work()
        disk_written: tuple[int, int, int] | None = None
        if want_disk:
            assert head is not None and payload is not None
            disk_written = self._write_disk(fk, meta, head, payload, work)
        with self._lock:
            old_id = None
            if disk_written is not None:
                file_id, fsize, reserved = disk_written
                try:  # commit first: if the manifest cannot take it, the old version stays intact
                    old_id = self.disk.commit(meta, file_id, fsize)  # type: ignore[union-attr]
                except StorageError:
                    self._tiers[DISK].used -= reserved
                    self.stats_book.add(DISK, fk[0], errors=1)
                    work.unlinks.append((fk, file_id))
                    self._unlink_now(work)
                    raise
            old = self._entries.get(fk)
            if old is not None:
                meta.pins = old.meta.pins  # pins belong to the key, not to one version
                self._remove(old, work, superseded=disk_written is not None)
            if old_id is not None and old_id != (disk_written or (None,))[0]:
                work.unlinks.append((fk, old_id))
            self._gen += 1
            e = _Entry(meta, self._gen)
            self._entries[fk] = e
            if disk_written is not None:
                self._register_disk(e, file_id, fsize, reserved, work)
            placed = False
            if native is not None and mem_tier is not None:
                placed = self._admit_memory(e, mem_tier, native, work)
                if not placed and mem_tier is GPU and HOST in self._tiers and self._fits(HOST, size):
                    placed = self._admit_memory(e, HOST, self._prepare(HOST, value), work)
            refused: TierFullError | None = None
            if not placed and e.disk_id is None:
                self._drop(e)
                if not want_redis:
                    refused = TierFullError(
                        f"no tier can hold {fk[0]}/{fk[1]} ({size} bytes): budgets are full of pinned "
                        "objects or smaller than the object",
                        tier=str(tier or (mem_tier or HOST)),
                    )
            elif meta.expires_at is not None:
                self._push_expiry(meta.expires_at, e.gen, fk)
        self._finish(work)
        if refused is not None:
            raise refused
        if want_redis and head is not None and payload is not None:
            return (self.redis.rkey(*fk), b"".join((head, payload)), self._ttl_ms(meta))  # type: ignore[union-attr]
        return None

    def _unlink_now(self, work: _Work) -> None:
        """Remove files collected in `work` (cheap; used on error paths with the lock held)."""
        if self.disk is not None:
            for fk, fid in work.unlinks:
                self.disk.unlink(fk, fid)
        work.unlinks.clear()

    def _write_disk(
        self, fk: FullKey, meta: ObjectMeta, head: bytes, payload: memoryview, work: _Work
    ) -> tuple[int, int, int] | None:
        """Reserve room and write a version file (not yet committed). Returns (id, size, reserved)
        or None when the object exceeds the disk budget. Raises TierFullError on a full device."""
        assert self.disk is not None
        need = len(head) + len(payload)
        for attempt in range(2):
            with self._lock:
                ok = self._make_room(DISK, need, work)
            if not ok:
                self._finish(work)
                return None
            t0 = time.perf_counter()
            try:
                file_id, fsize = self.disk.write(fk, head, payload)
            except StorageError as err:
                with self._lock:
                    self._tiers[DISK].used -= need
                    self.stats_book.add(DISK, fk[0], errors=1)
                    freed = 0
                    if isinstance(err, TierFullError) and attempt == 0:
                        # the device is smaller than the budget: give back some of our own space
                        st = self._tiers[DISK]
                        while freed < 2 * need:
                            vfk = st.policy.pop_victim(self._skip)
                            if vfk is None:
                                break
                            victim = self._entries[vfk]
                            freed += victim.disk_bytes
                            self._evict(DISK, victim, work)
                self._finish(work)
                if freed == 0:
                    raise
                log.warning("%s; freed %d bytes of the tier and retrying", err, freed)
                continue
            self.stats_book.add(DISK, fk[0], write_bytes=fsize, write_seconds=time.perf_counter() - t0)
            return file_id, fsize, need
        return None

    def _ttl_ms(self, meta: ObjectMeta) -> int | None:
        if meta.expires_at is None:
            return None
        return max(1, int((meta.expires_at - self._clock()) * 1000))

    def _redis_write(self, blobs: list[tuple[str, bytes, int | None]]) -> None:
        if not blobs or self.redis is None:
            return
        t0 = time.perf_counter()
        try:
            self.redis.set_many(blobs)
        except TierUnavailableError:
            self.stats_book.add(REDIS, "", errors=1)
            return
        ns = blobs[0][0][len(self.redis.prefix) :].split("|", 1)[0]
        self.stats_book.add(
            REDIS, ns, write_bytes=sum(len(b) for _, b, _ in blobs), write_seconds=time.perf_counter() - t0
        )

    # ---- get -------------------------------------------------------------------------------

    def get(
        self,
        namespace: str,
        key: str,
        default: Any = None,
        *,
        as_: Kind | str | None = None,
        device: str | torch.device | None = None,
    ) -> Any:
        """The object, or `default` on a miss.

        `as_`: 'bytes', 'numpy' or 'torch' (None: as stored); `device`: a torch device for the
        result (implies a tensor). A hit below the fastest tier promotes the object (into the
        GPU tier when `device` is CUDA). Values from memory tiers are shared: do not modify them.
        """
        fk = self._fk(namespace, key)
        found, value = self._get_local(fk, as_, device, promote_to=None)
        if found:
            return value
        if self.redis is None:
            self._count_miss(fk[0], redis=False)
            return default
        try:
            blob = self.redis.get(self.redis.rkey(*fk))
        except TierUnavailableError:
            self.stats_book.add(REDIS, fk[0], errors=1)
            blob = None
        out = self._from_redis(fk, blob, as_, device, None)
        return default if out is _MISS else out

    def peek(self, namespace: str, key: str) -> Any:
        """The object when host memory holds it, else None; never reads disk or Redis and never
        waits for the lock (None while another thread holds it): safe on an event loop. Counted
        as a hit like `get`; expiry and promotion are left to `get`."""
        fk = self._fk(namespace, key)
        if not self._lock.acquire(blocking=False):
            return None
        try:
            e = self._entries.get(fk)
            if e is None or e.value is None or e.mem is not HOST or e.meta.expired(self._clock()):
                return None
            e.meta.hits += 1
            e.meta.accessed_at = self._clock()
            self._tiers[HOST].policy.touch(fk, e.meta)
            self._count_hit(HOST, fk[0])
            return e.value
        finally:
            self._lock.release()

    def get_many(
        self,
        namespace: str,
        keys: Iterable[str],
        *,
        as_: Kind | str | None = None,
        device: str | torch.device | None = None,
    ) -> dict[str, Any]:
        """The objects found, by key (missing keys are absent). Redis is asked once for the rest."""
        out: dict[str, Any] = {}
        missing: list[FullKey] = []
        fks = [self._fk(namespace, k) for k in keys]
        # Objects on disk are read on reader threads, several at once: the device serves parallel
        # reads faster than one stream, and the page faults of fresh result buffers overlap the I/O
        # (4 MiB objects, cold: 1.0-1.5x a sequential read vs 0.5-0.7x one after the other).
        # Asking the kernel to read the batch ahead instead (POSIX_FADV_WILLNEED) was slower.
        reads = {fk: self._readers.submit(self._get_local, fk, as_, device, None)
                 for fk in self._on_disk(fks)} if len(fks) > 1 else {}
        for fk in fks:
            read = reads.get(fk)
            found, value = read.result() if read is not None else self._get_local(fk, as_, device, None)
            if found:
                out[fk[1]] = value
            else:
                missing.append(fk)
        if not missing:
            return out
        if self.redis is None:
            for fk in missing:
                self._count_miss(fk[0], redis=False)
            return out
        try:
            blobs = self.redis.mget([self.redis.rkey(*fk) for fk in missing])
        except TierUnavailableError:
            self.stats_book.add(REDIS, namespace, errors=1)
            blobs = [None] * len(missing)
        for fk, blob in zip(missing, blobs, strict=True):
            v = self._from_redis(fk, blob, as_, device, None)
            if v is not _MISS:
                out[fk[1]] = v
        return out

    def _on_disk(self, fks: list[FullKey]) -> list[FullKey]:
        """The keys whose objects are only on disk now (a hint: a read handles any change)."""
        if self.disk is None:
            return []
        with self._lock:
            return [fk for fk in fks if (e := self._entries.get(fk)) is not None and e.value is None
                    and e.disk_id is not None]

    def _count_miss(self, ns: str, *, redis: bool) -> None:
        self.stats_book.count_lookup(ns, self._above[REDIS] + ((REDIS,) if redis else ()))

    def _count_hit(self, tier: TierName, ns: str) -> None:
        self.stats_book.count_lookup(ns, self._above[tier], tier)

    def _expire_locked(self, e: _Entry, now: float, work: _Work) -> bool:
        if e.meta.pins == 0 and e.meta.expired(now):
            self.stats_book.add(e.meta.tier or HOST, e.meta.namespace, expirations=1)
            self._remove(e, work)
            return True
        return False

    def _promotion_target(self, value_kind: Kind, device: Any, promote_to: TierName | None) -> TierName | None:
        if promote_to is not None:
            return promote_to if promote_to in self._tiers else None
        if not self.config.promote_on_hit:
            return None
        if (
            device is not None
            and torch.device(device).type == "cuda"
            and GPU in self._tiers
            and (value_kind is Kind.TORCH)
        ):
            return GPU
        return HOST if HOST in self._tiers else None

    def _get_local(self, fk: FullKey, as_: Any, device: Any, promote_to: TierName | None) -> tuple[bool, Any]:
        now = self._clock()
        work = _Work()
        for _attempt in range(3):
            with self._lock:
                e = self._entries.get(fk)
                if e is not None and self._expire_locked(e, now, work):
                    e = None
                if e is None:
                    break
                meta = e.meta
                meta.hits += 1
                meta.accessed_at = now
                gen = e.gen
                value = e.value
                if value is not None:
                    tier = e.mem or e.moving_from or HOST
                    if e.mem is not None:
                        self._tiers[e.mem].policy.touch(fk, meta)
                    self._count_hit(tier, fk[0])
                    target = None
                    if e.mem is HOST and e.moving is None and GPU in self._tiers:
                        t = self._promotion_target(meta.kind, device, promote_to)
                        target = t if t is GPU else None
                else:
                    assert e.disk_id is not None
                    self._tiers[DISK].policy.touch(fk, meta)
                    disk_id, disk_bytes = e.disk_id, e.disk_bytes
                    meta_copy = replace(meta)
            if value is not None:
                out = convert(value, as_, device)
                if target is GPU:
                    self._promote(fk, gen, HOST, GPU, value, out)
                return True, out
            # disk read, outside the lock
            assert self.disk is not None
            t0 = time.perf_counter()
            try:
                alloc = self.host.alloc if (self.host is not None and self.host.pin_memory) else None
                value = self.disk.read(meta_copy, disk_id, disk_bytes, alloc)
            except FileNotFoundError:
                with self._lock:
                    cur = self._entries.get(fk)
                    if cur is not None and (cur.gen != gen or cur.disk_id != disk_id):
                        continue  # replaced or moved meanwhile: look again
                    if cur is not None:
                        log.warning("disk tier: object file of %s/%s is missing; removing it", *fk)
                        self.stats_book.add(DISK, fk[0], errors=1)
                        self._remove(cur, work)
                self._finish(work)
                break
            except (CorruptObjectError, OSError) as err:
                log.warning("disk tier: %s/%s is unreadable (%s); removing it", fk[0], fk[1], err)
                with self._lock:
                    self.stats_book.add(DISK, fk[0], errors=1)
                    cur = self._entries.get(fk)
                    if cur is not None and cur.gen == gen and cur.disk_id == disk_id:
                        if cur.value is None:
                            self._remove(cur, work)
                        else:
                            self._tiers[DISK].policy.remove(fk)
                            self._tiers[DISK].used -= cur.disk_bytes
                            self._disk_forget(cur, work)
                self._finish(work)
                break
            self.stats_book.add(DISK, fk[0], read_bytes=disk_bytes, read_seconds=time.perf_counter() - t0)
            self._count_hit(DISK, fk[0])
            out = convert(value, as_, device)
            target = self._promotion_target(meta_copy.kind, device, promote_to)
            if target is not None:
                self._promote(fk, gen, DISK, target, value, out)
            return True, out
        self._finish(work)  # an expired object's file
        return False, None

    def _promote(self, fk: FullKey, gen: int, src: TierName, dst: TierName, value: Value, out: Any) -> None:
        """Move a just-read object up into memory tier `dst` (skipped if it changed meanwhile)."""
        if dst is GPU:
            if isinstance(out, torch.Tensor) and out.device.type == "cuda" and out is not value:
                native = out
            elif isinstance(value, torch.Tensor):
                native = self._prepare(GPU, value)
            else:
                return
        else:
            native = value if src is DISK else self._prepare(HOST, value)
        work = _Work()
        with self._lock:
            e = self._entries.get(fk)
            if e is None or e.gen != gen or e.moving is not None:
                return
            if dst is HOST and e.mem is not None:
                return
            if src in MEMORY_TIERS and e.mem is not src:
                return
            old_mem = e.mem
            if old_mem is not None:
                self._leave_memory(e)
            if self._admit_memory(e, dst, native, work):
                self.stats_book.add(src, fk[0], promotions=1)
            elif old_mem is not None:
                self._admit_memory(e, old_mem, value, work) or self._drop_if_nowhere(e)
        self._finish(work)

    def _drop_if_nowhere(self, e: _Entry) -> bool:
        if not e.local:
            self._drop(e)
        return True

    def _from_redis(self, fk: FullKey, blob: bytes | None, as_: Any, device: Any, promote_to: TierName | None) -> Any:
        if blob is None:
            self._count_miss(fk[0], redis=True)
            return _MISS
        t0 = time.perf_counter()
        try:
            header, value = codec.loads(blob)
            if (header.namespace, header.key) != fk:
                raise CorruptObjectError("redis value belongs to another key")
        except CorruptObjectError as err:
            log.warning("redis tier: %s/%s is unreadable (%s); deleting it", fk[0], fk[1], err)
            self.stats_book.add(REDIS, fk[0], errors=1)
            try:
                assert self.redis is not None
                self.redis.delete([self.redis.rkey(*fk)])
            except TierUnavailableError:
                pass
            self._count_miss(fk[0], redis=True)
            return _MISS
        meta = header.meta()
        if meta.expired(self._clock()):
            self._count_miss(fk[0], redis=True)
            return _MISS
        self.stats_book.add(REDIS, fk[0], read_bytes=len(blob), read_seconds=time.perf_counter() - t0)
        self._count_hit(REDIS, fk[0])
        out = convert(value, as_, device)
        target = self._promotion_target(meta.kind, device, promote_to)
        if target is None and DISK in self._tiers and self.config.promote_on_hit:
            target = DISK
        if target is not None:
            self._admit_from_redis(fk, meta, value, out, target)
        return out

    def _admit_from_redis(self, fk: FullKey, meta: ObjectMeta, value: Value, out: Any, target: TierName) -> None:
        if target is GPU:
            native = out if isinstance(out, torch.Tensor) and out.device.type == "cuda" else self._prepare(GPU, value)
        elif target is HOST:
            native = (
                value if not isinstance(value, torch.Tensor) or not self._pin_memory else self._prepare(HOST, value)
            )
        else:
            native = None
        work = _Work()
        disk_written = None
        if target is DISK:
            head, payload = codec.encode(value, meta)
            try:
                disk_written = self._write_disk(fk, meta, head, payload, work)
            except StorageError as err:
                log.warning("%s", err)
                return
            if disk_written is None:
                return
        with self._lock:
            if fk in self._entries:  # a local put won meanwhile
                if disk_written is not None:
                    self._tiers[DISK].used -= disk_written[2]
                    work.unlinks.append((fk, disk_written[0]))
            else:
                self._gen += 1
                e = _Entry(meta, self._gen)
                self._entries[fk] = e
                if disk_written is not None:
                    try:
                        self._commit_disk(e, *disk_written, work)
                        meta.tier = DISK
                    except StorageError:
                        self._tiers[DISK].used -= disk_written[2]
                        work.unlinks.append((fk, disk_written[0]))
                elif native is not None:
                    self._admit_memory(e, target, native, work)
                if e.local:
                    self.stats_book.add(REDIS, fk[0], promotions=1)
                    if meta.expires_at is not None:
                        self._push_expiry(meta.expires_at, e.gen, fk)
                else:
                    self._drop(e)
        self._finish(work)

    # ---- other operations ---------------------------------------------------------------------

    def contains(self, namespace: str, key: str, *, local_only: bool = False) -> bool:
        """Whether the object exists (locally, or in Redis unless `local_only`). Counts no hit."""
        fk = self._fk(namespace, key)
        with self._lock:
            e = self._entries.get(fk)
            if e is not None and e.local and (e.meta.pins > 0 or not e.meta.expired(self._clock())):
                return True
        if local_only or self.redis is None:
            return False
        try:
            return self.redis.exists(self.redis.rkey(*fk))
        except TierUnavailableError:
            self.stats_book.add(REDIS, fk[0], errors=1)
            return False

    def delete(self, namespace: str, key: str) -> bool:
        """Remove the object from every tier, Redis included. True if it existed locally."""
        return self.delete_many(namespace, [key]) == 1

    def delete_many(self, namespace: str, keys: Iterable[str]) -> int:
        """Remove several objects from every tier, with one manifest fsync and one Redis round trip.
        Returns how many existed locally."""
        fks = [self._fk(namespace, k) for k in keys]
        work = _Work()
        found = 0
        with self._lock:
            for fk in fks:
                e = self._entries.get(fk)
                if e is not None:
                    self._remove(e, work)
                    found += 1
        if self.redis is not None:
            work.redis_deletes.extend(self.redis.rkey(*fk) for fk in fks)
        self._finish(work)
        return found

    def clear(self, namespace: str) -> int:
        """Remove every object of `namespace` (exactly this namespace, local and Redis)."""
        check_namespace(namespace)
        work = _Work()
        with self._lock:
            victims = [e for (ns, _), e in self._entries.items() if ns == namespace]
            for e in victims:
                self._remove(e, work)
        self._finish(work)
        if self.redis is not None:
            try:
                self.redis.delete_namespace(namespace)
            except TierUnavailableError:
                self.stats_book.add(REDIS, namespace, errors=1)
        return len(victims)

    def keys(self, namespace: str) -> list[str]:
        """Keys of `namespace` held locally (not those only in Redis)."""
        check_namespace(namespace)
        with self._lock:
            return [k for (ns, k), e in self._entries.items() if ns == namespace and e.local]

    def meta(self, namespace: str, key: str) -> ObjectMeta | None:
        """A snapshot of an object's metadata (`tier` = the fastest local tier holding it)."""
        fk = self._fk(namespace, key)
        with self._lock:
            e = self._entries.get(fk)
            if e is None or not e.local:
                return None
            m = replace(e.meta)
            m.tier = e.mem or e.moving_from or (DISK if e.disk_id is not None else None)
            return m

    def pin(self, namespace: str, key: str) -> bool:
        """Keep a local object where it is: never evicted, demoted or expired until unpinned.
        Pins are counted (each `pin` needs an `unpin`) and belong to the key: a new `put` of the
        key keeps them. Returns False if the object is not held locally."""
        fk = self._fk(namespace, key)
        with self._lock:
            e = self._entries.get(fk)
            if e is None or not e.local:
                return False
            e.meta.pins += 1
            return True

    def unpin(self, namespace: str, key: str) -> bool:
        fk = self._fk(namespace, key)
        with self._lock:
            e = self._entries.get(fk)
            if e is None or e.meta.pins == 0:
                return False
            e.meta.pins -= 1
            return True

    def prefetch(
        self,
        namespace: str,
        keys: Iterable[str],
        *,
        to: TierName | str = HOST,
    ) -> Future[list[str]]:
        """Bring objects into tier `to` ('gpu' or 'host') in the background.

        Returns a Future of the keys now held in `to` (or a faster tier); `await
        asyncio.wrap_future(f)` from async code. Objects already in a faster tier stay there."""
        to = TierName(to)
        if to not in MEMORY_TIERS:
            raise ValueError(f"prefetch target must be 'gpu' or 'host', not {to!r}")
        keys = list(keys)
        for k in keys:
            self._fk(namespace, k)
        return self._executor.submit(self._prefetch, namespace, keys, to)

    def _prefetch(self, namespace: str, keys: list[str], to: TierName) -> list[str]:
        target = to if to in self._tiers else (HOST if HOST in self._tiers else None)
        done: list[str] = []
        if target is None:
            return done
        rank = {GPU: 0, HOST: 1}
        for k in keys:
            fk = (namespace, k)
            m = self.meta(namespace, k)
            if m is not None and m.tier in rank and rank[m.tier] <= rank[target]:
                done.append(k)
                continue
            device = self.gpu.device if target is GPU and self.gpu is not None else None
            found, _ = self._get_local(fk, None, device, promote_to=target)
            if not found and self.redis is not None:
                try:
                    blob = self.redis.get(self.redis.rkey(*fk))
                except TierUnavailableError:
                    blob = None
                self._from_redis(fk, blob, None, device, target)
            m = self.meta(namespace, k)
            if m is not None and m.tier in rank and rank[m.tier] <= rank[target]:
                done.append(k)
        return done

    # ---- expiry --------------------------------------------------------------------------------

    def _push_expiry(self, expires_at: float, gen: int, fk: FullKey) -> None:
        """Lock held. Deleted and overwritten objects leave their items in the heap until their
        time comes (days, for cache entries), so a store with steady churn would grow it without
        bound: once it is twice the size it had after the last rebuild, keep only live items."""
        heapq.heappush(self._expiry, (expires_at, gen, fk))
        if len(self._expiry) <= self._expiry_limit:
            return
        live = []
        for item in self._expiry:
            e = self._entries.get(item[2])
            if e is not None and e.gen == item[1]:
                live.append(item)
        heapq.heapify(live)
        self._expiry = live
        self._expiry_limit = max(_MIN_EXPIRY_LIMIT, 2 * len(live))

    def sweep(self) -> int:
        """Remove expired objects now; returns how many. Pinned objects wait until unpinned."""
        now = self._clock()
        work = _Work()
        removed = 0
        deferred: list[tuple[float, int, FullKey]] = []
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                item = heapq.heappop(self._expiry)
                _, gen, fk = item
                e = self._entries.get(fk)
                if e is None or e.gen != gen:
                    continue
                if e.meta.pins > 0:
                    deferred.append(item)
                    continue
                self.stats_book.add(e.meta.tier or HOST, fk[0], expirations=1)
                self._remove(e, work)
                removed += 1
            for item in deferred:
                heapq.heappush(self._expiry, item)
        self._finish(work)
        return removed

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.config.sweep_interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("TTL sweep failed")

    # ---- stats -------------------------------------------------------------------------------

    def stats_table(self) -> dict[tuple[str, str], TierStats]:
        """Raw counters by (tier, namespace)."""
        return self.stats_book.snapshot()

    def tier_usage(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                str(t): {"budget_bytes": st.budget, "used_bytes": st.used, "objects": len(st.policy)}
                for t, st in self._tiers.items()
            }

    def stats(self) -> dict[str, Any]:
        """A plain dict for the admin API: per tier totals, budgets and per-namespace counters."""
        table = self.stats_table()
        usage = self.tier_usage()
        tiers: dict[str, Any] = {}
        names = [str(t) for t in (GPU, HOST, DISK)] + ([str(REDIS)] if self.redis else [])
        for t in names:
            total = TierStats()
            per_ns: dict[str, Any] = {}
            for (tier, ns), s in table.items():
                if tier == t and ns:
                    total.add(s)
                    per_ns[ns] = s.as_dict()
                elif tier == t:
                    total.add(s)
            d: dict[str, Any] = {"enabled": t in usage or t == REDIS, **total.as_dict()}
            if t in usage:
                d.update(budget_bytes=usage[t]["budget_bytes"], used_bytes=usage[t]["used_bytes"])
            d["namespaces"] = per_ns
            tiers[t] = d
        if self.redis is not None:
            tiers[str(REDIS)].update(self.redis.status())
        return {
            "policy": self.config.policy,
            "objects": len(self._entries),
            "disk_open_seconds": self.open_seconds,
            "tiers": tiers,
        }


_MISS = object()


def _on_gpu(value: Value) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type != "cpu"
