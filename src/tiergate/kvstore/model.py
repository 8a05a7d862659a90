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
_QUERY_GROUP = 256  # queries per masked attention call (see LayerModel.attend)
_CUDA_LENGTH_STEP = 256  # attention lengths on CUDA are padded to a multiple of this
_MASK_COST = 1.2  # a masked key score costs about this many causal (flash) ones, measured on CPU


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
        q_pos: torch.Tensor | None, k_len: int, groups: list[int] | None = None,
    ) -> torch.Tensor:
        """Attention of post-RoPE queries over post-RoPE keys 0..k_len-1; (1,n,Hq*D).

        `q_pos` None means the queries are all k_len tokens in order (plain causal); otherwise
        the queries' positions, ascending. `groups` is `query_groups(q_pos)`, when the caller
        has it: it reads positions on the host (a device sync on CUDA, where the masked path
        is only taken for sliding windows)."""
        window = self.windows[layer]
        if q_pos is None and window is None:
            return self._causal(q, k, v).transpose(1, 2).reshape(1, q.shape[2], -1)
        if q_pos is None:
            q_pos = torch.arange(k_len, device=q.device)
        n = q.shape[2]
        if groups is None and not (window is None and q.is_cuda):  # CUDA goes dense, below
            groups = query_groups(q_pos)
        if window is None and (q.is_cuda or _MASK_COST * _QUERY_GROUP * sum(groups) > k_len * k_len / 2):
            # Causal attention over all positions, the rows of tokens not computed left at zero.
            # On CUDA this beats every masked kernel (measured on H100: a mask costs about as
            # much as causal attention over all rows); on the CPU, when the queries are dense.
            full = q.new_zeros(1, q.shape[1], k_len, q.shape[3])
            full[:, :, q_pos] = q
            out = self._causal(full, k, v)
            return out[:, :, q_pos].transpose(1, 2).reshape(1, n, -1)
        # A mask makes SDPA score every key it is given. Queries go in groups (they are in
        # position order), each against the keys up to its last position only.
        parts = []
        for g, last in enumerate(groups):
            qp = q_pos[g * _QUERY_GROUP : (g + 1) * _QUERY_GROUP]
            kp = torch.arange(last + 1, device=q.device)
            mask = kp[None, :] <= qp[:, None]
            if window is not None:
                mask &= kp[None, :] > qp[:, None] - window
            parts.append(F.scaled_dot_product_attention(
                q[:, :, g * _QUERY_GROUP : (g + 1) * _QUERY_GROUP], k[:, :, : last + 1], v[:, :, : last + 1],
                attn_mask=mask[None, None], scale=self.scaling, enable_gqa=True,
            ))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
        return out.transpose(1, 2).reshape(1, n, -1)

    def _causal(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """Causal attention, q, k and v all (1, H, n, D), the length padded to a multiple of
        `step`: by default `_CUDA_LENGTH_STEP` on CUDA, where cuDNN's kernel builds a plan for
        every new shape (~70 ms on H100) and prompt lengths change on every request. The padded
        keys come after every real query, so causality masks them."""
        n = q.shape[2]
        step = step or (_CUDA_LENGTH_STEP if q.is_cuda else 1)
        pad = -n % step
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=True)
        return out[:, :, :n] if pad else out

    def finish(self, layer: int, hidden: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        blk = self.layers[layer]
        h = hidden + blk.self_attn.o_proj(attn_out)
        return h + blk.mlp(blk.post_attention_layernorm(h))

    def logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """Logits (vocab,) of one hidden state (1,1,d)."""
        return self.lm_head(self.norm(hidden_last))[0, -1]


def query_groups(q_pos: torch.Tensor) -> list[int]:
    """The last position of each group of `_QUERY_GROUP` queries, for `LayerModel.attend`."""
    bounds = q_pos[_QUERY_GROUP - 1 :: _QUERY_GROUP].tolist()
    if q_pos.numel() % _QUERY_GROUP:
        bounds.append(int(q_pos[-1]))
    return bounds


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
