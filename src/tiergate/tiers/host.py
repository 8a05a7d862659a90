"""Host RAM tier: objects kept as native Python/numpy/torch values.

Tensors are copied into page-locked (pinned) memory when CUDA is available, so host→GPU loads
run at the pinned-copy rate and can be asynchronous. The store keeps the values in its index;
this class only decides their in-memory form.
"""

from __future__ import annotations

import torch

from tiergate.tiers.base import TierName
from tiergate.tiers.values import Value, to_host_native


class HostTier:
    name = TierName.HOST

    def __init__(self, budget_bytes: int, *, pin_memory: bool | None = None) -> None:
        self.budget_bytes = int(budget_bytes)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)

    def prepare(self, value: Value) -> Value:
        """A private copy of `value` in host memory (bytes are immutable and kept as they are)."""
        return to_host_native(value, pin_memory=self.pin_memory and isinstance(value, torch.Tensor))

    def alloc(self, nbytes: int) -> torch.Tensor | None:
        """A buffer for reading an object from disk straight into pinned memory (None: bytearray)."""
        if not self.pin_memory:
            return None
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
