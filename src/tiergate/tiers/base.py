"""Shared vocabulary of the store: tier names, value kinds and per-object metadata."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum


class TierName(StrEnum):
    """The tiers, fastest first. Local tiers are gpu, host and disk; redis is shared."""

    GPU = "gpu"
    HOST = "host"
    DISK = "disk"
    REDIS = "redis"


LOCAL_ORDER: tuple[TierName, ...] = (TierName.GPU, TierName.HOST, TierName.DISK)
MEMORY_TIERS: tuple[TierName, ...] = (TierName.GPU, TierName.HOST)


class Kind(StrEnum):
    """How a value is represented: raw bytes, a numpy array or a torch tensor."""

    BYTES = "bytes"
    NUMPY = "numpy"
    TORCH = "torch"


_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,127}$")
MAX_KEY_BYTES = 1024


@functools.lru_cache(maxsize=4096)  # the same few namespaces are checked on every call
def _is_namespace(namespace: str) -> bool:
    return _NAMESPACE_RE.match(namespace) is not None


def check_namespace(namespace: str) -> str:
    """Validate a namespace: 1-128 chars of letters, digits, `_ . - /`, not starting with `/.-`."""
    if not isinstance(namespace, str) or not _is_namespace(namespace):
        raise ValueError(
            f"invalid namespace {namespace!r}: use 1-128 characters from [A-Za-z0-9_.-/], "
            "starting with a letter, digit or underscore"
        )
    return namespace


def check_key(key: str) -> str:
    """Validate a key: a non-empty str of at most 1024 UTF-8 bytes."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid key {key!r}: keys are non-empty strings")
    # a char is at most 4 UTF-8 bytes: only long keys need encoding to be measured
    if len(key) > MAX_KEY_BYTES // 4 and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"key too long ({len(key)} chars): at most {MAX_KEY_BYTES} UTF-8 bytes")
    return key


def namespace_group(namespace: str) -> str:
    """The bounded metrics label of a namespace: its first path segment ('cache/t1' -> 'cache')."""
    return namespace.split("/", 1)[0]


@dataclass(slots=True)
class ObjectMeta:
    """Metadata of one stored object.

    `size` is the payload size in bytes (what memory tiers charge); `cost` is the caller's
    estimate of the cost to recompute the object (any consistent unit, e.g. milliseconds of
    compute), used by the GDSF policy. Times are seconds from the store's clock (wall time by
    default). `expires_at` is None for objects without a TTL.
    """

    namespace: str
    key: str
    size: int
    kind: Kind
    dtype: str
    shape: tuple[int, ...]
    cost: float = 1.0
    created_at: float = 0.0
    accessed_at: float = 0.0
    expires_at: float | None = None
    hits: int = 0
    pins: int = 0
    tier: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at
