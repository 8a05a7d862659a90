"""Prefill: fill the KV cache for a prompt plan and return the logits of its last token.

The plan arrives as segments so that precomputed KV can stand in for some of them; this
module computes every segment, in one forward pass. `PrefillResult.cached_tokens` counts the
prompt tokens whose KV was reused rather than computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from tiergate.engine.prompt import PromptPlan


@dataclass
class PrefillResult:
    logits: torch.Tensor  # (vocab,) for the last prompt token
    cache: Any  # a transformers Cache holding the prompt's KV
    prompt_tokens: int
    cached_tokens: int = 0


def prefill(model: Any, plan: PromptPlan) -> PrefillResult:
    ids = torch.tensor([plan.token_ids], device=model.device)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return PrefillResult(out.logits[0, -1], out.past_key_values, prompt_tokens=ids.shape[1])
