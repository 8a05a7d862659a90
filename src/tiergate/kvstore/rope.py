"""Rotary position embedding for reused keys.

Stored keys are pre-RoPE (position-free), so placing a chunk anywhere is one rotation with the
model's own cos/sin at the real positions: the same arithmetic a full prefill does. `delta_rotate`
moves already-rotated keys by a position offset, for callers holding post-RoPE keys.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (..., n, head_dim) by cos/sin of shape broadcastable to it (HF's expression)."""
    return (x * cos) + (rotate_half(x) * sin)


def delta_rotate(k: torch.Tensor, delta: int | torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Keys rotated at position p, moved to p + delta (RoPE rotations compose additively).

    Only for plain RoPE (no attention scaling); computed in float32 and cast back."""
    delta = torch.as_tensor(delta, dtype=torch.float32, device=k.device)
    freqs = delta.reshape(-1, 1) * inv_freq.to(k.device, torch.float32)[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    out = apply_rope(k.float(), emb.cos(), emb.sin())
    return out.to(k.dtype)
