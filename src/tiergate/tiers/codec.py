"""The self-describing object format used by the disk and Redis tiers.

    prefix  = magic "TGO1" | u32 header length | u32 crc32(header)      (12 bytes, little endian)
    header  = JSON: namespace, key, kind, dtype, shape, nbytes, cost, created/expires times,
              block size and one crc32 per payload block
    payload = the value's raw C-contiguous bytes

Checksums are per 1 MiB block rather than one per object so that a reader can verify each block
while the kernel is still reading the next ones (see `disk.DiskTier.read`): one crc32 over a
whole 4 MiB object would otherwise serialise with the read and halve the read rate. The header
names the namespace and key, so an object can never be served under another name, whatever the
file or Redis key it came from.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from tiergate.tiers.base import Kind, ObjectMeta
from tiergate.tiers.errors import CorruptObjectError
from tiergate.tiers.values import Value, dtype_name, from_raw, kind_of, raw_view, shape_of

MAGIC = b"TGO1"
PREFIX = struct.Struct("<4sII")
BLOCK_SIZE = 1 << 20
MAX_HEADER = 1 << 20


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
    crcs: tuple[int, ...]

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


def block_crcs(payload: memoryview, block_size: int = BLOCK_SIZE) -> tuple[int, ...]:
    return tuple(zlib.crc32(payload[i : i + block_size]) for i in range(0, len(payload), block_size))


def encode(value: Value, meta: ObjectMeta) -> tuple[bytes, memoryview]:
    """Serialise `value` as (prefix+header bytes, payload view). The payload is not copied."""
    payload = raw_view(value)
    doc = {
        "v": 1,
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
        "crcs": list(block_crcs(payload)),
    }
    header = json.dumps(doc, separators=(",", ":")).encode()
    return PREFIX.pack(MAGIC, len(header), zlib.crc32(header)) + header, payload


def dumps(value: Value, meta: ObjectMeta) -> bytes:
    head, payload = encode(value, meta)
    return b"".join((head, payload))


def header_length(prefix: bytes | memoryview) -> int:
    """Total length of prefix+header given at least the first 12 bytes."""
    if len(prefix) < PREFIX.size:
        raise CorruptObjectError("truncated object: no header")
    magic, hlen, _ = PREFIX.unpack_from(prefix)
    if magic != MAGIC or hlen > MAX_HEADER:
        raise CorruptObjectError("bad magic or header length")
    return PREFIX.size + hlen


def parse_header(buf: bytes | memoryview) -> Header:
    """Parse and check prefix+header from the start of `buf`."""
    end = header_length(buf)
    if len(buf) < end:
        raise CorruptObjectError("truncated object header")
    _, _, hcrc = PREFIX.unpack_from(buf)
    raw = bytes(buf[PREFIX.size : end])
    if zlib.crc32(raw) != hcrc:
        raise CorruptObjectError("header checksum mismatch")
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
            crcs=tuple(int(c) for c in d["crcs"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptObjectError(f"unreadable header: {e}") from e
    if h.block_size <= 0 or len(h.crcs) != -(-h.nbytes // h.block_size):
        raise CorruptObjectError("header block table does not match the payload size")
    return h


def verify_block(header: Header, index: int, block: memoryview) -> None:
    if zlib.crc32(block) != header.crcs[index]:
        raise CorruptObjectError(f"checksum mismatch in block {index}")


def verify(header: Header, payload: memoryview) -> None:
    if len(payload) != header.nbytes:
        raise CorruptObjectError(f"truncated payload: {len(payload)} of {header.nbytes} bytes")
    bs = header.block_size
    for i in range(len(header.crcs)):
        verify_block(header, i, payload[i * bs : (i + 1) * bs])


def loads(blob: bytes | bytearray | memoryview) -> tuple[Header, Value]:
    """Parse, verify and decode a whole serialised object (as read from Redis)."""
    mv = memoryview(blob).cast("B")
    header = parse_header(mv)
    payload = mv[header_length(mv) :]
    verify(header, payload)
    return header, from_raw(payload, header.kind, header.dtype, header.shape)
