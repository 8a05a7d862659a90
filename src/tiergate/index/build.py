"""Build: read sources -> chunk -> embed (streamed to a disk memmap) -> graph -> prune -> PQ.

The full embeddings exist only in a staging file during the build; the published index keeps
the pruned graph, the PQ codes and the text store. Everything is written into a hidden staging
folder and renamed into place at the end, so a half-built index is never visible.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as papq

from tiergate.config import Settings
from tiergate.errors import StorageError
from tiergate.index import catalog
from tiergate.index.chunking import Chunk, check_params, chunk_records
from tiergate.index.csr import CSR, encode_graph
from tiergate.index.errors import BuildCancelled, SourceError
from tiergate.index.graph import GraphParams, build_graph
from tiergate.index.manifest import Manifest, record_files, write_manifest
from tiergate.index.pq import PQ, choose_m, pack_codes, train_pq
from tiergate.index.search import GraphSearcher, calibrate_margin, calibrate_recompute
from tiergate.index.sources import Source, estimate_records, read_sources
from tiergate.index.store import IndexInfo, make_info
from tiergate.index.textstore import SCHEMA, make_table, rows_per_group, write_segment

# (stage, done, total or None). Stages: read, embed, graph, prune, pq, write.
ProgressFn = Callable[[str, int, int | None], None]

EMBED_BLOCK = 256  # chunks per encode call; the Ray path uses the same blocks, so results match
SHORT_PASSAGE_BYTES = 8192  # PQ floor = this / mean passage bytes (32 B at 256 B, 16 B from ~500 B)


@dataclass
class BuildParams:
    chunk_tokens: int = 0  # 0: one record, one passage
    overlap: int = 0
    graph: GraphParams = field(default_factory=GraphParams)
    pq_bytes: int | None = None  # None: auto_pq_bytes (2.7% of the mean passage, more when short)
    pq_bits: int | None = None  # None: 8 from 8192 passages, else 4
    embed_batch: int = 64
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self, n: int) -> BuildParams:
        """Automatic choices made for n passages, so the manifest records what was built."""
        return replace(self, graph=self.graph.resolved(n))


@dataclass
class Structures:
    """Everything search needs, built from vectors alone (the benchmark uses this directly)."""

    csr: CSR
    entry: np.ndarray
    order: np.ndarray  # order[node] = input position
    pq: PQ
    codes: np.ndarray  # (n, m) uint8, node order
    margin: float
    recompute: int  # calibrated re-scoring depth (see calibrate_recompute)
    seconds: dict[str, float]

    def searcher(self) -> GraphSearcher:
        return GraphSearcher(self.csr, self.entry, self.pq, self.codes)


def auto_pq_bytes(mean_text_bytes: float | None) -> int:
    """PQ code bytes for a corpus: about 2.7% of the mean passage, 16..64 bytes, and more for short ones.

    Short passages (glosses, titles, FAQ lines) sit close together, so coarse codes leave many
    near-ties that only exact re-scoring can sort out; the floor grows as passages shrink
    (SHORT_PASSAGE_BYTES / mean bytes), up to 96 bytes. Finer codes also mean fewer re-scorings:
    on WordNet glosses 96-byte codes need 26 a query against 44 with 64 bytes (each ~15 ms on 2
    CPU cores). Their text is tiny, so the ratio to raw text is large either way; ~500 B passages
    keep the 16-byte floor (8% target).
    """
    if mean_text_bytes is None:
        return 32
    floor = min(96.0, max(16.0, SHORT_PASSAGE_BYTES / max(1.0, mean_text_bytes)))
    return round(max(floor, min(64.0, 0.027 * mean_text_bytes)))


def auto_pq(n: int, dim: int, mean_text_bytes: float | None, pq_bytes: int | None,
            pq_bits: int | None) -> tuple[int, int]:
    nbits = pq_bits or (8 if n >= 8192 else 4)
    if pq_bytes is None:
        pq_bytes = auto_pq_bytes(mean_text_bytes)
    return choose_m(dim, pq_bytes, nbits), nbits


def build_structures(x: np.ndarray, params: BuildParams, *, mean_text_bytes: float | None = None,
                     progress: ProgressFn | None = None) -> Structures:
    n, dim = x.shape
    seconds = {}
    t = time.perf_counter()
    graph = build_graph(x, params.graph, progress)
    seconds["graph"] = time.perf_counter() - t
    t = time.perf_counter()
    m, nbits = auto_pq(n, dim, mean_text_bytes, params.pq_bytes, params.pq_bits)
    pq = train_pq(x, m, nbits, seed=params.seed)
    codes = np.empty((n, m), dtype=np.uint8)
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        codes[s:e] = pq.encode(np.asarray(x[graph.order[s:e]], dtype=np.float32))
        if progress:
            progress("pq", e, n)
    seconds["pq"] = time.perf_counter() - t
    st = Structures(graph.csr, graph.entry, graph.order, pq, codes, 0.0, 0, seconds)
    t = time.perf_counter()
    permuted = _Permuted(x, graph.order)
    st.margin = calibrate_margin(permuted, st.searcher(), seed=params.seed)
    st.recompute = calibrate_recompute(permuted, st.searcher())
    seconds["calibrate"] = time.perf_counter() - t
    return st


class _Permuted:
    """x viewed in node order, without copying it."""

    def __init__(self, x: np.ndarray, order: np.ndarray) -> None:
        self.x, self.order = x, order
        self.shape = x.shape

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.x[self.order[idx]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.x[self.order], dtype=dtype)


def write_structures(folder: Path, st: Structures) -> list[str]:
    degrees, stream = encode_graph(st.csr)
    files = {
        "graph_degrees.npy": degrees,
        "graph_edges.npy": stream,
        "pq_codebooks.npy": st.pq.codebooks.astype(np.float16),
        "pq_codes.npy": pack_codes(st.codes, st.pq.nbits),
    }
    for name, arr in files.items():
        np.save(folder / name, arr, allow_pickle=False)
    return list(files)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BuildCancelled("index build cancelled")


def embed_blocks(chunks: Iterator[Chunk], embedder: Any, batch: int) -> Iterator[tuple[list[Chunk], np.ndarray]]:
    block: list[Chunk] = []
    for c in chunks:
        block.append(c)
        if len(block) == EMBED_BLOCK:
            yield block, embedder.encode([b.text for b in block], batch_size=batch)
            block = []
    if block:
        yield block, embedder.encode([b.text for b in block], batch_size=batch)


@dataclass
class Staged:
    """Chunks and their vectors on disk in input order, before the graph exists."""

    chunks_path: Path
    vectors_path: Path
    n: int
    dim: int
    raw_text_bytes: int
    truncated: int  # passages longer than the embedder's max_tokens (embedded truncated)

    def vectors(self) -> np.ndarray:
        return np.memmap(self.vectors_path, dtype=np.float32, mode="r", shape=(self.n, self.dim))


def stage_local(records: Iterable[Any], embedder: Any, params: BuildParams, work: Path,
                progress: ProgressFn | None, cancel: threading.Event | None, total: int | None = None) -> Staged:
    chunks_path, vectors_path = work / "chunks.parquet", work / "vectors.f32"
    n = raw = truncated = 0
    seen: set[str] = set()
    writer = papq.ParquetWriter(chunks_path, SCHEMA, compression="zstd")
    chunks = chunk_records(records, embedder.tokenizer, params.chunk_tokens, params.overlap)
    try:
        with vectors_path.open("wb") as vf:
            for block, vecs in embed_blocks(_dedupe(chunks, seen), embedder, params.embed_batch):
                _check_cancel(cancel)
                vf.write(np.ascontiguousarray(vecs, dtype=np.float32).tobytes())
                writer.write_table(make_table([c.id for c in block], [c.record_id for c in block],
                                              [c.text for c in block], [c.metadata for c in block]))
                n += len(block)
                raw += sum(len(c.text.encode("utf-8")) for c in block)
                if params.chunk_tokens == 0:
                    truncated += sum(embedder.count_tokens(c.text) > embedder.max_tokens for c in block)
                if progress:
                    progress("embed", n, total)
    finally:
        writer.close()
    if n == 0:
        raise SourceError("sources hold no passages")
    return Staged(chunks_path, vectors_path, n, embedder.dim, raw, truncated)


def _dedupe(chunks: Iterable[Chunk], seen: set[str]) -> Iterator[Chunk]:
    for c in chunks:
        if c.id in seen:
            raise SourceError(f"duplicate passage id {c.id!r}")
        seen.add(c.id)
        yield c


def finish(staged: Staged, folder: Path, manifest_base: dict[str, Any], params: BuildParams,
           progress: ProgressFn | None, cancel: threading.Event | None) -> Manifest:
    """Graph + PQ from the staged vectors, text store in node order, manifest."""
    x = staged.vectors()
    mean = staged.raw_text_bytes / staged.n
    params = params.resolved(staged.n)
    st = build_structures(x, params, mean_text_bytes=mean, progress=progress)
    _check_cancel(cancel)
    names = write_structures(folder, st)
    table = papq.read_table(staged.chunks_path).take(pa.array(st.order))
    write_segment(folder / "text-00000.parquet", table, rows_per_group(mean))
    if progress:
        progress("write", staged.n, staged.n)
    now = time.time()
    manifest = Manifest(
        passages=staged.n, nodes=staged.n, raw_text_bytes=staged.raw_text_bytes,
        params=params.to_dict(), pq={"m": st.pq.m, "nbits": st.pq.nbits}, margin=st.margin,
        recompute=st.recompute,
        text_segments=["text-00000.parquet"], created_at=now, updated_at=now,
        stats={"entry": st.entry.tolist(), "truncated_passages": staged.truncated,
               "build_seconds": {k: round(v, 3) for k, v in st.seconds.items()}},
        **manifest_base,
    )
    record_files(manifest, folder, [*names, "text-00000.parquet"])
    write_manifest(folder, manifest)
    return manifest


def build_index(
    settings: Settings,
    name: str,
    sources: Iterable[Source] | Source,
    *,
    tenant: str = "default",
    params: BuildParams | None = None,
    embedder: Any = None,
    progress: ProgressFn | bool | None = None,
    cancel: threading.Event | None = None,
    ray_address: str | None = None,
    overwrite: bool = False,
) -> IndexInfo:
    """Build an index from sources (paths, or iterables of {"id", "text", "metadata"} dicts).

    progress=True shows tqdm bars; a callable gets (stage, done, total). Setting `cancel` stops the
    build at the next block with BuildCancelled, leaving nothing behind. ray_address="local" (or
    "auto", or a cluster address) runs chunking and embedding as a Ray Data job.
    """
    params = params or BuildParams()
    check_params(params.chunk_tokens, params.overlap)
    target = catalog.index_dir(settings, name, tenant)
    if target.exists() and not overwrite:
        from tiergate.index.errors import IndexExistsError

        raise IndexExistsError(f"index {name!r} already exists for tenant {tenant!r}")
    progress_fn, close = _progress(progress)
    with catalog.staging(settings, tenant, name) as staging:  # removed unless published
        try:
            version = staging / catalog.version_name(1)
            version.mkdir()
            work = staging / "work"
            work.mkdir()
            if embedder is None:
                from tiergate.models import load_embedder

                embedder = load_embedder(settings.models)
            if ray_address:
                from tiergate.index.ray_build import stage_ray

                staged = stage_ray(sources, settings, params, work, ray_address, progress_fn, cancel,
                                   embedder=embedder)
            else:
                total = estimate_records(sources) if progress_fn and params.chunk_tokens == 0 else None
                staged = stage_local(read_sources(sources), embedder, params, work, progress_fn, cancel, total)
            base = {"name": name, "tenant": tenant, "model_id": embedder.model_id, "dim": embedder.dim}
            manifest = finish(staged, version, base, params, progress_fn, cancel)
            shutil.rmtree(work)
            catalog.set_current(staging, version.name)
            _check_cancel(cancel)
            catalog.publish(staging, target, overwrite)
            return make_info(target / version.name, manifest)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # say so plainly (the staging folder goes)
                raise StorageError(f"not enough disk space to build index {name!r} ({os.strerror(exc.errno)})",
                                   code="disk_full") from exc
            raise
        finally:
            close()


def _progress(progress: ProgressFn | bool | None) -> tuple[ProgressFn | None, Callable[[], None]]:
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return None, lambda: None
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int | None) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="passage", leave=True)
        bar.n = done
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

