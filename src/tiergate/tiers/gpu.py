"""GPU tier: torch tensors in CUDA memory. Only tensors are admitted; bytes and numpy arrays
start in the host tier. Copies from pinned host memory are issued non-blocking on the current
stream, so work queued after a `get` on that stream sees the data."""

from __future__ import annotations

import torch

from tiergate.tiers.base import TierName
from tiergate.tiers.values import Value


class GpuTier:
    name = TierName.GPU

    def __init__(self, budget_bytes: int, *, device: str = "cuda") -> None:
        self.budget_bytes = int(budget_bytes)
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev

    @staticmethod
    def available() -> bool:
        return torch.cuda.is_available()

    def accepts(self, value: Value) -> bool:
        return isinstance(value, torch.Tensor)

    def prepare(self, value: Value) -> torch.Tensor:
        assert isinstance(value, torch.Tensor)
        t = value.detach()
        if t.device == self.device:
            return t.clone()
        non_blocking = t.device.type == "cpu" and t.is_pinned()
        return t.to(self.device, non_blocking=non_blocking, copy=True)

    def to_host(self, value: torch.Tensor, *, pin_memory: bool) -> torch.Tensor:
        out = torch.empty(value.shape, dtype=value.dtype, pin_memory=pin_memory)
        out.copy_(value)
        return out
