"""Insert and delete passages without a full rebuild.

Inserted passages are embedded, PQ-coded with the existing codebooks and linked into the graph:
candidates come from a traversal of the current graph (plus the other new passages), are pruned
with the same robust prune as the build (old nodes use their PQ-decoded vectors), and get
back-edges; a neighbour that overflows its degree limit is re-pruned. Deleted passages become
tombstones: still used for navigation, never returned. Inserting an id that exists replaces it.
Each update writes a new version folder (unchanged files hard-linked) and swaps it in atomically.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiergate.config import Settings
from tiergate.errors import InvalidRequestError
from tiergate.index import catalog
from tiergate.index.build import BuildParams, ProgressFn, _check_cancel
from tiergate.index.chunking import chunk_records
from tiergate.index.csr import CSR, encode_graph
from tiergate.index.graph import GraphParams, exact_knn, robust_prune
from tiergate.index.manifest import Manifest, record_files, write_manifest
from tiergate.index.pq import pack_codes
from tiergate.index.search import GraphSearcher
from tiergate.index.sources import Source, read_sources
from tiergate.index.store import Index, open_index
from tiergate.index.textstore import make_table, rows_per_group, write_segment

BATCH = 256


@dataclass
class UpdateResult:
    inserted: int = 0  # passages added
    deleted: int = 0  # passages removed (replaced ones included)
    missing: list[str] | None = None  # ids asked to delete that were not there
    passages: int = 0  # live passages afterwards
    version: str = ""


class _Vectors:
    """Vectors by node id: PQ-decoded for existing nodes, exact for the ones being inserted."""

    def __init__(self, searcher: GraphSearcher, codes: np.ndarray, new: np.ndarray, first_new: int) -> None:
        self.pq, self.codes, self.new, self.first_new = searcher.pq, codes, new, first_new

    def __getitem__(self, ids: Any) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.ravel()
        out = np.empty((len(flat), self.pq.dim), dtype=np.float32)
        old = flat < self.first_new
        out[old] = self.pq.decode(self.codes[flat[old]])
        out[~old] = self.new[flat[~old] - self.first_new]
        return out.reshape(*ids.shape, self.pq.dim)


def link_new_nodes(index: Index, vectors: np.ndarray, codes_new: np.ndarray, gp: GraphParams,
                   cancel: threading.Event | None = None) -> tuple[CSR, np.ndarray]:
    """Graph and codes with the new nodes appended and linked."""
    s0 = index.searcher
    n0 = s0.n
    lists = s0.csr.to_lists()
    codes = np.concatenate([s0.codes, codes_new])
    xv = _Vectors(s0, codes, vectors, n0)
    deg = np.array([len(v) for v in lists], dtype=np.int64)
    limit = np.maximum(np.full(n0, gp.degree), deg)  # hubs keep their larger degree
    admit = np.concatenate([~index.deleted, np.ones(len(vectors), dtype=bool)])
    for b0 in range(0, len(vectors), BATCH):
        _check_cancel(cancel)
        b1 = min(len(vectors), b0 + BATCH)
        n_now = n0 + b0
        searcher = GraphSearcher(CSR.from_lists(lists), s0.entry, s0.pq, codes[:n_now])
        luts = s0.pq.lut(vectors[b0:b1])
        want = gp.knn + 2 * gp.build_m
        cand = np.full((b1 - b0, want + (b1 - b0)), -1, dtype=np.int64)
        for i, lut in enumerate(luts):
            c = searcher.candidates(lut, max(64, want), want, admit[:n_now]).ids
            cand[i, : len(c)] = c
        if b1 - b0 > 1:  # the other new nodes of this batch
            local = exact_knn(vectors[b0:b1], min(gp.knn, b1 - b0 - 1)) + n0 + b0
            cand[:, want : want + local.shape[1]] = local
        nodes = np.arange(n0 + b0, n0 + b1)
        new_lists = robust_prune(xv, cand, np.full(b1 - b0, gp.degree), gp.alpha, nodes=nodes)
        lists.extend(v.astype(np.int32) for v in new_lists)
        limit = np.concatenate([limit, np.full(b1 - b0, gp.degree)])
        for u, nbrs in zip(nodes.tolist(), new_lists, strict=True):
            for v in nbrs.tolist():
                if u in lists[v]:
                    continue
                grown = np.append(lists[v], u)
                if len(grown) > limit[v]:
                    grown = robust_prune(xv, grown[None, :].astype(np.int64), limit[v : v + 1], gp.alpha,
                                         nodes=np.array([v]))[0]
                lists[v] = grown.astype(np.int32)
    return CSR.from_lists(lists), codes


def _new_version(index_folder: Path, old: Path, keep: list[str]) -> tuple[Path, str]:
    number = int(old.name[1:]) + 1
    name = catalog.version_name(number)
    tmp = index_folder / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    for f in keep:
        try:
            os.link(old / f, tmp / f)
        except OSError:
            shutil.copy2(old / f, tmp / f)
    return tmp, name


def _publish_version(index_folder: Path, tmp: Path, name: str, old: Path) -> None:
    catalog.fsync_dir(tmp)
    os.rename(tmp, index_folder / name)
    catalog.set_current(index_folder, name)
    shutil.rmtree(old, ignore_errors=True)  # open readers keep their memory maps on Linux


def _write(index: Index, index_folder: Path, manifest: Manifest, deleted: np.ndarray,
           csr: CSR | None, codes: np.ndarray | None, new_segment: Any | None) -> str:
    old = index.folder
    changed = {"deleted.npy", "manifest.json"}
    if csr is not None:
        changed |= {"graph_degrees.npy", "graph_edges.npy", "pq_codes.npy"}
    keep = [f for f in manifest.files if f not in changed]
    tmp, name = _new_version(index_folder, old, keep)
    try:
        files = list(keep)
        if csr is not None and codes is not None:
            degrees, stream = encode_graph(csr)
            np.save(tmp / "graph_degrees.npy", degrees)
            np.save(tmp / "graph_edges.npy", stream)
            np.save(tmp / "pq_codes.npy", pack_codes(codes, index.searcher.pq.nbits))
            files += ["graph_degrees.npy", "graph_edges.npy", "pq_codes.npy"]
        if new_segment is not None:
            seg_name, table, group_rows = new_segment
            write_segment(tmp / seg_name, table, group_rows)
            files.append(seg_name)
            manifest.text_segments = [*manifest.text_segments, seg_name]
        if deleted.any():
            np.save(tmp / "deleted.npy", np.packbits(deleted))
            files.append("deleted.npy")
        manifest.files = {}
        record_files(manifest, tmp, sorted(set(files)))
        manifest.updated_at = time.time()
        write_manifest(tmp, manifest)
        _publish_version(index_folder, tmp, name, old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return name


def _text_bytes(index: Index, nodes: np.ndarray) -> int:
    return sum(len(t.encode("utf-8")) for t in index.text.texts(nodes)) if len(nodes) else 0


def insert_documents(
    settings: Settings, name: str, records: Iterable[Source] | Source | Sequence[dict[str, Any]], *,
    tenant: str = "default", embedder: Any = None, progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> UpdateResult:
    """Add (or replace, by id) passages. records: source paths or {"id","text","metadata"} dicts."""
    folder = catalog.index_dir(settings, name, tenant)
    catalog.current_version(folder)  # raises IndexNotFoundError
    with catalog.locked(folder):
        index = open_index(settings, name, tenant, embedder=embedder)
        m = index.manifest
        bp = BuildParams(**{k: v for k, v in m.params.items() if k in ("chunk_tokens", "overlap")})
        gp = GraphParams(**m.params.get("graph", {})).resolved(m.nodes)
        if isinstance(records, (list, tuple)) and records and isinstance(records[0], dict):
            records = [records]
        chunks = list(chunk_records(read_sources(records), index.embedder.tokenizer, bp.chunk_tokens, bp.overlap))
        if not chunks:
            raise InvalidRequestError("no passages to insert")
        # Replace: an inserted record id supersedes every live passage of that record (or id).
        record_ids = index.text.column("record_id")
        new_keys = {c.record_id for c in chunks} | {c.id for c in chunks}
        deleted = index.deleted.copy()
        ids = index.ids
        replaced = np.array([u for u in range(len(ids)) if not deleted[u]
                             and (ids[u] in new_keys or record_ids[u] in new_keys)], dtype=np.int64)
        deleted[replaced] = True
        texts = [c.text for c in chunks]
        vecs = np.concatenate([index.embedder.encode(texts[i : i + 256]) for i in range(0, len(texts), 256)])
        if progress:
            progress("embed", len(chunks), len(chunks))
        codes_new = index.searcher.pq.encode(vecs)
        csr, codes = link_new_nodes(index, vecs, codes_new, gp, cancel)
        deleted = np.concatenate([deleted, np.zeros(len(chunks), dtype=bool)])
        raw_new = sum(len(t.encode("utf-8")) for t in texts)
        m.raw_text_bytes += raw_new - _text_bytes(index, replaced)
        m.nodes += len(chunks)
        m.passages = int((~deleted).sum())
        seg = f"text-{len(m.text_segments):05d}.parquet"
        table = make_table([c.id for c in chunks], [c.record_id for c in chunks], texts, [c.metadata for c in chunks])
        _check_cancel(cancel)
        version = _write(index, folder, m, deleted, csr, codes, (seg, table, rows_per_group(raw_new / len(chunks))))
        return UpdateResult(inserted=len(chunks), deleted=len(replaced), passages=m.passages, version=version)


def delete_documents(settings: Settings, name: str, ids: Sequence[str], *, tenant: str = "default") -> UpdateResult:
    """Remove passages by passage id or record id (all chunks of the record)."""
    if isinstance(ids, str):
        ids = [ids]
    folder = catalog.index_dir(settings, name, tenant)
    catalog.current_version(folder)
    with catalog.locked(folder):
        index = open_index(settings, name, tenant, verify=False)
        wanted = set(ids)
        record_ids = index.text.column("record_id")
        all_ids = index.ids
        hit = np.array([u for u in range(len(all_ids)) if not index.deleted[u]
                        and (all_ids[u] in wanted or record_ids[u] in wanted)], dtype=np.int64)
        found = {all_ids[u] for u in hit} | {record_ids[u] for u in hit}
        missing = [i for i in ids if i not in found]
        if len(hit) == 0:
            return UpdateResult(missing=missing, passages=index.manifest.passages, version=index.folder.name)
        deleted = index.deleted.copy()
        deleted[hit] = True
        m = index.manifest
        m.raw_text_bytes -= _text_bytes(index, hit)
        m.passages = int((~deleted).sum())
        version = _write(index, folder, m, deleted, None, None, None)
        return UpdateResult(deleted=len(hit), missing=missing, passages=m.passages, version=version)
