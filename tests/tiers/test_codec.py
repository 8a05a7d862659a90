from __future__ import annotations

import numpy as np
import pytest
import torch

from tiergate.tiers import codec
from tiergate.tiers.base import Kind, ObjectMeta
from tiergate.tiers.errors import CorruptObjectError
from tiergate.tiers.values import convert, dtype_name, kind_of, nbytes, shape_of


def meta_for(value, ns: str = "ns", key: str = "k") -> ObjectMeta:
    return ObjectMeta(
        ns,
        key,
        nbytes(value),
        kind_of(value),
        dtype_name(value),
        shape_of(value),
        cost=2.5,
        created_at=10.0,
        expires_at=20.0,
    )


VALUES = [
    b"hello world",
    b"",
    bytes(range(256)) * 9000,  # > 2 blocks
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.zeros((0, 3), dtype=np.int64),
    np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
    torch.randn(2, 3, 4, dtype=torch.float16),
    torch.randn(5, 7, dtype=torch.bfloat16),
    torch.tensor(3.5),
    torch.arange(10)[::2],  # non-contiguous
    torch.empty(0, 4),
]


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bytes(a) == bytes(b)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_roundtrip(value) -> None:
    blob = codec.dumps(value, meta_for(value))
    header, out = codec.loads(blob)
    assert same(value, out)
    assert header.cost == 2.5 and header.expires_at == 20.0
    assert (header.namespace, header.key) == ("ns", "k")


def test_any_flipped_byte_or_truncation_is_detected() -> None:
    value = np.arange(300_000, dtype=np.int32)
    blob = bytearray(codec.dumps(value, meta_for(value)))
    for pos in (2, 14, 40, len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(CorruptObjectError):
            codec.loads(bytes(bad))
    for cut in (5, 30, len(blob) - 1):
        with pytest.raises(CorruptObjectError):
            codec.loads(bytes(blob[:cut]))


def test_convert_between_kinds() -> None:
    t = torch.arange(6, dtype=torch.int16).reshape(2, 3)
    raw = convert(t, "bytes", None)
    assert raw == t.numpy().tobytes()
    a = convert(t, "numpy", None)
    assert a.dtype == np.int16 and a.shape == (2, 3) and not a.flags.writeable
    b = convert(b"\x01\x02", "torch", None)
    assert b.dtype == torch.uint8 and b.tolist() == [1, 2]
    n = convert(np.ones(3, dtype=np.float32), "torch", "cpu")
    assert isinstance(n, torch.Tensor) and n.tolist() == [1.0, 1.0, 1.0]
    assert kind_of(convert(b"ab", "numpy", None)) is Kind.NUMPY


def test_unsupported_values_are_rejected() -> None:
    with pytest.raises(TypeError):
        kind_of("a string")
    with pytest.raises(TypeError):
        kind_of(np.array([object()]))


def test_new_objects_carry_xxh3_block_checksums() -> None:
    value = bytes(range(256)) * 9000
    header = codec.parse_header(codec.dumps(value, meta_for(value)))
    assert header.algo == "xxh3_64" and len(header.sums) == 3


@pytest.mark.parametrize("value", VALUES[2:4] + VALUES[6:8], ids=lambda v: type(v).__name__)
def test_old_crc32_format_is_still_read_and_checked(value, monkeypatch) -> None:
    monkeypatch.setattr(codec, "WRITE_SUM", "crc32")
    blob = codec.dumps(value, meta_for(value))
    monkeypatch.undo()
    assert blob[:4] == b"TGO1"
    header, out = codec.loads(blob)
    assert header.algo == "crc32" and same(value, out)
    bad = bytearray(blob)
    bad[-1] ^= 0x01
    with pytest.raises(CorruptObjectError, match="checksum"):
        codec.loads(bytes(bad))


def test_xxh3_objects_without_xxhash_are_corrupt_not_a_crash(monkeypatch) -> None:
    blob = codec.dumps(b"payload", meta_for(b"payload"))
    monkeypatch.setattr(codec, "SUMS", {"crc32": codec.SUMS["crc32"]})
    with pytest.raises(CorruptObjectError, match="xxhash"):
        codec.loads(blob)
