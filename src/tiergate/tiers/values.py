"""Values the store holds (bytes, numpy arrays, torch tensors): kinds, sizes, raw views, conversions.

A value's payload is its C-contiguous bytes; dtype and shape travel alongside (see `codec`), so
any kind can be rebuilt as any other: a torch tensor read back `as_="bytes"` gives its raw bytes,
bytes read back `as_="torch"` give a uint8 tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tiergate.tiers.base import Kind

Value = bytes | bytearray | memoryview | np.ndarray | torch.Tensor


def kind_of(value: Any) -> Kind:
    """The kind of a storable value; raises TypeError for anything else."""
    if isinstance(value, torch.Tensor):
        if value.is_sparse or value.is_quantized or value.is_nested:
            raise TypeError("only dense, non-quantized torch tensors can be stored")
        return Kind.TORCH
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("numpy arrays of Python objects cannot be stored")
        return Kind.NUMPY
    if isinstance(value, bytes | bytearray | memoryview):
        return Kind.BYTES
    raise TypeError(f"cannot store a {type(value).__name__}: use bytes, a numpy array or a torch tensor")


def nbytes(value: Value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, memoryview):
        return value.nbytes
    return len(value)


def dtype_name(value: Value) -> str:
    if isinstance(value, torch.Tensor):
        return str(value.dtype).removeprefix("torch.")
    if isinstance(value, np.ndarray):
        return value.dtype.str
    return "uint8"


def shape_of(value: Value) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor | np.ndarray):
        return tuple(int(d) for d in value.shape)
    return (nbytes(value),)


def torch_dtype(name: str) -> torch.dtype:
    """Resolve a dtype name written by `dtype_name` ('float16', 'bfloat16', ...)."""
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return dt


def raw_view(value: Value) -> memoryview:
    """The value's C-contiguous bytes as a flat memoryview; copies only when it must
    (non-contiguous data, or a tensor on a GPU)."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        if t.numel() == 0:
            return memoryview(b"")
        return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        return memoryview(a.reshape(-1).view(np.uint8)).cast("B")
    mv = memoryview(value)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def to_host_native(value: Value, *, pin_memory: bool) -> Value:
    """A private host copy for a memory tier: bytes stay bytes (immutable), numpy arrays are
    copied and made read-only, tensors are copied to CPU (page-locked when `pin_memory`)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, np.ndarray):
        a = np.array(value, copy=True, order="C")
        a.flags.writeable = False
        return a
    t = value.detach()
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin_memory)
    out.copy_(t)
    return out


def from_raw(buf: Any, kind: Kind, dtype: str, shape: tuple[int, ...]) -> Value:
    """Rebuild a value from its raw bytes (a bytes, bytearray, memoryview or uint8 tensor).
    Tensors share `buf` when it is writable; numpy arrays are returned read-only."""
    if kind is Kind.BYTES:
        if isinstance(buf, torch.Tensor):
            return buf.numpy().tobytes()
        return buf if isinstance(buf, bytes) else bytes(buf)
    if kind is Kind.NUMPY:
        arr = buf.numpy() if isinstance(buf, torch.Tensor) else np.frombuffer(buf, dtype=np.uint8)
        a = arr.view(np.dtype(dtype)).reshape(shape)
        a.flags.writeable = False
        return a
    dt = torch_dtype(dtype)
    if isinstance(buf, torch.Tensor):
        flat = buf
    else:
        if isinstance(buf, bytes) or (isinstance(buf, memoryview) and buf.readonly):
            buf = bytearray(buf)
        if len(buf) == 0:
            return torch.empty(shape, dtype=dt)
        flat = torch.frombuffer(buf, dtype=torch.uint8)
    if flat.numel() == 0:
        return torch.empty(shape, dtype=dt)
    return flat.view(dt).reshape(shape)


def convert(value: Value, as_: Kind | str | None, device: str | torch.device | None) -> Value:
    """Return `value` as kind `as_` (None: unchanged) and, for tensors, on `device`
    (None: where it is). Asking for a device implies a tensor."""
    if as_ is None and device is None:
        return value  # the common case, on every get: skip the type checks
    if as_ is None:
        as_ = Kind.TORCH
    kind = kind_of(value)
    target = Kind(as_) if as_ is not None else kind
    if target is kind and (target is not Kind.TORCH or device is None):
        return value
    if target is Kind.TORCH:
        if kind is Kind.TORCH:
            t = value
        elif kind is Kind.NUMPY:
            a = value if value.flags.writeable else value.copy()
            t = torch.from_numpy(a)
        elif device is not None and torch.device(device).type == "cuda":
            # bytes must be copied once anyway (they are read-only): copy them into pinned memory,
            # so that the copy to the GPU runs at the pinned rate, asynchronously. torch's pinned
            # allocator keeps the staging block until that copy has finished.
            t = torch.empty(nbytes(value), dtype=torch.uint8, pin_memory=True)
            np.copyto(t.numpy(), np.frombuffer(raw_view(value), dtype=np.uint8))
        else:
            t = from_raw(value, Kind.TORCH, "uint8", (nbytes(value),))
        if device is not None and t.device != torch.device(device):
            non_blocking = t.device.type == "cpu" and t.is_pinned()
            t = t.to(device, non_blocking=non_blocking)
        return t
    if kind is Kind.TORCH and target is Kind.NUMPY:
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            raise TypeError("bfloat16 tensors have no numpy dtype; ask for as_='torch' or 'bytes'")
        a = t.numpy()
        a.flags.writeable = False
        return a
    if target is Kind.BYTES:
        return raw_view(value).tobytes()
    # bytes -> numpy
    return from_raw(value, Kind.NUMPY, "|u1", (nbytes(value),))
