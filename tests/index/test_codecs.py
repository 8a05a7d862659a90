import numpy as np
import pytest

from tiergate.index.csr import CSR, decode_graph, encode_graph, varint_decode, varint_encode
from tiergate.index.pq import pack_codes, train_pq, unpack_codes


def test_varint_roundtrip_including_large_values():
    rng = np.random.default_rng(0)
    v = np.concatenate([[0, 1, 127, 128, 16383, 16384, 2**35], rng.integers(0, 2**40, 500)]).astype(np.uint64)
    assert (varint_decode(varint_encode(v)) == v).all()


def test_varint_truncated_stream_is_an_error():
    data = varint_encode(np.array([300], dtype=np.uint64))
    with pytest.raises(ValueError):
        varint_decode(data[:-1])


def test_graph_roundtrip_and_compactness():
    rng = np.random.default_rng(1)
    n = 2000
    # Local neighbourhoods, as after the breadth-first renumbering.
    lists = [np.unique(np.clip(u + rng.integers(-60, 60, 16), 0, n - 1)) for u in range(n)]
    lists = [v[v != u] for u, v in enumerate(lists)]
    csr = CSR.from_lists(lists)
    degrees, stream = encode_graph(csr)
    back = decode_graph(degrees, stream)
    assert all((a == b).all() for a, b in zip(lists, back.to_lists(), strict=True))
    assert len(stream) / csr.indices.size < 1.2  # about one byte per edge


def test_pq_codes_pack_and_approximate():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for m, nbits in [(16, 4), (8, 8), (5 * 0 + 16, 8)]:
        pq = train_pq(x, m, nbits)
        codes = pq.encode(x)
        assert (unpack_codes(pack_codes(codes, nbits), nbits, m) == codes).all()
        q = x[:20]
        approx = np.stack([pq.lut(q)[i][np.arange(m), codes].sum(1) for i in range(20)])
        exact = q @ x.T
        assert np.corrcoef(approx.ravel(), exact.ravel())[0, 1] > 0.8
        assert pq.codebooks.dtype == np.float32 and np.allclose(pq.codebooks, pq.codebooks.astype(np.float16))
