"""Product quantisation in numpy: small codes for approximate inner products during traversal.

Codebooks are trained with a seeded k-means per subspace and stored as float16; codes take 4 or
8 bits per subspace (4-bit codes are packed two to a byte on disk). A query is turned into a
lookup table once (asymmetric distance computation) and a node's approximate score is then the sum
of m table entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PQ:
    codebooks: np.ndarray  # (m, ksub, dsub) float32, values exactly representable in float16
    nbits: int

    @property
    def m(self) -> int:
        return self.codebooks.shape[0]

    @property
    def ksub(self) -> int:
        return self.codebooks.shape[1]

    @property
    def dsub(self) -> int:
        return self.codebooks.shape[2]

    @property
    def dim(self) -> int:
        return self.m * self.dsub

    @property
    def code_bytes(self) -> int:
        return (self.m * self.nbits + 7) // 8

    def encode(self, x: np.ndarray, block: int = 32768) -> np.ndarray:
        n = x.shape[0]
        codes = np.empty((n, self.m), dtype=np.uint8)
        c_norms = (self.codebooks**2).sum(-1)  # (m, ksub)
        for s in range(0, n, block):
            xb = np.asarray(x[s : s + block], dtype=np.float32).reshape(-1, self.m, self.dsub)
            for j in range(self.m):
                d = c_norms[j][None, :] - 2.0 * (xb[:, j, :] @ self.codebooks[j].T)
                codes[s : s + block, j] = d.argmin(1)
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        out = self.codebooks[np.arange(self.m)[None, :], codes.astype(np.intp)]  # (n, m, dsub)
        return out.reshape(len(codes), self.dim)

    def lut(self, queries: np.ndarray) -> np.ndarray:
        """Inner-product tables, (nq, m, ksub) for (nq, dim) queries."""
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.m, self.dsub)
        return np.einsum("qmd,mkd->qmk", q, self.codebooks, optimize=True)


def choose_m(dim: int, code_bytes: int, nbits: int) -> int:
    """The largest divisor of dim giving at most code_bytes bytes per code."""
    want = max(1, code_bytes * 8 // nbits)
    divisors = [m for m in range(1, dim + 1) if dim % m == 0 and m <= want]
    return max(divisors)


def kmeans_subspaces(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Independent k-means in every subspace at once: x is (m, n, dsub), returns (m, k, dsub)."""
    m, n, dsub = x.shape
    centroids = np.stack([x[j, rng.choice(n, size=k, replace=n < k)] for j in range(m)])
    block = max(1, (1 << 24) // max(1, m * k))
    for _ in range(iters):
        c_norms = (centroids**2).sum(-1)  # (m, k)
        assign = np.empty((m, n), dtype=np.intp)
        for s in range(0, n, block):
            d = c_norms[:, None, :] - 2.0 * np.matmul(x[:, s : s + block], centroids.transpose(0, 2, 1))
            assign[:, s : s + block] = d.argmin(-1)
        flat = (assign + (np.arange(m) * k)[:, None]).ravel()
        counts = np.bincount(flat, minlength=m * k).reshape(m, k)
        sums = np.stack(
            [np.bincount(flat, weights=x[:, :, d].ravel(), minlength=m * k) for d in range(dsub)], -1
        ).reshape(m, k, dsub)
        full = counts > 0
        centroids[full] = (sums[full] / counts[full][:, None]).astype(np.float32)
        for j, c in zip(*np.nonzero(~full), strict=True):  # re-seed empty clusters on random points
            centroids[j, c] = x[j, rng.integers(n)]
    return centroids


def train_pq(
    x: np.ndarray, m: int, nbits: int, *, iters: int = 10, seed: int = 0, max_train: int | None = None
) -> PQ:
    n, dim = x.shape
    if dim % m:
        raise ValueError(f"PQ: {m} subspaces do not divide dimension {dim}")
    if nbits not in (4, 8):
        raise ValueError("PQ: nbits must be 4 or 8")
    dsub, ksub = dim // m, 1 << nbits
    # 16-centroid codebooks fit on 640 points underfit: 4,096 add ~1 point of PQ-order recall.
    max_train = max_train or max(40 * ksub, 4096)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max_train), replace=False))
    xs = np.asarray(x[sample], dtype=np.float32).reshape(-1, m, dsub).transpose(1, 0, 2).copy()
    books = kmeans_subspaces(xs, ksub, iters, rng)
    return PQ(books.astype(np.float16).astype(np.float32), nbits)


def pack_codes(codes: np.ndarray, nbits: int) -> np.ndarray:
    if nbits == 8:
        return codes
    c = codes if codes.shape[1] % 2 == 0 else np.pad(codes, ((0, 0), (0, 1)))
    return (c[:, 0::2] | (c[:, 1::2] << 4)).astype(np.uint8)


def unpack_codes(packed: np.ndarray, nbits: int, m: int) -> np.ndarray:
    if nbits == 8:
        return packed
    out = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = packed & 0x0F
    out[:, 1::2] = packed >> 4
    return np.ascontiguousarray(out[:, :m])
