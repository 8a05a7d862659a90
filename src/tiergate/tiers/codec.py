"""The self-describing object format used by the disk and Redis tiers.

    prefix  = magic | u32 header length | u32 crc32(header)               (12 bytes, little endian)
    header  = JSON: namespace, key, kind, dtype, shape, nbytes, cost, created/expires times,
              block size, checksum algorithm and one checksum per payload block
    payload = the value's raw C-contiguous bytes

Two versions exist; both are read, the newest is written:

- "TGO2": one xxh3_64 per 1 MiB block (the `xxhash` package). xxh3 runs at 10-30 GB/s on one
  core, so a reader verifies each block in a few tens of microseconds on the reading thread,
  while the kernel is still reading the next blocks: an object costs about one block's hash
  more than the read itself.
- "TGO1": one zlib crc32 per block. crc32 runs at 1-2 GB/s, about the speed of the disk, so
  verifying took as long as reading (half the disk rate for 4 MiB objects, even with the blocks
  spread over threads). Still read, so that stores written before stay valid, and still written
  where `xxhash` is not installed (there, "TGO2" objects read as corrupt: a miss that says why).

Checksums are per block rather than one per object so that verification overlaps the read (see
`disk.DiskTier.read`). The header names the namespace and key, so an object can never be served
under another name, whatever the file or Redis key it came from. A 64-bit hash also catches
random corruption at least as well as a 32-bit CRC (2^-64 vs 2^-32 chance of a miss).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from tiergate.tiers.base import Kind, ObjectMeta
from tiergate.tiers.errors import CorruptObjectError
from tiergate.tiers.values import Value, dtype_name, from_raw, kind_of, raw_view, shape_of

try:
    import xxhash
except ImportError:  # still works, with the slower crc32 format
    xxhash = None

MAGIC_V1, MAGIC_V2 = b"TGO1", b"TGO2"
PREFIX = struct.Struct("<4sII")
BLOCK_SIZE = 1 << 20
MAX_HEADER = 1 << 20

# checksum algorithm by name, as the header names it
SUMS: dict[str, Callable[[bytes | memoryview], int]] = {"crc32": zlib.crc32}
if xxhash is not None:
    SUMS["xxh3_64"] = xxhash.xxh3_64_intdigest
WRITE_SUM = "xxh3_64" if xxhash is not None else "crc32"
_MAGIC_OF = {"xxh3_64": MAGIC_V2, "crc32": MAGIC_V1}
_SUM_OF = {MAGIC_V1: "crc32", MAGIC_V2: "xxh3_64"}


@dataclass(frozen=True, slots=True)
class Header:
    namespace: str
    key: str
    kind: Kind
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    cost: float
    created_at: float
    expires_at: float | None
    block_size: int
    sums: tuple[int, ...]
    algo: str = "crc32"

    def meta(self) -> ObjectMeta:
        return ObjectMeta(
            namespace=self.namespace,
            key=self.key,
            size=self.nbytes,
            kind=self.kind,
            dtype=self.dtype,
            shape=self.shape,
            cost=self.cost,
            created_at=self.created_at,
            accessed_at=self.created_at,
            expires_at=self.expires_at,
        )


def block_sums(payload: memoryview, block_size: int = BLOCK_SIZE, algo: str = WRITE_SUM) -> tuple[int, ...]:
    fn = SUMS[algo]
    return tuple(fn(payload[i : i + block_size]) for i in range(0, len(payload), block_size))


def encode(value: Value, meta: ObjectMeta) -> tuple[bytes, memoryview]:
    """Serialise `value` as (prefix+header bytes, payload view). The payload is not copied."""
    payload = raw_view(value)
    algo = WRITE_SUM
    magic = _MAGIC_OF[algo]
    doc = {
        "v": 2 if magic == MAGIC_V2 else 1,
        "ns": meta.namespace,
        "key": meta.key,
        "kind": str(kind_of(value)),
        "dtype": dtype_name(value),
        "shape": list(shape_of(value)),
        "nbytes": len(payload),
        "cost": meta.cost,
        "created": meta.created_at,
        "expires": meta.expires_at,
        "block": BLOCK_SIZE,
        ("sums" if magic == MAGIC_V2 else "crcs"): list(block_sums(payload, BLOCK_SIZE, algo)),
    }
    header = json.dumps(doc, separators=(",", ":")).encode()
    return PREFIX.pack(magic, len(header), zlib.crc32(header)) + header, payload


def dumps(value: Value, meta: ObjectMeta) -> bytes:
    head, payload = encode(value, meta)
    return b"".join((head, payload))


def header_length(prefix: bytes | memoryview) -> int:
    """Total length of prefix+header given at least the first 12 bytes."""
    if len(prefix) < PREFIX.size:
        raise CorruptObjectError("truncated object: no header")
    magic, hlen, _ = PREFIX.unpack_from(prefix)
    if magic not in _SUM_OF or hlen > MAX_HEADER:
        raise CorruptObjectError("bad magic or header length")
    return PREFIX.size + hlen


def parse_header(buf: bytes | memoryview) -> Header:
    """Parse and check prefix+header from the start of `buf`."""
    end = header_length(buf)
    if len(buf) < end:
        raise CorruptObjectError("truncated object header")
    magic, _, hcrc = PREFIX.unpack_from(buf)
    raw = bytes(buf[PREFIX.size : end])
    if zlib.crc32(raw) != hcrc:
        raise CorruptObjectError("header checksum mismatch")
    algo = _SUM_OF[magic]
    if algo not in SUMS:
        raise CorruptObjectError(f"object has {algo} checksums: install the xxhash package to read it")
    try:
        d = json.loads(raw)
        h = Header(
            namespace=d["ns"],
            key=d["key"],
            kind=Kind(d["kind"]),
            dtype=d["dtype"],
            shape=tuple(int(x) for x in d["shape"]),
            nbytes=int(d["nbytes"]),
            cost=float(d["cost"]),
            created_at=float(d["created"]),
            expires_at=None if d["expires"] is None else float(d["expires"]),
            block_size=int(d["block"]),
            sums=tuple(int(c) for c in d["sums" if magic == MAGIC_V2 else "crcs"]),
            algo=algo,
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptObjectError(f"unreadable header: {e}") from e
    if h.block_size <= 0 or len(h.sums) != -(-h.nbytes // h.block_size):
        raise CorruptObjectError("header block table does not match the payload size")
    return h


def verify_block(header: Header, index: int, block: memoryview) -> None:
    if SUMS[header.algo](block) != header.sums[index]:
        raise CorruptObjectError(f"checksum mismatch in block {index}")


def verify(header: Header, payload: memoryview) -> None:
    if len(payload) != header.nbytes:
        raise CorruptObjectError(f"truncated payload: {len(payload)} of {header.nbytes} bytes")
    bs = header.block_size
    for i in range(len(header.sums)):
        verify_block(header, i, payload[i * bs : (i + 1) * bs])


def loads(blob: bytes | bytearray | memoryview) -> tuple[Header, Value]:
    """Parse, verify and decode a whole serialised object (as read from Redis)."""
    mv = memoryview(blob).cast("B")
    header = parse_header(mv)
    payload = mv[header_length(mv) :]
    verify(header, payload)
    return header, from_raw(payload, header.kind, header.dtype, header.shape)
