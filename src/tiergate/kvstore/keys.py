"""Stable content keys for chunk and prefix KV.

Keys must be identical across processes, machines and restarts, so they hash bytes that
only depend on content: the namespace (the tenant: KV is never shared across tenants, since a
fast answer would tell one tenant what text another has sent), the model id (name@weights
fingerprint), a fingerprint of the tokenizer, the storage format, the context the chunk was
computed in, and the token ids as little-endian uint32. Never Python's `hash()`, which is salted
per process.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

_VERSION = b"tiergate-kv-v1"


def _ids_bytes(ids: Sequence[int]) -> bytes:
    a = array("I", ids)
    if a.itemsize != 4:  # pragma: no cover - every supported platform has 32-bit unsigned int
        a = array("L", ids)
    if array("I", [1]).tobytes()[0] != 1:  # pragma: no cover - big endian
        a.byteswap()
    return a.tobytes()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the tokenizer's full definition (vocabulary, merges, special tokens)."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(getattr(tokenizer, "all_special_tokens", []), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _base(model_id: str, tokenizer_fp: str, fmt: str, namespace: str) -> hashlib._Hash:
    h = hashlib.sha256(_VERSION)
    for part in (namespace, model_id, tokenizer_fp, fmt):
        h.update(b"\x00" + part.encode())
    return h


def chunk_key(
    model_id: str, tokenizer_fp: str, fmt: str, context_ids: Sequence[int], token_ids: Sequence[int],
    namespace: str = "",
) -> str:
    """Key of a chunk's KV computed after `context_ids` (the fixed sink, or nothing)."""
    h = _base(model_id, tokenizer_fp, fmt, namespace)
    h.update(b"\x00chunk")
    h.update(len(context_ids).to_bytes(4, "little") + _ids_bytes(context_ids))
    h.update(_ids_bytes(token_ids))
    return f"chunk/{model_id}/{h.hexdigest()}"


def prefix_block_keys(
    model_id: str, tokenizer_fp: str, fmt: str, token_ids: Sequence[int], block: int, namespace: str = ""
) -> Iterator[str]:
    """Keys of the full blocks of a prompt prefix, each chained to everything before it."""
    h = _base(model_id, tokenizer_fp, fmt, namespace)
    h.update(b"\x00prefix" + block.to_bytes(4, "little"))
    digest = h.digest()
    for start in range(0, len(token_ids) - block + 1, block):
        digest = hashlib.sha256(digest + _ids_bytes(token_ids[start : start + block])).digest()
        yield f"prefix/{model_id}/{digest.hex()}"
