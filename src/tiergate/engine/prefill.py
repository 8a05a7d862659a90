"""Prefill: fill the KV cache for a prompt plan and return the logits of its last token.

Llama-family models run through the layer-by-layer path (`tiergate.kvstore`), which can take
stored KV for chunks and prefixes; any other model runs HF's own forward with no reuse.
`PrefillResult.cached_tokens` counts the prompt tokens whose KV was reused rather than computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from tiergate.engine.prompt import PromptPlan
from tiergate.kvstore.blend import BlendResult


@dataclass
class PrefillResult:
    logits: torch.Tensor  # (vocab,) for the last prompt token
    cache: Any  # a transformers Cache holding the prompt's KV
    prompt_tokens: int
    cached_tokens: int = 0
    recomputed_tokens: int = 0
    chunks_hit: int = 0
    chunks_missed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def prefill(model: Any, plan: PromptPlan) -> PrefillResult:
    """HF's forward over the whole prompt (models the layer-by-layer path does not support)."""
    ids = torch.tensor([plan.token_ids], device=model.device)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return PrefillResult(out.logits[0, -1], out.past_key_values, prompt_tokens=ids.shape[1])


def cache_from_blend(model: Any, result: BlendResult) -> DynamicCache:
    """A transformers cache holding the blended prompt KV, for decoding with HF's forward."""
    cache = DynamicCache(config=model.config)
    for layer in range(result.keys.shape[0]):
        cache.update(result.keys[layer][None], result.values[layer][None], layer)
    return cache
