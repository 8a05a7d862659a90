"""Disk tier: one immutable file per object version, committed by a checksummed manifest log.

Layout under `path`::

    LOCK                          flock'ed while a store has the directory open
    manifest.log                  append-only records: PUT(namespace, key, file id, meta) / DEL,
                                  and PUT records that carry a small object's bytes themselves
    objects/<aa>/<hash>-<id>.obj  codec-format files (header with per-block checksums + payload)

Why this design rather than temp+rename or a segment log:

- A put writes a *new* file named by the key's hash and a random version id, fsyncs it, then
  appends a PUT record to the manifest; the record is the commit point. A file is never
  modified in place, so there is no window in which a reader or a crash sees half an object
  under a committed name, and concurrent writers of one key never share a file (the store's
  index decides which version wins; the loser's file is removed). This gives temp+rename's
  atomicity without the rename, and the manifest gives what a directory alone cannot:
- Reopening replays the manifest (small fixed-layout records, each with its own crc32) and does
  not open, stat or list object files, so 100k objects reopen in well under a second. A torn
  last record (SIGKILL or power loss mid-append) fails its crc and is truncated away; every
  record whose put returned was written before the put returned, so it survives a SIGKILL
  (and, with `fsync`, power loss).
- A cache evicts constantly. With one file per object an eviction is an unlink that frees the
  space at once; an append-only segment log would need compaction (rewriting live data) to
  reclaim space, costing write bandwidth in exactly the regime where the tier is busy. Objects
  here are large (256 KiB to tens of MiB), so per-file overhead is small. The manifest itself
  is compacted (rewritten from the live records) when dead records outnumber live ones.
- Files left by crashed writers (written but never committed) are removed by a background
  scrub at open, which only touches files older than the open.
- Small objects (at most `inline_max` bytes encoded: cache answers and their records, a few KB)
  are written *into* their manifest record instead: one append and one group-committed fsync
  per put instead of a file created, fsynced and later unlinked, which is most of what such a
  put costs. They are read back with a `pread` of the manifest, and compaction copies the live
  ones into the new manifest (small, so cheap, unlike rewriting large objects).

Reads verify the header (namespace and key must match: a file can never be served under another
name) and each 1 MiB block's checksum (xxh3, see `codec`) on the reading thread, block by block,
while the kernel's readahead fetches the following blocks, so verification overlaps the I/O
instead of adding to it. Byte objects are read with one `pread` straight into the `bytes`
result; tensors and arrays are read into their final (pinned, when CUDA is present) buffer. A
failed check raises `CorruptObjectError`; the store logs it, removes the object and reports a miss.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import marshal
import math
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tiergate.tiers import codec
from tiergate.tiers.base import Kind, ObjectMeta, TierName
from tiergate.tiers.errors import CorruptObjectError, StorageError, TierFullError
from tiergate.tiers.values import Value, from_raw

log = logging.getLogger(__name__)

FullKey = tuple[str, str]

_REC = struct.Struct("<II")  # body length, crc32(body)
_PUT = struct.Struct("<BQQQdddHHBB")  # op, file id, file size, size, cost, created, expires, ns/key/dtype len, ndim
_DEL = struct.Struct("<BHH")
_REC_PUT = struct.Struct("<II" + _PUT.format[1:])  # record header + PUT fields in one unpack
_OP_PUT, _OP_DEL, _OP_SNAPSHOT, _OP_PUT_INLINE = 1, 2, 3, 4
_INLINE_BIT = 1 << 63  # set in the "file id" of an object stored inside the manifest
_KINDS = {Kind.BYTES: 0, Kind.NUMPY: 1, Kind.TORCH: 2}
_KIND_OF = {v: k for k, v in _KINDS.items()}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_PREFIX = 4096


# A committed object: (namespace, key, size, kind code, dtype, shape, cost, created, expires or None,
# file id, file size). Plain tuples so that a snapshot is one `marshal` blob that loads at C speed.
Record = tuple[str, str, int, int, str, tuple[int, ...], float, float, float | None, int, int]


def record_meta(r: Record) -> ObjectMeta:
    return ObjectMeta(r[0], r[1], r[2], _KIND_OF[r[3]], r[4], r[5], r[6], r[7], r[7], r[8])


def key_hash(fk: FullKey) -> str:
    ns, key = fk
    return hashlib.blake2b(f"{ns}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def is_inline(file_id: int) -> bool:
    """Whether an object's bytes live in the manifest rather than in a file of their own."""
    return file_id >= _INLINE_BIT


def _put_record(meta: ObjectMeta, file_id: int, file_size: int, blob: bytes = b"") -> tuple[bytes, Record]:
    rec: Record = (
        meta.namespace,
        meta.key,
        meta.size,
        _KINDS[meta.kind],
        meta.dtype,
        tuple(meta.shape),
        meta.cost,
        meta.created_at,
        meta.expires_at,
        file_id,
        file_size,
    )
    return _record_bytes(rec, blob), rec


def _record_bytes(rec: Record, blob: bytes = b"") -> bytes:
    """A PUT record; with `blob` (an inline object's encoded bytes) the bytes follow the fields.
    The crc covers the fields only: the blob carries its own checksums, so a damaged object
    reads as corrupt (a miss) instead of cutting the manifest short at its record."""
    ns, key, dt = rec[0].encode(), rec[1].encode("utf-8", "surrogatepass"), rec[4].encode()
    expires = math.nan if rec[8] is None else rec[8]
    op = _OP_PUT_INLINE if is_inline(rec[9]) else _OP_PUT
    fixed = _PUT.pack(op, rec[9], rec[10], rec[2], rec[6], rec[7], expires, len(ns), len(key), len(dt), len(rec[5]))
    shape = struct.pack(f"<{len(rec[5])}Q", *rec[5])
    fields = b"".join((fixed, ns, key, dt, shape, bytes((rec[3],))))  # kind byte after the shape
    return _REC.pack(len(fields) + len(blob), zlib.crc32(fields)) + fields + blob


def _snapshot_record(live: dict[FullKey, Record]) -> bytes:
    body = bytes((_OP_SNAPSHOT,)) + marshal.dumps(list(live.values()))
    return _REC.pack(len(body), zlib.crc32(body)) + body


def _del_record(fk: FullKey) -> bytes:
    ns, key = fk[0].encode(), fk[1].encode("utf-8", "surrogatepass")
    body = _DEL.pack(_OP_DEL, len(ns), len(key)) + ns + key
    return _REC.pack(len(body), zlib.crc32(body)) + body


def _full_error(path: Path, exc: OSError, what: str) -> StorageError:
    if exc.errno in _FULL_ERRNOS:
        return TierFullError(
            f"disk tier full: no space left on the device of {path} while {what} ({exc.strerror})",
            tier=TierName.DISK,
            path=str(path),
        )
    return StorageError(f"disk tier I/O error at {path} while {what}: {exc}", tier=TierName.DISK, path=str(path))


class DiskTier:
    name = TierName.DISK

    def __init__(self, path: str | os.PathLike[str], budget_bytes: int, *, fsync: bool = True,
                 inline_max: int = 16 << 10) -> None:
        self.path = Path(path)
        self.budget_bytes = int(budget_bytes)
        self.fsync = fsync
        self.inline_max = inline_max
        self._objects = self.path / "objects"
        self._manifest_path = self.path / "manifest.log"
        self._mlock = threading.Lock()
        # Group commit: manifest bytes appended and known durable, ever (compaction keeps counting).
        self._sync_lock = threading.Lock()
        self._appended = 0
        self._synced = 0
        self._live: dict[FullKey, Record] = {}
        self._inline: dict[FullKey, int] = {}  # where each live inline object's bytes start in the manifest
        self._inline_bytes = 0  # their total size
        self._pending: dict[int, bytes] = {}  # inline objects written, not yet committed, by id
        self._records = 0
        self._mfd = -1
        self._rfd = -1  # the manifest, opened for reading inline objects
        self._msize = 0
        self._lock_fd = -1
        self._scrub_thread: threading.Thread | None = None
        # While the scrub runs, the names of files this process creates: file times come from the
        # kernel's coarse clock, so a file written just after opening can look older than the open.
        self._fresh: set[str] | None = None
        self._opened_at = 0.0
        self.open_seconds = 0.0
        self.replayed = 0
        self.compact_min_records = 10_000  # compact when dead records exceed live ones by this
        self.compact_min_bytes = 64 << 20  # or when the manifest is this much over twice its live inline bytes

    # ---- open / close ----------------------------------------------------------------------

    def open(self) -> list[Record]:
        """Lock the directory, replay the manifest and return the live objects in commit order."""
        t0 = time.perf_counter()
        opened_at = time.time()
        try:
            self._objects.mkdir(parents=True, exist_ok=True)
            for i in range(256):
                (self._objects / f"{i:02x}").mkdir(exist_ok=True)
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _full_error(self.path, e, "creating the tier directory") from e
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise StorageError(
                f"disk tier directory {self.path} is in use by another process",
                tier=TierName.DISK,
                path=str(self.path),
            ) from e
        records = self._replay()
        self._mfd = os.open(self._manifest_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._rfd = os.open(self._manifest_path, os.O_RDONLY)
        self._msize = os.fstat(self._mfd).st_size
        self.open_seconds = time.perf_counter() - t0
        self._opened_at = opened_at
        return records

    def _replay(self) -> list[Record]:
        """Rebuild the live set: a snapshot record (written by compaction and clean shutdown)
        loads in one `marshal.loads`; the records appended after it replay one by one."""
        try:
            data = self._manifest_path.read_bytes()
        except FileNotFoundError:
            return []
        live: dict[FullKey, Record] = {}
        inline: dict[FullKey, int] = {}
        mv = memoryview(data)
        pos, n, count = 0, len(data), 0
        rec_size, put_size, del_size = _REC.size, _PUT.size, _DEL.size
        unpack_rec, unpack_rec_put, unpack_del = _REC.unpack_from, _REC_PUT.unpack_from, _DEL.unpack_from
        crc32, isnan = zlib.crc32, math.isnan
        strings: dict[bytes, str] = {}  # namespaces and dtypes repeat: decode each once
        shapes: dict[int, struct.Struct] = {}
        while pos + rec_size <= n:
            start = pos + rec_size
            op = data[start] if start < n else 0
            try:
                if op in (_OP_PUT, _OP_PUT_INLINE):
                    blen, crc, _, fid, fsize, size, cost, created, expires, nl, kl, dl, nd = unpack_rec_put(data, pos)
                else:
                    blen, crc = unpack_rec(data, pos)
            except struct.error:
                break
            end = start + blen
            checked = end - fsize if op == _OP_PUT_INLINE else end  # an inline blob has its own checksums
            if end > n or blen == 0 or checked <= start or crc32(mv[start:checked]) != crc:
                break
            try:
                if op in (_OP_PUT, _OP_PUT_INLINE):
                    p = start + put_size
                    nsb = data[p : p + nl]
                    ns = strings.get(nsb) or strings.setdefault(nsb, nsb.decode())
                    p += nl
                    key = data[p : p + kl].decode("utf-8", "surrogatepass")
                    p += kl
                    dtb = data[p : p + dl]
                    dtype = strings.get(dtb) or strings.setdefault(dtb, dtb.decode())
                    p += dl
                    shp = shapes.get(nd) or shapes.setdefault(nd, struct.Struct(f"<{nd}Q"))
                    shape = shp.unpack_from(data, p)
                    kind = data[p + 8 * nd]
                    if kind not in _KIND_OF:
                        break
                    fk = (ns, key)
                    live.pop(fk, None)  # a re-put moves to the end: keep commit order
                    if op == _OP_PUT_INLINE:
                        if end - (p + 8 * nd + 1) != fsize or not is_inline(fid):
                            break
                        inline[fk] = p + 8 * nd + 1
                    else:
                        inline.pop(fk, None)
                    live[fk] = (
                        ns,
                        key,
                        size,
                        kind,
                        dtype,
                        shape,
                        cost,
                        created,
                        None if isnan(expires) else expires,
                        fid,
                        fsize,
                    )
                elif op == _OP_DEL:
                    _, nl, kl = unpack_del(data, start)
                    p = start + del_size
                    fk = (data[p : p + nl].decode(), data[p + nl : p + nl + kl].decode("utf-8", "surrogatepass"))
                    live.pop(fk, None)
                    inline.pop(fk, None)
                elif op == _OP_SNAPSHOT and count == 0:
                    live = {(r[0], r[1]): r for r in marshal.loads(mv[start + 1 : end])}
                else:
                    break
            except (UnicodeDecodeError, KeyError, struct.error, IndexError, ValueError, EOFError, TypeError):
                break
            pos = end
            count += 1
        if pos < n:
            log.warning("disk tier %s: discarding %d bytes of torn manifest tail", self.path, n - pos)
            with open(self._manifest_path, "r+b") as f:
                f.truncate(pos)
                f.flush()
                os.fsync(f.fileno())
        self._live = live
        self._inline = inline
        self._inline_bytes = sum(live[fk][10] for fk in inline)
        self._records = count
        self.replayed = len(live)
        return list(live.values())

    def start_scrub(self) -> None:
        """Start removing uncommitted files in the background (call once the caller has loaded)."""
        if self._scrub_thread is None and self._mfd >= 0:
            self._fresh = set()
            self._scrub_thread = threading.Thread(
                target=self._scrub, args=(self._opened_at,), name="tiergate-disk-scrub", daemon=True
            )
            self._scrub_thread.start()

    def _scrub(self, before: float) -> None:
        """Remove object files no manifest record references (crashed writers), older than open."""
        with self._mlock:
            ids = [(fk, r[9]) for fk, r in self._live.items()]
        wanted = {f"{key_hash(fk)}-{fid:016x}.obj" for fk, fid in ids}
        removed = 0
        try:
            for d in os.scandir(self._objects):
                if not d.is_dir():
                    continue
                for f in os.scandir(d.path):
                    if f.name in wanted:
                        continue
                    try:
                        with self._mlock:
                            if self._fresh is not None and f.name in self._fresh:
                                continue
                        if f.stat().st_mtime < before:
                            os.unlink(f.path)
                            removed += 1
                    except FileNotFoundError:
                        pass
        except OSError as e:
            log.warning("disk tier %s: scrub stopped: %s", self.path, e)
        finally:
            with self._mlock:
                self._fresh = None
        if removed:
            log.info("disk tier %s: removed %d uncommitted object files", self.path, removed)

    def close(self) -> None:
        if self._scrub_thread is not None:
            self._scrub_thread.join()
            self._scrub_thread = None
        with self._mlock:
            if self._mfd >= 0:
                if self._records > 1 or (self._live and self._records == 0):
                    self._compact()  # the next open loads one snapshot instead of replaying
                if self.fsync:
                    os.fsync(self._mfd)
                os.close(self._mfd)
                self._mfd = -1
            if self._rfd >= 0:
                os.close(self._rfd)
                self._rfd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # ---- files -------------------------------------------------------------------------------

    def file_path(self, fk: FullKey, file_id: int) -> Path:
        h = key_hash(fk)
        return self._objects / h[:2] / f"{h}-{file_id:016x}.obj"

    def write(self, fk: FullKey, head: bytes, payload: memoryview) -> tuple[int, int]:
        """Write a new, not yet committed version file; returns (file id, file size). An object
        of at most `inline_max` bytes is only kept until `commit` writes it into the manifest."""
        total = len(head) + len(payload)
        if total <= self.inline_max:
            file_id = _INLINE_BIT | int.from_bytes(os.urandom(8), "little") >> 1
            with self._mlock:
                self._pending[file_id] = b"".join((head, payload))
            return file_id, total
        while True:
            file_id = int.from_bytes(os.urandom(8), "little") >> 1
            path = self.file_path(fk, file_id)
            with self._mlock:
                if self._fresh is not None:  # named before it exists, so the scrub never sees it unnamed
                    self._fresh.add(path.name)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise _full_error(self.path, e, "creating an object file") from e
        try:
            try:
                bufs = [memoryview(head), payload]
                while bufs:
                    n = os.writev(fd, bufs)
                    while bufs and n >= len(bufs[0]):
                        n -= len(bufs[0])
                        bufs.pop(0)
                    if bufs and n:
                        bufs[0] = bufs[0][n:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            _unlink(path)
            raise _full_error(self.path, e, f"writing {total} bytes") from e
        return file_id, total

    def read(
        self,
        meta: ObjectMeta,
        file_id: int,
        file_size: int,
        alloc: Callable[[int], object | None] | None = None,
    ) -> Value:
        """Read, verify and decode one object. Raises FileNotFoundError or CorruptObjectError."""
        fk = (meta.namespace, meta.key)
        if is_inline(file_id):
            return self._read_inline(fk, file_id, file_size)
        fd = os.open(self.file_path(fk, file_id), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size != file_size:
                raise CorruptObjectError(f"object file is {size} bytes, manifest says {file_size}")
            # No POSIX_FADV_WILLNEED: it made cold reads ~1.5x slower here (it reads into single
            # pages; the kernel's own readahead for these sequential preads uses large folios).
            head = os.pread(fd, min(_READ_PREFIX, size), 0)
            hlen = codec.header_length(head)
            if hlen > len(head):
                head = os.pread(fd, hlen, 0)
            header = codec.parse_header(head)
            if (header.namespace, header.key) != fk:
                raise CorruptObjectError("object file belongs to another key")
            n = header.nbytes
            if hlen + n != size:
                raise CorruptObjectError(f"object file is {size} bytes, header says {hlen + n}")
            if header.kind is Kind.BYTES:
                # `bytes` cannot be filled block by block: one pread straight into the result,
                # then one hash pass (xxh3: ~0.2 ms for 4 MiB)
                payload = os.pread(fd, n, hlen)
                if len(payload) != n:
                    raise CorruptObjectError(f"short read: {len(payload)} of {n} payload bytes")
                codec.verify(header, memoryview(payload))
                return payload
            buf = alloc(n) if alloc is not None and header.kind is Kind.TORCH else None
            if buf is None:
                # uninitialised memory: zero-filling 4 MiB (bytearray) costs as much as hashing it
                buf = torch.empty(n, dtype=torch.uint8) if header.kind is Kind.TORCH else np.empty(n, np.uint8)
            mv = memoryview(buf.numpy() if isinstance(buf, torch.Tensor) else buf).cast("B")
            # block by block into the final buffer: each block is hashed while the kernel is
            # still reading the following ones (advised above), so only the last hash adds time
            bs = header.block_size
            for i, off in enumerate(range(0, n, bs)):
                block = mv[off : off + bs]
                if os.preadv(fd, [block], hlen + off) != len(block):
                    raise CorruptObjectError(f"short read at payload offset {off}")
                codec.verify_block(header, i, block)
        finally:
            os.close(fd)
        return from_raw(buf, header.kind, header.dtype, header.shape)

    def _read_inline(self, fk: FullKey, file_id: int, size: int) -> Value:
        with self._mlock:  # a compaction moves the bytes: read them where they are now
            rec, at = self._live.get(fk), self._inline.get(fk)
            if rec is None or rec[9] != file_id or at is None or self._rfd < 0:
                raise FileNotFoundError(f"inline object {fk[0]}/{fk[1]} is gone")
            blob = os.pread(self._rfd, size, at)
        if len(blob) != size:
            raise CorruptObjectError(f"short read: {len(blob)} of {size} inline bytes")
        header, value = codec.loads(blob)
        if (header.namespace, header.key) != fk:
            raise CorruptObjectError("inline object belongs to another key")
        return value

    # ---- manifest ----------------------------------------------------------------------------

    def _append(self, rec: bytes) -> None:
        try:
            n = os.write(self._mfd, rec)
            if n != len(rec):
                raise OSError(errno.ENOSPC, "short manifest write")
        except OSError as e:
            with contextlib.suppress(OSError):  # never leave a torn record mid-log
                os.ftruncate(self._mfd, self._msize)
            raise _full_error(self.path, e, "appending to the manifest") from e
        self._msize += len(rec)
        self._appended += len(rec)
        self._records += 1

    def commit(self, meta: ObjectMeta, file_id: int, file_size: int) -> int | None:
        """Make a written file the current version of its key. Returns the replaced file id."""
        fk = (meta.namespace, meta.key)
        with self._mlock:
            blob = self._pending.pop(file_id) if is_inline(file_id) else b""
            raw, rec = _put_record(meta, file_id, file_size, blob)
            self._append(raw)
            old = self._live.pop(fk, None)
            self._live[fk] = rec
            if old is not None and self._inline.pop(fk, None) is not None:
                self._inline_bytes -= old[10]
            if blob:
                self._inline[fk] = self._msize - len(blob)
                self._inline_bytes += len(blob)
            self._maybe_compact()
        return None if old is None else old[9]

    def remove(self, fk: FullKey) -> int | None:
        """Forget a key (DEL record). Returns its file id, for the caller to unlink."""
        with self._mlock:
            if fk not in self._live:
                return None
            try:
                self._append(_del_record(fk))
            except StorageError:
                if fk in self._inline:
                    self._spoil(fk)
                raise
            old = self._live.pop(fk)
            if self._inline.pop(fk, None) is not None:
                self._inline_bytes -= old[10]
            self._maybe_compact()
            return old[9]

    def _spoil(self, fk: FullKey) -> None:
        """Overwrite the start of an inline object in place, for a delete that a full device
        cannot log: it then reads as corrupt (a miss) after a restart instead of coming back.
        Rewriting bytes already on disk needs no new space."""
        at, rec = self._inline.pop(fk), self._live.pop(fk)
        self._inline_bytes -= rec[10]
        fd = os.open(self._manifest_path, os.O_WRONLY)  # not O_APPEND: that would ignore the offset
        try:
            os.pwrite(fd, bytes(min(rec[10], 64)), at)
        finally:
            os.close(fd)

    def sync(self) -> None:
        """fsync the manifest up to the records appended so far (after commit/remove, outside the
        store lock). Group commit: one fsync runs at a time, without the manifest lock, so other
        threads keep appending; a caller whose records an earlier fsync already covered returns
        at once, so concurrent puts share fsyncs instead of queueing one each."""
        if not self.fsync:
            return
        with self._mlock:
            wanted = self._appended
        with self._sync_lock:
            with self._mlock:
                if self._synced >= wanted or self._mfd < 0:
                    return
                upto, fd = self._appended, os.dup(self._mfd)  # a dup survives a compaction's close
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with self._mlock:
                self._synced = max(self._synced, upto)

    def _maybe_compact(self) -> None:
        # by dead records, and by the bytes of replaced or deleted inline objects still in the log
        if (self._records > 2 * len(self._live) + self.compact_min_records
                or self._msize > 2 * self._inline_bytes + self.compact_min_bytes):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the manifest as one snapshot record of the objects in files, then one record
        per live inline object with its bytes (tmp, fsync, rename)."""
        tmp = self._manifest_path.with_suffix(".tmp")
        files = {fk: r for fk, r in self._live.items() if not is_inline(r[9])}
        parts = [_snapshot_record(files)]
        moved: dict[FullKey, int] = {}
        size = len(parts[0])
        try:
            for fk, at in self._inline.items():
                rec = self._live[fk]
                blob = os.pread(self._rfd, rec[10], at)
                if len(blob) != rec[10]:
                    raise OSError(errno.EIO, f"short read of inline object {fk[0]}/{fk[1]}")
                parts.append(_record_bytes(rec, blob))
                size += len(parts[-1])
                moved[fk] = size - len(blob)
            data = b"".join(parts)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._manifest_path)
            dfd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            _unlink(tmp)
            log.warning("disk tier %s: manifest compaction failed: %s", self.path, e)
            return
        os.close(self._mfd)
        self._mfd = os.open(self._manifest_path, os.O_WRONLY | os.O_APPEND)
        os.close(self._rfd)
        self._rfd = os.open(self._manifest_path, os.O_RDONLY)
        self._inline = moved
        self._msize = len(data)
        self._records = 1 + len(moved)
        self._synced = self._appended  # the snapshot, fsynced above, holds every live record

    def unlink(self, fk: FullKey, file_id: int) -> None:
        if is_inline(file_id):  # nothing on disk until committed, and then the manifest owns it
            with self._mlock:
                self._pending.pop(file_id, None)
            return
        _unlink(self.file_path(fk, file_id))


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("could not remove %s: %s", path, e)
