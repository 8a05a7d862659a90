"""Cache entries and how they sit in the tiered store.

One namespace per tenant (`<prefix>/t-<digest of tenant>`), two objects per entry:

    m/<id>   the entry's metadata (JSON) followed by its fp16 query embedding: small, read at
             start-up to rebuild the in-memory index
    p/<id>   the response payload, opaque bytes, read only on a hit

A registry object (`<prefix>` / `tenants`) lists the tenant namespaces so a restart can find
them. The store can be `tiergate.tiers.TieredStore` or anything with the same five methods.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson


class EntryStore(Protocol):
    """The part of TieredStore the cache uses."""

    def put(self, namespace: str, key: str, value: Any, *, ttl: float | None = None, cost: float = 1.0) -> None: ...
    def get(self, namespace: str, key: str, default: Any = None, *, as_: Any = None) -> Any: ...
    def delete(self, namespace: str, key: str) -> bool: ...
    def keys(self, namespace: str) -> list[str]: ...


def tenant_namespace(prefix: str, tenant: str) -> str:
    """Tenant names are free-form; namespaces are not, so a digest names the namespace."""
    return f"{prefix}/t-{hashlib.blake2b(tenant.encode(), digest_size=10).hexdigest()}"


@dataclass(slots=True)
class Entry:
    """What the cache keeps in memory per entry (the payload and embedding live elsewhere)."""

    label: int
    tenant: str
    category: str
    model: str
    setting: int  # 63-bit setting key
    context: int  # 63-bit context key
    query: str
    history: int  # number of earlier user turns
    created_at: float
    expires_at: float | None
    size: int  # payload bytes
    hit_at: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.label:016x}"

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


_HEAD = struct.Struct("<I")


def encode_meta(entry: Entry, vector: np.ndarray, history: tuple[str, ...], extra: dict[str, Any]) -> bytes:
    meta = {
        "tenant": entry.tenant, "category": entry.category, "model": entry.model,
        "setting": entry.setting, "context": entry.context, "query": entry.query, "history": list(history),
        "created_at": entry.created_at, "expires_at": entry.expires_at, "size": entry.size, **extra,
    }
    body = orjson.dumps(meta)
    return _HEAD.pack(len(body)) + body + np.asarray(vector, dtype=np.float16).tobytes()


def decode_meta(label: int, blob: bytes) -> tuple[Entry, np.ndarray, dict[str, Any]]:
    (n,) = _HEAD.unpack_from(blob, 0)
    meta = orjson.loads(blob[4: 4 + n])
    vector = np.frombuffer(blob[4 + n:], dtype=np.float16).astype(np.float32)
    entry = Entry(
        label=label, tenant=meta["tenant"], category=meta["category"], model=meta["model"],
        setting=int(meta["setting"]), context=int(meta["context"]), query=meta["query"],
        history=len(meta.get("history", [])), created_at=float(meta["created_at"]),
        expires_at=meta["expires_at"], size=int(meta["size"]),
    )
    return entry, vector, meta


class MemoryEntryStore:
    """A dict with the EntryStore interface, for tests and for running without a TieredStore."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}

    def put(self, namespace: str, key: str, value: Any, *, ttl: float | None = None, cost: float = 1.0) -> None:
        self.data[(namespace, key)] = bytes(value)

    def get(self, namespace: str, key: str, default: Any = None, *, as_: Any = None) -> Any:
        return self.data.get((namespace, key), default)

    def delete(self, namespace: str, key: str) -> bool:
        return self.data.pop((namespace, key), None) is not None

    def keys(self, namespace: str) -> list[str]:
        return [k for ns, k in self.data if ns == namespace]
