"""A Llama-family decoder driven layer by layer.

Prefill with reused KV needs control HF's `forward` does not give: inject stored K/V per layer,
run attention for a subset of query tokens at arbitrary positions, and read keys *before* RoPE
(stored that way, they are position-free). This class exposes the pieces of one decoder layer
for Llama, Mistral, Qwen2 and Qwen3 style models (embed_tokens, layers with
self_attn.{q,k,v,o}_proj [+ q_norm/k_norm], norm, lm_head, rotary_emb) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class UnsupportedModelError(ValueError):
    """The model is not a Llama-family decoder this engine can drive layer by layer."""


@dataclass(frozen=True)
class Shape:
    layers: int
    kv_heads: int
    head_dim: int
    q_heads: int

    def kv_elements_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim


class LayerModel:
    """The decoder's parts, with attention over injected keys and values."""

    def __init__(self, model: Any) -> None:
        cfg = model.config
        if getattr(cfg, "model_type", None) not in SUPPORTED_TYPES:
            raise UnsupportedModelError(f"model type {getattr(cfg, 'model_type', None)!r} is not supported")
        base = getattr(model, "model", None)
        try:
            self.embed = base.embed_tokens
            self.layers = list(base.layers)
            self.norm = base.norm
            self.rotary = base.rotary_emb
            self.lm_head = model.lm_head
            attn0 = self.layers[0].self_attn
            attn0.q_proj, attn0.k_proj, attn0.v_proj, attn0.o_proj  # noqa: B018 - presence check
        except AttributeError as exc:
            raise UnsupportedModelError(f"unexpected module layout: {exc}") from exc
        self.model = model
        self.config = cfg
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.shape = Shape(len(self.layers), cfg.num_key_value_heads, head_dim, cfg.num_attention_heads)
        self.scaling = float(getattr(attn0, "scaling", head_dim**-0.5))
        self.windows = _sliding_windows(cfg, len(self.layers))
        self.device = next(model.parameters()).device
        self.dtype = self.embed.weight.dtype

    # rotary ------------------------------------------------------------------
    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for `positions` (n,), shaped (1, 1, n, head_dim) to broadcast over heads."""
        cos, sin = self.rotary(self.embed.weight[:1], positions[None])
        return cos[:, None], sin[:, None]

    # one layer, in pieces ----------------------------------------------------
    def qkv(self, layer: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pre-RoPE q (1,Hq,n,D), k (1,Hkv,n,D) and v (1,Hkv,n,D) of hidden states (1,n,d)."""
        blk = self.layers[layer]
        attn = blk.self_attn
        x = blk.input_layernorm(hidden)
        n, d = x.shape[1], self.shape.head_dim
        q = attn.q_proj(x).view(1, n, -1, d)
        k = attn.k_proj(x).view(1, n, -1, d)
        v = attn.v_proj(x).view(1, n, -1, d)
        if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over the head dim before RoPE
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        q_pos: torch.Tensor | None, k_len: int,
    ) -> torch.Tensor:
        """Attention of post-RoPE queries over post-RoPE keys 0..k_len-1; (1,n,Hq*D).

        `q_pos` None means the queries are all k_len tokens in order (plain causal)."""
        window = self.windows[layer]
        if q_pos is None and window is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=True)
        else:
            if q_pos is None:
                q_pos = torch.arange(k_len, device=q.device)
            kp = torch.arange(k_len, device=q.device)
            mask = kp[None, :] <= q_pos[:, None]
            if window is not None:
                mask &= kp[None, :] > q_pos[:, None] - window
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask[None, None], scale=self.scaling, enable_gqa=True
            )
        return out.transpose(1, 2).reshape(1, q.shape[2], -1)

    def finish(self, layer: int, hidden: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        blk = self.layers[layer]
        h = hidden + blk.self_attn.o_proj(attn_out)
        return h + blk.mlp(blk.post_attention_layernorm(h))

    def logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """Logits (vocab,) of one hidden state (1,1,d)."""
        return self.lm_head(self.norm(hidden_last))[0, -1]


def _sliding_windows(cfg: Any, n_layers: int) -> list[int | None]:
    window = getattr(cfg, "sliding_window", None)
    if not window:
        return [None] * n_layers
    types = getattr(cfg, "layer_types", None)
    if types:
        return [window if t == "sliding_attention" else None for t in types]
    if getattr(cfg, "use_sliding_window", True) is False:
        return [None] * n_layers
    return [window] * n_layers
