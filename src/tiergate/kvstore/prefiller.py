"""One request's prefill with KV reuse: look up, decide, blend, then store what was missing.

Missed chunks are computed in context like any other token (so a cold request costs what a
full prefill costs) and their context-free KV is computed and stored afterwards, off the
path to the first token (`populate`). Prefix blocks are stored from the prefill's own exact KV.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tiergate.kvstore.blend import BlendResult, Span, blend_prefill, compute_span_kv
from tiergate.kvstore.codec import KVFormat
from tiergate.kvstore.config import KVConfig, KVOptions
from tiergate.kvstore.keys import chunk_key, prefix_block_keys, tokenizer_fingerprint
from tiergate.kvstore.model import LayerModel
from tiergate.kvstore.store import KVStore

log = logging.getLogger(__name__)


@dataclass
class PendingWrites:
    """KV to store once the request is done."""

    chunks: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, context, ids
    blocks: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # key, (L,2,H,B,D)

    def __bool__(self) -> bool:
        return bool(self.chunks or self.blocks)


@dataclass
class Prefilled:
    result: BlendResult
    prompt_tokens: int
    cached_tokens: int
    seconds: float
    chunks_hit: int = 0
    chunks_missed: int = 0
    pending: PendingWrites = field(default_factory=PendingWrites)


class KVPrefiller:
    """Prefill for one model, with an optional shared `KVStore`."""

    def __init__(self, lm: LayerModel, tokenizer: Any, model_id: str, store: KVStore | None,
                 sink_ids: tuple[int, ...] = ()) -> None:
        self.lm = lm
        self.store = store
        self.config = store.config if store is not None else KVConfig(enabled=False)
        self.model_id = model_id
        self.tokenizer_fp = tokenizer_fingerprint(tokenizer)
        dtype = lm.dtype if self.config.store_dtype == "auto" else getattr(torch, self.config.store_dtype)
        s = lm.shape
        self.fmt = KVFormat(s.layers, s.kv_heads, s.head_dim, dtype, self.config.compression)
        self.sink_ids = tuple(sink_ids)
        self._reference_deviation: float | None = None

    def context_ids(self, plan: Any) -> tuple[int, ...]:
        """The tokens a chunk's KV is computed after, for this request (see KVConfig.chunk_context)."""
        mode = self.config.chunk_context
        if mode == "prefix" and plan.segments and plan.segments[0].kind == "prefix":
            return tuple(plan.segments[0].token_ids)
        return self.sink_ids if mode in ("sink", "prefix") else ()

    def chunk_key(self, token_ids: tuple[int, ...] | list[int], context: tuple[int, ...] = (),
                  namespace: str = "") -> str:
        return chunk_key(self.model_id, self.tokenizer_fp, self.fmt.name, context, token_ids, namespace)

    def prefill(self, plan: Any, options: KVOptions | None = None) -> Prefilled:
        opts = options or KVOptions()
        cfg = self.config
        ids = plan.token_ids
        n = len(ids)
        ratio = cfg.recompute_ratio if opts.recompute_ratio is None else float(opts.recompute_ratio)
        adaptive = cfg.adaptive if opts.adaptive is None else opts.adaptive
        store = self.store if (self.store is not None and cfg.enabled and opts.enabled) else None
        stats = self.store.stats if self.store is not None else None
        layers = self.lm.shape.layers
        spans: list[Span] = []
        pending = PendingWrites()
        hit = missed = 0
        t0 = time.perf_counter()

        chunk_segs = [(seg, pos) for seg, pos in plan.spans() if seg.kind == "chunk" and seg.token_ids]
        chunks_on = store is not None and opts.chunks and ratio < 1.0 and bool(chunk_segs)
        # Prefix reuse covers what precedes the first chunk (all of it when chunks are not reused).
        prefix_limit = chunk_segs[0][1] if (chunk_segs and opts.chunks) else n
        prefix_limit = min(prefix_limit, n - 1)  # the last token always runs: it gives the logits
        block = cfg.prefix_block_tokens
        block_keys: list[str] = []
        prefix_hit = 0
        if store is not None and cfg.prefix_cache and opts.prefix:
            block_keys = list(prefix_block_keys(self.model_id, self.tokenizer_fp, self.fmt.name,
                                                ids[:prefix_limit], block, opts.namespace))
            for i, key in enumerate(block_keys):
                loc = store.locate(key)
                kv = store.load(key, loc.tier, self.fmt, block, self.lm.dtype) if loc.tier else None
                if kv is None:
                    stats.add(prefix_block_misses=1)
                    break
                stats.add_tier("prefix_block_hits", loc.tier or "unknown")
                spans.append(Span(i * block, kv.to(self.lm.device), exact=True))
                prefix_hit = (i + 1) * block

        if chunks_on:
            context = self.context_ids(plan)
            computed_layers = min(cfg.full_layers, layers) + ratio * layers
            for j, (seg, pos) in enumerate(chunk_segs):
                m = len(seg.token_ids)
                if m < cfg.min_chunk_tokens or pos < prefix_hit:
                    continue
                key = self.chunk_key(seg.token_ids, context, opts.namespace)
                loc = store.locate(key)
                if loc.tier is None:
                    missed += 1
                    stats.add(chunk_misses=1)
                    pending.chunks.append((key, context, seg.token_ids))
                    continue
                if cfg.decide_load and not store.costs.should_load(
                    loc.tier, self.fmt.bytes_per_token() * m, m, layers, computed_layers
                ):
                    stats.add_tier("chunk_skipped", loc.tier)
                    continue
                kv = store.load(key, loc.tier, self.fmt, m, self.lm.dtype)
                if kv is None:
                    missed += 1
                    stats.add(chunk_misses=1)
                    pending.chunks.append((key, context, seg.token_ids))
                    continue
                hit += 1
                stats.add_tier("chunk_hits", loc.tier)
                spans.append(Span(pos, kv, exact=False, chunk=j))

        approx_tokens = sum(s.n for s in spans if not s.exact)
        if approx_tokens:
            exact = sum(s.n for s in spans if s.exact)
            fresh = n - exact - approx_tokens
            blend_layers = fresh * layers + approx_tokens * min(layers, cfg.full_layers + 1 + ratio * layers)
            if not store.costs.blend_pays((n - exact) * layers, blend_layers, n * layers):
                stats.add(blends_skipped=1)
                spans = [s for s in spans if s.exact]
        t_blend = time.perf_counter()
        result = blend_prefill(
            self.lm, ids, spans, ratio=ratio, full_layers=cfg.full_layers, adaptive=adaptive,
            reference_deviation=self._reference_deviation, selection=cfg.selection, head_tokens=cfg.head_tokens,
        )
        if result.chunk_deviation:
            mean = sum(result.chunk_deviation.values()) / len(result.chunk_deviation)
            ref = self._reference_deviation
            self._reference_deviation = mean if ref is None else 0.9 * ref + 0.1 * mean
        if self.lm.device.type == "cuda":
            torch.cuda.synchronize(self.lm.device)
        seconds = time.perf_counter() - t0
        compute_seconds = time.perf_counter() - t_blend  # excludes loads from slow tiers

        if not opts.store:
            pending = PendingWrites()
        elif store is not None:
            # Blocks are exact up to the first approximated token.
            approx = [s.start for s in spans if not s.exact]
            exact_limit = min([*approx, prefix_limit]) if chunks_on else prefix_limit
            for i in range(prefix_hit // block, exact_limit // block):
                s, e = i * block, (i + 1) * block
                kv = torch.stack((result.keys_pre[:, :, s:e], result.values[:, :, s:e]), dim=1)
                pending.blocks.append((block_keys[i], kv))
        if self.store is not None and not spans:
            # Calibrate compute speed on prefills that reused nothing (KV off too): a blend's time
            # also holds the copies of the spans it reuses, and would make recomputing look dearer.
            self.store.costs.observe_prefill(result.token_layers, compute_seconds)
        elif self.store is not None and not all(s.exact for s in spans):
            self.store.costs.observe_blend(result.token_layers, n * layers, compute_seconds)
        if store is not None:
            costs = store.costs
            full_estimate = costs.saved_seconds(n, layers, 0.0)
            stats.add(
                requests=1, tokens_prompt=n, tokens_reused=result.reused,
                tokens_recomputed=result.recomputed, tokens_computed=result.computed, prefill_seconds=seconds,
                ttft_saved_seconds=max(0.0, full_estimate - seconds) if full_estimate else 0.0,
            )
        return Prefilled(result, n, result.reused, seconds, hit, missed, pending)

    def warm(self, plan: Any, namespace: str = "") -> int:
        """Compute and store the KV of every chunk of `plan` not stored yet; returns how many."""
        if self.store is None:
            return 0
        context = self.context_ids(plan)
        pending = PendingWrites(chunks=[
            (self.chunk_key(seg.token_ids, context, namespace), context, seg.token_ids) for seg, _ in plan.spans()
            if seg.kind == "chunk" and len(seg.token_ids) >= self.config.min_chunk_tokens
        ])
        before = self.store.stats.as_dict()["chunks_stored"]
        self.populate(pending)
        return int(self.store.stats.as_dict()["chunks_stored"] - before)

    def populate(self, pending: PendingWrites) -> None:
        """Compute and store the context-free KV of missed chunks, and the new prefix blocks."""
        store = self.store
        if store is None or not pending:
            return
        t0 = time.perf_counter()
        for key, kv in pending.blocks:
            if store.save(key, kv, self.fmt):
                store.stats.add(prefix_blocks_stored=1)
        done: set[str] = set()
        for key, context, token_ids in pending.chunks:
            if key in done or store.locate(key).tier is not None:  # repeated, or another worker won
                continue
            t1 = time.perf_counter()
            kv = compute_span_kv(self.lm, list(context), list(token_ids))
            if self.lm.device.type == "cuda":
                torch.cuda.synchronize(self.lm.device)
            seconds = time.perf_counter() - t1
            # a plain forward of the chunk: what not loading it would cost, per token-layer
            store.costs.observe_prefill((len(context) + len(token_ids)) * self.lm.shape.layers, seconds)
            if store.save(key, kv, self.fmt, cost=1e3 * seconds):
                store.stats.add(chunks_stored=1)
            done.add(key)
        store.stats.add(populate_seconds=time.perf_counter() - t0)
