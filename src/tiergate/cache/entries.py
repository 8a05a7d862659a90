"""Cache entries and how they sit in the tiered store.

One namespace per tenant (`<prefix>/t-<digest of tenant>`), two objects per entry:

    m/<id>   the entry's metadata record (binary, below): small, read at start-up to rebuild
             the in-memory index
    p/<id>   the response payload, opaque bytes, read only on a hit

A registry object (`<prefix>` / `tenants`) lists the tenant namespaces so a restart can find
them; the tenant is therefore not repeated in each record. The store can be
`tiergate.tiers.TieredStore` or anything with the same five methods.

Record layout (little-endian), about 120 bytes plus the query text and the vector:

    "\\0TGm" version:u8 flags:u8 setting:u64 context:u64 created_at:f64 expires_at:f64 size:u32
    category:u8-length utf-8   model:u32-length utf-8   query:u32-length utf-8
    [flags & HISTORY] shape:u64 count:u32 then count x (u32-length utf-8): earlier user turns
    [flags & VECTOR]  scale:f32 then dim x int8: the query embedding, one scale per vector

Records of the first format (a u32 length, JSON, then an fp16 vector) still decode.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import orjson


class EntryStore(Protocol):
    """The part of TieredStore the cache uses."""

    def put(self, namespace: str, key: str, value: Any, *, ttl: float | None = None, cost: float = 1.0) -> None: ...
    def put_many(self, namespace: str, items: Mapping[str, Any], *, ttl: float | None = None) -> None: ...
    def get(self, namespace: str, key: str, default: Any = None, *, as_: Any = None) -> Any: ...
    def peek(self, namespace: str, key: str) -> Any: ...
    def delete_many(self, namespace: str, keys: Iterable[str]) -> int: ...
    def keys(self, namespace: str) -> list[str]: ...


def tenant_namespace(prefix: str, tenant: str) -> str:
    """Tenant names are free-form; namespaces are not, so a digest names the namespace."""
    return f"{prefix}/t-{hashlib.blake2b(tenant.encode(), digest_size=10).hexdigest()}"


@dataclass(slots=True)
class Entry:
    """One entry as the cache compares it (the payload, embedding and history live elsewhere)."""

    label: int
    tenant: str
    category: str
    model: str
    setting: int  # 63-bit setting key
    context: int  # 63-bit context key
    query: str
    history: int  # number of earlier user turns
    expires_at: float | None
    size: int  # payload bytes
    stamp: int = 0  # set when indexed: tells this entry from a later one under the same label

    @property
    def id(self) -> str:
        return f"{self.label:016x}"

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class Meta(NamedTuple):
    """A decoded metadata record."""

    entry: Entry
    vector: np.ndarray | None  # float32, None for an exact-only entry
    created_at: float
    history: tuple[str, ...]  # earlier user turns, oldest first
    history_shape: int | None  # digest of the earlier turns' roles and non-text turns


_MAGIC = b"\0TGm"
_VERSION = 1
_VECTOR, _HISTORY, _EXPIRES = 1, 2, 4
_HEAD = struct.Struct("<4sBBQQddI")
_U8, _U32, _U64, _F32 = (struct.Struct(f) for f in ("<B", "<I", "<Q", "<f"))


def quantize(vector: np.ndarray) -> tuple[float, np.ndarray]:
    """int8 codes and one scale per vector (max |x| / 127): cosines within about 0.001."""
    vector = np.asarray(vector, dtype=np.float32)
    top = float(np.abs(vector).max()) if vector.size else 0.0
    scale = top / 127.0 if top > 0 else 1.0
    return scale, np.clip(np.rint(vector / scale), -127, 127).astype(np.int8)


def encode_meta(
    entry: Entry,
    vector: np.ndarray | None,
    *,
    created_at: float,
    history: tuple[str, ...] = (),
    history_shape: int | None = None,
) -> bytes:
    flags = (_VECTOR if vector is not None else 0) | (_HISTORY if history else 0)
    flags |= _EXPIRES if entry.expires_at is not None else 0
    parts = [
        _HEAD.pack(
            _MAGIC,
            _VERSION,
            flags,
            entry.setting,
            entry.context,
            created_at,
            entry.expires_at if entry.expires_at is not None else 0.0,
            entry.size,
        )
    ]
    parts += [_text(entry.category, _U8), _text(entry.model, _U32), _text(entry.query, _U32)]
    if history:
        parts += [_U64.pack(history_shape or 0), _U32.pack(len(history))]
        parts += [_text(turn, _U32) for turn in history]
    if vector is not None:
        scale, codes = quantize(vector)
        parts += [_F32.pack(scale), codes.tobytes()]
    return b"".join(parts)


def is_current(blob: bytes) -> bool:
    """Whether a record is in the current format (else it is one of the first, JSON, format)."""
    return blob.startswith(_MAGIC) and len(blob) > len(_MAGIC) and blob[len(_MAGIC)] == _VERSION


def decode_meta(label: int, blob: bytes, tenant: str = "") -> Meta:
    """Decode a record (either format). Raises ValueError when it is not one."""
    if not blob.startswith(_MAGIC):
        return _decode_json(label, blob, tenant)
    try:
        _, version, flags, setting, context, created_at, expires_at, size = _HEAD.unpack_from(blob, 0)
        if version != _VERSION:
            raise ValueError(f"cache record version {version} is not {_VERSION}")
        at = _HEAD.size
        category, at = _read_text(blob, at, _U8)
        model, at = _read_text(blob, at, _U32)
        query, at = _read_text(blob, at, _U32)
        history: list[str] = []
        shape = None
        if flags & _HISTORY:
            (shape,) = _U64.unpack_from(blob, at)
            (count,) = _U32.unpack_from(blob, at + 8)
            at += 12
            for _ in range(count):
                turn, at = _read_text(blob, at, _U32)
                history.append(turn)
        vector = None
        if flags & _VECTOR:
            (scale,) = _F32.unpack_from(blob, at)
            vector = np.frombuffer(blob, dtype=np.int8, offset=at + 4).astype(np.float32) * scale
        elif at != len(blob):
            raise ValueError("cache record has trailing bytes")
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"truncated or corrupt cache record: {exc}") from exc
    entry = Entry(
        label,
        tenant,
        category,
        model,
        setting,
        context,
        query,
        len(history),
        expires_at if flags & _EXPIRES else None,
        size,
    )
    return Meta(entry, vector, created_at, tuple(history), shape)


def _decode_json(label: int, blob: bytes, tenant: str) -> Meta:
    """The first record format: u32 length, JSON, fp16 vector."""
    try:
        (n,) = struct.unpack_from("<I", blob, 0)
        meta = orjson.loads(blob[4 : 4 + n])
        vector = np.frombuffer(blob[4 + n :], dtype=np.float16).astype(np.float32)
        history = tuple(str(t) for t in meta.get("history", []))
        entry = Entry(
            label=label,
            tenant=tenant or meta["tenant"],
            category=meta["category"],
            model=meta["model"],
            setting=int(meta["setting"]),
            context=int(meta["context"]),
            query=meta["query"],
            history=len(history),
            expires_at=meta["expires_at"],
            size=int(meta["size"]),
        )
        shape = meta.get("history_shape")
        return Meta(
            entry,
            vector if meta.get("semantic", True) else None,
            float(meta["created_at"]),
            history,
            None if shape is None else int(shape),
        )
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unreadable cache record: {exc}") from exc


def _text(value: str, length: struct.Struct) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return length.pack(len(data)) + data


def _read_text(blob: bytes, at: int, length: struct.Struct) -> tuple[str, int]:
    (n,) = length.unpack_from(blob, at)
    start = at + length.size
    if start + n > len(blob):
        raise ValueError("cache record is truncated")
    return blob[start : start + n].decode("utf-8", "surrogatepass"), start + n


class MemoryEntryStore:
    """A dict with the EntryStore interface, for tests and for running without a TieredStore."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}

    def put(self, namespace: str, key: str, value: Any, *, ttl: float | None = None, cost: float = 1.0) -> None:
        self.data[(namespace, key)] = bytes(value)

    def put_many(self, namespace: str, items: Mapping[str, Any], *, ttl: float | None = None) -> None:
        for key, value in items.items():
            self.put(namespace, key, value, ttl=ttl)

    def get(self, namespace: str, key: str, default: Any = None, *, as_: Any = None) -> Any:
        return self.data.get((namespace, key), default)

    def peek(self, namespace: str, key: str) -> Any:
        return self.data.get((namespace, key))

    def delete_many(self, namespace: str, keys: Iterable[str]) -> int:
        return sum(self.data.pop((namespace, k), None) is not None for k in keys)

    def keys(self, namespace: str) -> list[str]:
        return [k for ns, k in self.data if ns == namespace]
