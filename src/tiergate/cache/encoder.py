"""A faster path to query embeddings for the cache, with the same vectors as the embedder's.

A cache lookup embeds one short question. On a CPU, all-MiniLM-L6-v2 then spends its time
reading its 90 MB of fp32 weights once per forward pass (memory-bound: about 14 ms for a
ten-token query on one core), plus about 2 ms in sentence-transformers' per-call bookkeeping.
`QueryEncoder` runs the transformer directly (tokenise, forward under `inference_mode`, mean
pool, normalise) on a bfloat16 copy of the weights where the CPU has native bf16 support:
half the bytes to read, and cosines within 1e-4 of the fp32 model's. Batches are sorted by
length, so short queries are not padded to the longest one in the batch.

When the embedder already runs in ONNX Runtime (the default on CPU, see tiergate.embed_onnx),
that is faster than any of this. With `precision="int8"` (the cache's default) the cache then
embeds on a copy of the graph with 8-bit weights, one thread and one query a run: ~2.2 ms of
CPU a query instead of ~5 (one thread) or ~6.7 (two), at cosines within about 0.01 of the fp32
vectors. Every vector the cache compares (stored entries, lookups, the category examples) comes
from this one path, so the shift is the same on both sides; on the labelled pairs of
benchmarks/semcache.py it served as many paraphrases and no more traps.

At start-up it checks itself against the wrapped embedder on a few probe texts; if the model
is not a plain mean-pooled, normalised transformer (or anything else differs), it falls back to
the embedder's own `encode`, so the vectors always match what the rest of the system stores
(within the int8 tolerance, for that mode).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_PROBES = ["How do I reverse a list in Python?", "capital of australia",
           "What is the boiling point of water at sea level in degrees Celsius, and why does it change with altitude?"]
_MIN_AGREEMENT = 0.999
_MIN_INT8_AGREEMENT = 0.97  # measured: 0.988 at worst over 300 labelled questions
_SUB_BATCH = 16


class QueryEncoder:
    """`encode(texts)` -> L2-normalised float32 vectors; wraps an `Embedder` (models.py)."""

    def __init__(self, embedder: Any, *, bf16: bool | None = None, precision: str = "fp32") -> None:
        self.embedder = embedder
        self.precision = precision
        self.dim: int = int(embedder.dim)
        self.tokenizer = getattr(embedder, "tokenizer", None)
        self.mode = "embedder"
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer's settings are not safe to share
        self._model: Any = None
        self._int8: Any = None  # the embedder's int8 ONNX session, in mode "onnx-int8"
        self._max_tokens = int(getattr(embedder, "max_tokens", 256))
        try:
            self._setup(bf16)
        except Exception:  # any model this path does not understand: use the embedder as is
            log.warning("cache: direct query encoding unavailable, using the embedder", exc_info=True)
            self._model, self.mode = None, "embedder"

    def _setup(self, bf16: bool | None) -> None:
        import torch

        if getattr(self.embedder, "runtime", "torch") == "onnx":  # already the fastest exact path
            self.mode = "onnx"
            if self.precision == "int8":
                self._setup_int8()
            return
        st = getattr(self.embedder, "model", None)
        if st is None or self.tokenizer is None or len(st) < 2:
            return
        pooling = getattr(st[1], "pooling_mode_mean_tokens", None)
        if pooling is False:
            return
        transformer = st[0].auto_model
        device = next(transformer.parameters()).device
        dtype = next(transformer.parameters()).dtype
        if bf16 is None:
            bf16 = device.type == "cpu" and dtype == torch.float32 and _cpu_has_bf16()
        if bf16:
            import copy

            transformer = copy.deepcopy(transformer).to(torch.bfloat16)
        self._model = transformer.eval()
        self._device = device
        reference = self.embedder.encode(_PROBES)
        mine = self._encode_direct(_PROBES)
        agreement = float(np.min(np.sum(reference * mine, axis=1)))
        if agreement < _MIN_AGREEMENT:
            log.warning("cache: direct query encoding disagrees with the embedder (%.5f); not used", agreement)
            self._model = None
            return
        self.mode = "bf16" if bf16 else "direct"
        log.info("cache: query encoding %s (agreement with the embedder %.5f)", self.mode, agreement)

    def _setup_int8(self) -> None:
        session = self.embedder.int8_session()
        reference = self.embedder.encode(_PROBES)
        agreement = float(np.min(np.sum(reference * self.embedder.encode_onnx(_PROBES, 4, session), axis=1)))
        if agreement < _MIN_INT8_AGREEMENT:
            log.warning("cache: int8 query encoding disagrees with the embedder (%.4f); fp32 used", agreement)
            return
        self._int8, self.mode = session, "onnx-int8"
        log.info("cache: query encoding onnx-int8 (agreement with the embedder %.4f)", agreement)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._int8 is not None:
            # One query a run: the int8 graph scales activations per run, so a batch-mate would
            # move a query's vector, and the same question could hit in one batch and miss in the next.
            return self.embedder.encode_onnx(texts, 1, self._int8)
        if self._model is None:
            return self.embedder.encode(texts, batch_size=min(batch_size, _SUB_BATCH))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Sub-batches of at most 16 similar lengths: past that, padding costs more than sharing one
        # read of the weights saves (one thread: 383 queries/s at 16, 341 at 32, 308 at 64).
        batch_size = min(batch_size, _SUB_BATCH)
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            out[idx] = self._encode_direct([texts[i] for i in idx])
        return out

    def _encode_direct(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._tokenizer_lock:
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self._max_tokens,
                                   return_tensors="pt")
        batch = {k: v.to(self._device) for k, v in batch.items()}
        # No lock around the forward pass: the weights are only read, so two threads may each run
        # one (with one torch thread each, two batches on two cores nearly double the rate).
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, dim=-1)
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return int(self.embedder.count_tokens(text))


def _cpu_has_bf16() -> bool:
    """Native bf16 matrix multiply (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_SHARED: weakref.WeakKeyDictionary[Any, dict[str, QueryEncoder]] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def query_encoder(embedder: Any, precision: str = "fp32") -> QueryEncoder:
    """The `QueryEncoder` of an embedder: one weight copy per embedder and precision, however many
    caches use it."""
    with _SHARED_LOCK:
        try:
            mine = _SHARED.setdefault(embedder, {})
        except TypeError:  # not weak-referenceable: no sharing
            return QueryEncoder(embedder, precision=precision)
        if precision not in mine:
            mine[precision] = QueryEncoder(embedder, precision=precision)
        return mine[precision]
