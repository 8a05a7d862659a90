"""The stored form of a span's KV: one tensor per object.

Layout (layers, 2, kv_heads, tokens, head_dim) with keys pre-RoPE; `int8` packs absmax-quantised
values (one fp16 scale per layer, k/v, head and token) followed by the scales into a flat uint8
tensor. Decoding checks the shape and dtype it expects, so a stored object of the wrong model,
length or format can never be used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class BadKVError(ValueError):
    """A stored object does not have the shape or format expected for this key."""


@dataclass(frozen=True)
class KVFormat:
    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    compression: str = "none"

    @property
    def name(self) -> str:
        dt = str(self.dtype).removeprefix("torch.")
        return f"L{self.layers}H{self.kv_heads}D{self.head_dim}-{dt}-{self.compression}"

    def shape(self, tokens: int) -> tuple[int, ...]:
        return (self.layers, 2, self.kv_heads, tokens, self.head_dim)

    def bytes_per_token(self) -> int:
        n = self.layers * 2 * self.kv_heads * self.head_dim
        if self.compression == "int8":
            return n + self.layers * 2 * self.kv_heads * 2
        return n * torch.empty((), dtype=self.dtype).element_size()

    def encode(self, kv: torch.Tensor) -> torch.Tensor:
        """(L, 2, H, n, D) in any float dtype -> the stored tensor (on the same device)."""
        if self.compression == "none":
            return kv.to(self.dtype).contiguous()
        scale = kv.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-8) / 127.0
        q = torch.round(kv.float() / scale).clamp_(-127, 127).to(torch.int8)
        return torch.cat((q.reshape(-1).view(torch.uint8), scale.half().reshape(-1).view(torch.uint8)))

    def decode(self, stored: torch.Tensor, tokens: int, dtype: torch.dtype) -> torch.Tensor:
        shape = self.shape(tokens)
        if not isinstance(stored, torch.Tensor):
            raise BadKVError(f"stored KV is a {type(stored).__name__}, not a tensor")
        if self.compression == "none":
            if tuple(stored.shape) != shape or stored.dtype != self.dtype:
                raise BadKVError(f"stored KV has shape {tuple(stored.shape)} {stored.dtype}, expected {shape}")
            return stored if stored.dtype == dtype else stored.to(dtype)
        n = self.layers * 2 * self.kv_heads * tokens * self.head_dim
        n_scales = n // self.head_dim
        if stored.dtype != torch.uint8 or stored.dim() != 1 or stored.numel() != n + 2 * n_scales:
            raise BadKVError(f"stored int8 KV has {stored.numel()} bytes, expected {n + 2 * n_scales}")
        q = stored[:n].view(torch.int8).reshape(shape)
        scale = stored[n:].view(torch.float16).reshape(*shape[:-1], 1)
        return (q.to(torch.float32) * scale.float()).to(dtype)
