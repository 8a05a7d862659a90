"""Chunking and embedding as Ray Data jobs (Parquet in, Parquet out); the graph is built locally.

The records are validated and written to Parquet by the driver (so errors name file and line as
in a local build), chunked by a Ray job, numbered in input order, and embedded by a second job
grouped into the same blocks of EMBED_BLOCK chunks that the local build encodes together. Each
block is one encode call in both paths, so the vectors, and with them the index, match a local
build on the same input.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as papq

from tiergate.config import Settings
from tiergate.index.build import EMBED_BLOCK, BuildParams, ProgressFn, Staged, _check_cancel
from tiergate.index.errors import SourceError
from tiergate.index.sources import Source, read_sources
from tiergate.index.textstore import SCHEMA

RECORDS = pa.schema([("seq", pa.int64()), ("id", pa.string()), ("text", pa.string()), ("metadata", pa.string())])


class _Chunker:
    def __init__(self, models: dict[str, Any], chunk_tokens: int, overlap: int) -> None:
        self.chunk_tokens, self.overlap = chunk_tokens, overlap
        self.tokenizer = None
        if chunk_tokens:
            from transformers import AutoTokenizer

            from tiergate.config import ModelsConfig
            from tiergate.models import embedder_dir

            self.tokenizer = AutoTokenizer.from_pretrained(embedder_dir(ModelsConfig(**models)), local_files_only=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from tiergate.index.chunking import chunk_record
        from tiergate.index.sources import Record

        out: dict[str, list[Any]] = {k: [] for k in ("seq", "chunk", "id", "record_id", "text", "metadata")}
        for seq, rid, text, meta in zip(batch["seq"], batch["id"], batch["text"], batch["metadata"], strict=True):
            rec = Record(str(rid), str(text), json.loads(meta))
            for i, c in enumerate(chunk_record(rec, self.tokenizer, self.chunk_tokens, self.overlap)):
                out["seq"].append(int(seq))
                out["chunk"].append(i)
                out["id"].append(c.id)
                out["record_id"].append(c.record_id)
                out["text"].append(c.text)
                out["metadata"].append(json.dumps(c.metadata, separators=(",", ":")))
        return out


class _Embedder:
    def __init__(self, models: dict[str, Any], batch_size: int) -> None:
        from tiergate.config import ModelsConfig
        from tiergate.models import load_embedder

        self.embedder = load_embedder(ModelsConfig(**models))
        self.batch_size = batch_size

    def __call__(self, group: Any) -> Any:
        group = group.sort_values("pos")
        vecs = self.embedder.encode(list(group["text"]), batch_size=self.batch_size)
        return {"pos": group["pos"].to_numpy(), "vector": [v.tobytes() for v in vecs]}


def _write_records(sources: Iterable[Source] | Source, path: Path) -> int:
    n = 0
    with papq.ParquetWriter(path, RECORDS) as writer:
        rows: list[dict[str, Any]] = []
        for rec in read_sources(sources):
            rows.append({"seq": n, "id": rec.id, "text": rec.text,
                         "metadata": json.dumps(rec.metadata, separators=(",", ":"))})
            n += 1
            if len(rows) == 4096:
                writer.write_table(pa.Table.from_pylist(rows, RECORDS))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, RECORDS))
    return n


def stage_ray(sources: Iterable[Source] | Source, settings: Settings, params: BuildParams, work: Path,
              address: str, progress: ProgressFn | None, cancel: threading.Event | None,
              embedder: Any = None) -> Staged:
    import ray

    records_path = work / "records.parquet"
    if _write_records(sources, records_path) == 0:
        raise SourceError("sources hold no passages")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address in ("local", "") else address, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    try:
        models = settings.models.model_dump()
        gpu = 1 if settings.models.device == "cuda" else 0
        # Job 1: chunking.
        chunked = work / "chunked"
        ray.data.read_parquet(str(records_path)).map_batches(
            _Chunker, fn_constructor_args=(models, params.chunk_tokens, params.overlap),
            batch_format="numpy", concurrency=1,
        ).write_parquet(str(chunked))
        _check_cancel(cancel)
        table = papq.read_table(chunked).sort_by([("seq", "ascending"), ("chunk", "ascending")])
        ids = table.column("id").to_pylist()
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise SourceError(f"duplicate passage id {dup!r}")
        n = len(table)
        table = table.append_column("pos", pa.array(np.arange(n, dtype=np.int64)))
        table = table.append_column("block", pa.array(np.arange(n, dtype=np.int64) // EMBED_BLOCK))
        numbered = work / "numbered.parquet"
        papq.write_table(table, numbered)
        if progress:
            progress("chunk", n, n)
        # Job 2: embedding, one encode call per block of EMBED_BLOCK chunks, as in the local build.
        embedded = work / "embedded"
        ray.data.read_parquet(str(numbered), columns=["pos", "block", "text"]).groupby("block").map_groups(
            _Embedder, fn_constructor_args=(models, params.embed_batch), batch_format="pandas",
            concurrency=1, num_gpus=gpu,
        ).write_parquet(str(embedded))
        _check_cancel(cancel)
    finally:
        if started_here:
            ray.shutdown()
    vec_table = papq.read_table(embedded).sort_by("pos")
    if len(vec_table) != n:
        raise SourceError(f"Ray embedding returned {len(vec_table)} vectors for {n} passages")
    dim = len(vec_table.column("vector")[0].as_py()) // 4
    vectors_path = work / "vectors.f32"
    with vectors_path.open("wb") as f:
        for chunk in vec_table.column("vector").chunks:
            for v in chunk.to_pylist():
                f.write(v)
    chunks_path = work / "chunks.parquet"
    papq.write_table(table.select(["id", "record_id", "text", "metadata"]).cast(SCHEMA), chunks_path)
    texts = table.column("text").to_pylist()
    raw = sum(len(t.encode("utf-8")) for t in texts)
    truncated = 0
    if params.chunk_tokens == 0 and embedder is not None:
        truncated = sum(embedder.count_tokens(t) > embedder.max_tokens for t in texts)
    if progress:
        progress("embed", n, n)
    return Staged(chunks_path, vectors_path, n, dim, raw, truncated)
