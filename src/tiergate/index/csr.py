"""Compact adjacency lists: CSR whose neighbour ids are delta-coded and stored as LEB128 varints.

Each node's neighbours are sorted; the first is stored as a zig-zag delta from the node's own id
(nodes are renumbered for locality at build time, so neighbours sit close by) and the others as
gaps. Encoding and decoding are vectorised over the whole graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CSR:
    """Adjacency in memory: neighbours of node u are indices[indptr[u]:indptr[u + 1]]."""

    indptr: np.ndarray  # int64, n + 1
    indices: np.ndarray  # int32

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    @property
    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    def neighbours(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u] : self.indptr[u + 1]]

    @classmethod
    def from_lists(cls, lists: list[np.ndarray]) -> CSR:
        degrees = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(degrees, out=indptr[1:])
        indices = np.concatenate(lists).astype(np.int32) if lists else np.zeros(0, np.int32)
        return cls(indptr, indices)

    def to_lists(self) -> list[np.ndarray]:
        return [self.indices[self.indptr[u] : self.indptr[u + 1]].copy() for u in range(self.n)]


def varint_encode(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.uint64)
    if v.size == 0:
        return np.zeros(0, np.uint8)
    nbytes = np.ones(v.shape, dtype=np.int64)
    rest = v >> np.uint64(7)
    while rest.any():
        more = rest > 0
        nbytes += more
        rest = rest >> np.uint64(7)
    starts = np.cumsum(nbytes) - nbytes
    out = np.zeros(int(nbytes.sum()), dtype=np.uint8)
    for j in range(int(nbytes.max())):
        sel = nbytes > j
        byte = (v[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        cont = (nbytes[sel] - 1 > j).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + j] = (byte | cont).astype(np.uint8)
    return out


def varint_decode(data: np.ndarray) -> np.ndarray:
    b = np.asarray(data, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, np.uint64)
    if b[-1] & 0x80:
        raise ValueError("varint stream is truncated")
    ends = np.flatnonzero((b & 0x80) == 0)
    starts = np.concatenate(([0], ends[:-1] + 1))
    value_of_byte = np.repeat(np.arange(len(ends)), ends - starts + 1)
    shift = (np.arange(len(b)) - starts[value_of_byte]) * 7
    contrib = (b & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
    return np.add.reduceat(contrib, starts)


def encode_graph(csr: CSR) -> tuple[np.ndarray, np.ndarray]:
    """Returns (degrees, varint stream). Neighbour lists must hold distinct ids."""
    degrees = csr.degrees
    n = csr.n
    src = np.repeat(np.arange(n, dtype=np.int64), degrees)
    # Sort each list: by (src, neighbour) in one lexsort.
    order = np.lexsort((csr.indices, src))
    nb = csr.indices[order].astype(np.int64)
    first = np.zeros(len(nb), dtype=bool)
    first[csr.indptr[:-1][degrees > 0]] = True
    vals = np.empty(len(nb), dtype=np.int64)
    delta = nb[first] - src[first]
    vals[first] = np.where(delta >= 0, 2 * delta, -2 * delta - 1)  # zig-zag
    prev = np.concatenate(([0], nb[:-1]))
    gaps = nb - prev - 1
    if (gaps[~first] < 0).any():
        raise ValueError("neighbour lists must not repeat an id")
    vals[~first] = gaps[~first]
    dtype = np.uint8 if degrees.max(initial=0) <= 255 else np.uint16
    return degrees.astype(dtype), varint_encode(vals.astype(np.uint64))


def decode_graph(degrees: np.ndarray, stream: np.ndarray) -> CSR:
    degrees = degrees.astype(np.int64)
    n = len(degrees)
    vals = varint_decode(stream).astype(np.int64)
    if len(vals) != int(degrees.sum()):
        raise ValueError(f"graph stream holds {len(vals)} ids, degrees say {int(degrees.sum())}")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(degrees, out=indptr[1:])
    src = np.repeat(np.arange(n, dtype=np.int64), degrees)
    starts = indptr[:-1][degrees > 0]
    first = np.zeros(len(vals), dtype=bool)
    first[starts] = True
    x = vals + 1
    z = vals[first]
    x[first] = src[first] + np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
    c = np.cumsum(x)
    base = c[starts] - x[starts]
    out = c - np.repeat(base, degrees[degrees > 0])
    if len(out) and (out.min() < 0 or out.max() >= n):
        raise ValueError("graph stream decodes to out-of-range node ids")
    return CSR(indptr, out.astype(np.int32))
