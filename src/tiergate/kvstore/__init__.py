"""Chunk-level KV cache: stable keys, RoPE re-rotation, selective-recompute blending, tiered storage.

    store = KVStore(TieredStore(settings.tiers), settings.kv)
    engine = Engine(generator, kv_store=store)
"""

from tiergate.kvstore.blend import BlendResult, Span, blend_prefill, compute_span_kv
from tiergate.kvstore.codec import BadKVError, KVFormat
from tiergate.kvstore.config import KVConfig, KVOptions
from tiergate.kvstore.decide import CostModel
from tiergate.kvstore.keys import chunk_key, prefix_block_keys, tokenizer_fingerprint
from tiergate.kvstore.model import LayerModel, UnsupportedModelError
from tiergate.kvstore.prefiller import KVPrefiller
from tiergate.kvstore.stats import KVStats, KVStatsCollector
from tiergate.kvstore.store import KVStore

__all__ = [
    "BadKVError", "BlendResult", "CostModel", "KVConfig", "KVFormat", "KVOptions", "KVPrefiller", "KVStats",
    "KVStatsCollector", "KVStore", "LayerModel", "Span", "UnsupportedModelError", "blend_prefill", "chunk_key",
    "compute_span_kv", "prefix_block_keys", "tokenizer_fingerprint",
]
