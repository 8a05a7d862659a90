"""Index benchmark: tiergate's low-storage index against flat, HNSW, IVF-PQ and LEANN, side by side.

All methods in one run use the same corpus, the same embeddings and the same exact ground truth
(a flat inner-product search). Per method: index bytes / raw text bytes, bytes per passage,
recall@3 and @10, exact recomputations per query, latency p50/p95 (text queries end to end: the
query embedding is included for every method), build time and peak RAM.

Corpora: MuSiQue passages (../shared/data), the same passages cut into ~500 B pieces at sentence
ends (musique-500), WordNet glosses and synthetic clustered vectors (graph + PQ alone; exact
re-scoring is a dot product with stored vectors).

Inputs that the project does not install:
- WordNet: Debian's `wordnet-base` (`apt-get install wordnet-base`, files under /usr/share/wordnet).
  Without it the wordnet corpus is skipped.
- LEANN: its own virtualenv at var/bench/leann-venv (LEANN pins transformers 4, tiergate uses 5).
  It reuses the project's CPU torch instead of pulling CUDA wheels:
      python3.11 -m venv var/bench/leann-venv
      var/bench/leann-venv/bin/pip install --no-deps leann-core==0.3.8 leann-backend-hnsw==0.3.8 \\
          transformers==4.57.6 sentence-transformers==5.1.2 tokenizers==0.22.2 huggingface-hub==0.36.2 pyzmq msgpack
      echo "$PWD/.venv/lib/python3.11/site-packages" > var/bench/leann-venv/lib/python3.11/site-packages/zz_main.pth
  (the .pth comes last on sys.path, so LEANN's transformers 4 wins over the project's 5).
  Without it the LEANN rows say "not run".

    python benchmarks/index.py                 # everything (long: ~1 h on 2 cores)
    python benchmarks/index.py --quick         # fewer queries, 200k synthetic vectors
    python benchmarks/index.py --corpora wordnet --merge --leann-queries 50 --lock /tmp/bench.lock
        # one corpus; its rows replace that corpus's rows in the results, the others are kept; each
        # method holds the lock file while it builds and answers queries (one timing run at a time)
    python benchmarks/index.py --gpu-only --embedder PATH --device cuda --out DIR
        # GPU numbers with only torch/transformers/sentence-transformers/numpy/pyarrow + tiergate

Results: benchmarks/results/index.json, index.md, index.png (recall-latency). Each corpus records
when it ran, for how long and how busy the machine was meanwhile (load average, and the CPU cores
other processes used). index_gpu_*.json files beside them (from --gpu-only runs) are shown in the
Markdown too.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BENCH = ROOT / "var" / "bench"
LEANN_PY = BENCH / "leann-venv" / "bin" / "python"
WORDNET = Path("/usr/share/wordnet")
TIMING_LOCK: list[Path] = []  # --lock: a file flock'ed around each method's timed part


@contextlib.contextmanager
def timing_lock() -> Any:
    """Hold --lock's file while one method builds and answers queries (one timing run at a time on a
    shared machine, and no hold longer than one method's run)."""
    if not TIMING_LOCK:
        yield
        return
    import fcntl

    with TIMING_LOCK[0].open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------ measuring helpers


class PeakRSS:
    """Peak resident memory of this process while the block runs, above what it held before."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


class MachineLoad:
    """How busy the machine was while the block ran: load average samples, and the CPU cores that
    other processes used (all busy CPU time less this process's and its children's, per second)."""

    def __init__(self, every_s: float = 5.0) -> None:
        import psutil

        self.psutil = psutil
        self.every_s = every_s
        self.loads: list[float] = []
        self._stop = threading.Event()

    @staticmethod
    def _busy(times: Any) -> float:
        return times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)

    def _own(self) -> float:
        t = self.psutil.Process().cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> MachineLoad:
        self.start = time.time()
        self._t0 = (time.perf_counter(), self._busy(self.psutil.cpu_times()), self._own())
        self.loads.append(os.getloadavg()[0])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.loads.append(os.getloadavg()[0])

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.loads.append(os.getloadavg()[0])
        wall0, busy0, own0 = self._t0
        self.wall_s = time.perf_counter() - wall0
        busy = self._busy(self.psutil.cpu_times()) - busy0
        own = self._own() - own0
        self.own_cores = own / max(self.wall_s, 1e-9)
        self.other_cores = max(0.0, busy - own) / max(self.wall_s, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(self.start)),
            "wall_s": round(self.wall_s, 1),
            "load1_mean": round(float(np.mean(self.loads)), 2),
            "load1_max": round(float(np.max(self.loads)), 2),
            "own_cores": round(self.own_cores, 2),
            "other_cores": round(self.other_cores, 2),
            "cores": os.cpu_count(),
        }


def recall(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]))


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


@dataclass
class Row:
    corpus: str
    method: str
    setting: str
    index_bytes: int
    raw_text_bytes: int
    passages: int
    recall3: float
    recall10: float
    recompute_per_query: float
    p50_ms: float
    p95_ms: float
    build_s: float
    peak_ram_mib: float
    queries: int
    note: str = ""
    curve: list[dict[str, float]] = field(default_factory=list)
    # tiergate at its defaults on the first `queries` queries only: the ones LEANN ran, when fewer
    same_queries_as_leann: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["index_ratio"] = self.index_bytes / self.raw_text_bytes if self.raw_text_bytes else None
        d["bytes_per_passage"] = self.index_bytes / max(1, self.passages)
        return d


# ------------------------------------------------------------------ corpora


def load_musique(path: Path) -> tuple[list[str], list[str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    texts = list(dict.fromkeys(c["text"] for q in data for c in q["ctxs"]))
    return texts, [q["question"] for q in data]


def split_passages(texts: list[str], limit: int = 620) -> list[str]:
    """Passages cut at sentence ends into pieces of at most `limit` bytes where sentences allow
    (MuSiQue: ~490 B on average, the ~500 B passage case)."""
    out = []
    for t in texts:
        piece = ""
        for sentence in re.split(r"(?<=[.!?])\s+", t):
            if piece and len(piece.encode()) + len(sentence.encode()) > limit:
                out.append(piece)
                piece = ""
            piece = f"{piece} {sentence}".strip()
        if piece:
            out.append(piece)
    return list(dict.fromkeys(out))


def load_wordnet(n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Passages: 'lemma, lemma: definition' per synset; queries: example sentences."""
    passages, examples = [], []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            f = head.split()
            words = [f[4 + 2 * i].replace("_", " ") for i in range(int(f[3], 16))]
            parts = [p.strip() for p in gloss.split(";")]
            definition = "; ".join(p for p in parts if not p.startswith('"'))
            passages.append(f"{', '.join(words)}: {definition}".strip())
            examples.extend(p.strip('" ') for p in parts if p.startswith('"') and len(p) > 12)
    rng = np.random.default_rng(seed)
    queries = [examples[i] for i in rng.choice(len(examples), size=n_queries, replace=False)]
    passages = list(dict.fromkeys(passages))
    return passages, queries


def synthetic(n: int, nq: int, dim: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (1,000 clusters); queries are other draws from the same clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x[s:e] = centres[rng.integers(0, 1000, e - s)] + 0.9 * rng.standard_normal((e - s, dim)).astype(np.float32)
    q = centres[rng.integers(0, 1000, nq)] + 0.9 * rng.standard_normal((nq, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q.astype(np.float32)


def cached_embeddings(name: str, texts: list[str], embedder: Any, batch: int = 128) -> tuple[np.ndarray, float]:
    """Embeddings of texts, cached under var/bench by model and content; returns (vectors, seconds)."""
    h = hashlib.sha256(embedder.model_id.encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    path = BENCH / f"{name}-{h.hexdigest()[:12]}.npy"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        return np.load(path), float(json.loads(meta.read_text())["seconds"])
    BENCH.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    out = np.concatenate([embedder.encode(texts[i : i + 4096], batch_size=batch) for i in range(0, len(texts), 4096)])
    seconds = time.perf_counter() - t
    np.save(path, out)
    meta.write_text(json.dumps({"seconds": seconds, "n": len(texts)}))
    return out, seconds


class PreloadedEmbedder:
    """The real embedder, but texts embedded earlier come from memory (used for builds only:
    every method starts from the same precomputed embeddings). Searches use the real one."""

    def __init__(self, inner: Any, texts: list[str], vectors: np.ndarray) -> None:
        self.inner = inner
        self.model_id, self.dim, self.tokenizer, self.max_tokens = (
            inner.model_id,
            inner.dim,
            inner.tokenizer,
            inner.max_tokens,
        )
        self.known = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        idx = [self.known.get(t, -1) for t in texts]
        if min(idx, default=0) >= 0:
            return self.vectors[idx]
        return self.inner.encode(texts, batch_size=batch_size)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def exact_truth(x: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), 256):
        sims = q[s : s + 256] @ x.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
        out[s : s + 256] = np.take_along_axis(part, order, 1)
    return out


def dir_bytes(path: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith(skip)}


# ------------------------------------------------------------------ tiergate


TIERGATE_SETTINGS = [(32, 12), (64, 24), (128, 48)]  # (ef, recompute); the middle one is the default
# Text corpora: (ef, recompute, margin) points besides the index's own defaults (None, None, None),
# which adapt to passage length (recompute is a token budget: 24 for 256-token passages, up to 128
# for glosses). margin=2.0 re-scores every candidate up to the budget: the high-recall end, at the
# smallest budget and at twice it.
TEXT_SETTINGS = [(32, 12, None), (None, None, None), (64, 24, None), (256, 128, None), (128, 24, 2.0),
                 (128, 48, 2.0)]


def bench_tiergate_text(
    corpus: str,
    texts: list[str],
    queries: list[str],
    x: np.ndarray,
    truth: np.ndarray,
    embedder: Any,
    work: Path,
    curve: bool = True,
    subset: int | None = None,
) -> Row:
    from tiergate.config import load_settings
    from tiergate.index import build_index, open_index
    from tiergate.index.search import SearchParams

    settings = load_settings(data_dir=work / "var")
    src = work / f"{corpus}.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": t}) + "\n")
    pre = PreloadedEmbedder(embedder, texts, x)
    with PeakRSS() as mem:
        t = time.perf_counter()
        build_index(settings, corpus, [src], embedder=pre, overwrite=True)
        build_s = time.perf_counter() - t
    index = open_index(settings, corpus, embedder=embedder)
    info = index.info()
    rc_default = max(index.default_recompute, 25)  # as search_batch resolves it for k=10
    ef_default = max(SearchParams().ef, 2 * rc_default)
    points = []
    main: dict[str, Any] = {}
    same: dict[str, float] = {}
    for ef, rc, margin in TEXT_SETTINGS if curve else [(None, None, None)]:
        lat, found10, found3, recomputed = [], [], [], []
        for q in queries:
            t = time.perf_counter()
            res, stats = index.search_batch([q], 10, ef=ef, recompute=rc, margin=margin, with_stats=True)
            lat.append(time.perf_counter() - t)
            found10.append([int(h.id) for h in res[0]])
            recomputed.append(stats[0].recomputed)
        if ef is None or margin is not None:  # recall@3 at the defaults and the high-recall end (slow on CPU)
            for q in queries:
                res = index.search_batch([q], 3, ef=ef, recompute=rc, margin=margin)
                found3.append([int(h.id) for h in res[0]])
        point = {
            "ef": ef or ef_default,
            "recompute": rc or rc_default,
            "margin": margin,
            "defaults": ef is None,
            "recall3": recall(found3, truth, 3) if found3 else float("nan"),
            "recall10": recall(found10, truth, 10),
            "p50_ms": pct(lat, 50),
            "p95_ms": pct(lat, 95),
            "recomputed": float(np.mean(recomputed)),
        }
        points.append(point)
        if subset and subset < len(queries) and found3:
            sub = truth[:subset]
            point["same_queries_as_leann"] = {
                "queries": subset,
                "recall3": recall(found3[:subset], sub, 3),
                "recall10": recall(found10[:subset], sub, 10),
                "p50_ms": pct(lat[:subset], 50),
                "p95_ms": pct(lat[:subset], 95),
            }
        print(
            f"  tiergate ef={point['ef']} recompute={point['recompute']} margin={margin or 'calibrated'}: "
            f"r@3={point['recall3']:.3f} "
            f"r@10={point['recall10']:.3f} p50={point['p50_ms']:.0f}ms recomputed={point['recomputed']:.1f}",
            flush=True,
        )
        if ef is None:
            main = point
            same = point.get("same_queries_as_leann", {})
    return Row(
        corpus,
        "tiergate",
        f"defaults (ef={ef_default}, recompute<={rc_default})",
        info.index_bytes,
        info.raw_text_bytes,
        info.passages,
        main["recall3"],
        main["recall10"],
        main["recomputed"],
        main["p50_ms"],
        main["p95_ms"],
        build_s,
        mem.mib,
        len(queries),
        note=f"PQ {info.pq['m']}x{info.pq['nbits']}b; files: {info.files}",
        curve=points,
        same_queries_as_leann=same,
    )


def bench_tiergate_vectors(corpus: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray) -> Row:
    from tiergate.index.build import BuildParams, build_structures, write_structures
    from tiergate.index.search import SearchParams, rerank

    with PeakRSS() as mem:
        t = time.perf_counter()
        st = build_structures(x, BuildParams(pq_bytes=24, pq_bits=8))
        build_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        write_structures(Path(d), st)
        size = sum(dir_bytes(Path(d)).values())
    xs = x[st.order]
    searcher = st.searcher()
    points, main = [], {}
    for ef, rc in TIERGATE_SETTINGS:
        lat, f3, f10, rec = [], [], [], []
        for k, out in ((10, f10), (3, f3)):
            for qi in q:
                t = time.perf_counter()
                cands = searcher.search_candidates(qi[None], SearchParams(k=k, ef=ef, recompute=rc))
                hits = rerank(qi[None], cands, lambda ids: xs[ids], k, st.margin)[0]
                if k == 10:
                    lat.append(time.perf_counter() - t)
                    rec.append(hits.recomputed)
                out.append(st.order[hits.ids].tolist())
        point = {
            "ef": ef,
            "recompute": rc,
            "recall3": recall(f3, truth, 3),
            "recall10": recall(f10, truth, 10),
            "p50_ms": pct(lat, 50),
            "p95_ms": pct(lat, 95),
            "recomputed": float(np.mean(rec)),
        }
        points.append(point)
        print(
            f"  tiergate ef={ef} recompute={rc}: r@3={point['recall3']:.3f} r@10={point['recall10']:.3f} "
            f"p50={point['p50_ms']:.2f}ms",
            flush=True,
        )
        if (ef, rc) == (SearchParams().ef, SearchParams().recompute):
            main = point
    return Row(
        corpus,
        "tiergate",
        "graph+PQ, exact dot re-scoring",
        size,
        0,
        len(x),
        main["recall3"],
        main["recall10"],
        main["recomputed"],
        main["p50_ms"],
        main["p95_ms"],
        build_s,
        mem.mib,
        len(q),
        note=f"PQ {st.pq.m}x{st.pq.nbits}b, stage seconds {st.seconds}",
        curve=points,
    )


# ------------------------------------------------------------------ baselines


def run_baseline(
    corpus: str,
    method: str,
    setting: str,
    build: Any,
    search: Any,
    sweep: list[Any],
    q: np.ndarray,
    truth: np.ndarray,
    raw: int,
    n: int,
    q_encode_s: float,
    size_fn: Any,
) -> Row:
    with timing_lock():
        return _run_baseline(corpus, method, setting, build, search, sweep, q, truth, raw, n, q_encode_s, size_fn)


def _run_baseline(
    corpus: str,
    method: str,
    setting: str,
    build: Any,
    search: Any,
    sweep: list[Any],
    q: np.ndarray,
    truth: np.ndarray,
    raw: int,
    n: int,
    q_encode_s: float,
    size_fn: Any,
) -> Row:
    with PeakRSS() as mem:
        t = time.perf_counter()
        index = build()
        build_s = time.perf_counter() - t
    size = size_fn(index)
    points = []
    for param in sweep:
        lat, f10 = [], []
        for qi in q:
            t = time.perf_counter()
            f10.append(search(index, qi, 10, param))
            lat.append(time.perf_counter() - t + q_encode_s)
        f3 = [search(index, qi, 3, param) for qi in q]
        point = {
            "param": param,
            "recall3": recall(f3, truth, 3),
            "recall10": recall(f10, truth, 10),
            "p50_ms": pct(lat, 50),
            "p95_ms": pct(lat, 95),
        }
        points.append(point)
    # Report the cheapest setting reaching recall@10 >= 0.95, else the most accurate one.
    main = next((p for p in points if p["recall10"] >= 0.95), max(points, key=lambda p: p["recall10"]))
    print(
        f"  {method}: r@3={main['recall3']:.3f} r@10={main['recall10']:.3f} p50={main['p50_ms']:.2f}ms bytes={size}",
        flush=True,
    )
    return Row(
        corpus,
        method,
        f"{setting}, {main['param']}",
        size,
        raw,
        n,
        main["recall3"],
        main["recall10"],
        0.0,
        main["p50_ms"],
        main["p95_ms"],
        build_s,
        mem.mib,
        len(q),
        curve=points,
    )


def baselines(
    corpus: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, raw: int, q_encode_s: float, equal_bytes: int
) -> list[Row]:
    import faiss
    import hnswlib

    n, dim = x.shape
    rows = []

    def faiss_size(index: Any) -> int:
        return int(faiss.serialize_index(index).size)

    def flat_build() -> Any:
        index = faiss.IndexFlatIP(dim)
        index.add(x)
        return index

    def faiss_search(index: Any, qi: np.ndarray, k: int, param: Any) -> list[int]:
        return index.search(qi[None], k)[1][0].tolist()

    rows.append(
        run_baseline(
            corpus,
            "faiss IndexFlatIP",
            "exact",
            flat_build,
            faiss_search,
            ["-"],
            q,
            truth,
            raw,
            n,
            q_encode_s,
            faiss_size,
        )
    )

    def hnswlib_build() -> Any:
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
        index.add_items(x, np.arange(n))
        return index

    def hnswlib_search(index: Any, qi: np.ndarray, k: int, ef: int) -> list[int]:
        index.set_ef(max(ef, k))
        return index.knn_query(qi[None], k=k)[0][0].tolist()

    def hnswlib_size(index: Any) -> int:
        with tempfile.NamedTemporaryFile() as f:
            index.save_index(f.name)
            return os.path.getsize(f.name)

    rows.append(
        run_baseline(
            corpus,
            "hnswlib",
            "M=16, efC=200",
            hnswlib_build,
            hnswlib_search,
            [16, 32, 64, 128],
            q,
            truth,
            raw,
            n,
            q_encode_s,
            hnswlib_size,
        )
    )

    def fhnsw_build() -> Any:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(x)
        return index

    def fhnsw_search(index: Any, qi: np.ndarray, k: int, ef: int) -> list[int]:
        index.hnsw.efSearch = max(ef, k)
        return index.search(qi[None], k)[1][0].tolist()

    rows.append(
        run_baseline(
            corpus,
            "faiss IndexHNSWFlat",
            "M=32, efC=80",
            fhnsw_build,
            fhnsw_search,
            [16, 32, 64, 128],
            q,
            truth,
            raw,
            n,
            q_encode_s,
            faiss_size,
        )
    )

    # IVF-PQ with the same byte budget as tiergate's index (codes + centroids + ids).
    nlist = int(np.clip(4 * np.sqrt(n), 16, 4096))
    fixed = nlist * dim * 4 + 256 * dim * 4
    per = max(1.0, (equal_bytes - fixed) / n - 8)  # faiss stores 8-byte ids per vector
    m = max((d for d in range(1, dim + 1) if dim % d == 0 and d <= max(1, int(per))), default=1)
    nbits = 8

    def ivfpq_build() -> Any:
        quant = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quant, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        train = x[np.random.default_rng(0).choice(n, size=min(n, max(nlist * 40, 256 * 40)), replace=False)]
        index.train(train)
        index.add(x)
        return index

    def ivf_search(index: Any, qi: np.ndarray, k: int, nprobe: int) -> list[int]:
        index.nprobe = nprobe
        return index.search(qi[None], k)[1][0].tolist()

    rows.append(
        run_baseline(
            corpus,
            "faiss IVF-PQ",
            f"equal bytes: nlist={nlist}, PQ {m}x{nbits}b",
            ivfpq_build,
            ivf_search,
            [4, 16, 64],
            q,
            truth,
            raw,
            n,
            q_encode_s,
            faiss_size,
        )
    )
    return rows


# ------------------------------------------------------------------ LEANN (its own virtualenv: it pins transformers 4)


def leann_worker(args: argparse.Namespace) -> None:
    """Runs inside LEANN's venv: build from our embeddings, search with recomputation."""
    import resource

    from leann import LeannBuilder, LeannSearcher

    spec = json.loads(Path(args.leann_worker).read_text())
    x = np.load(spec["vectors"])
    texts = [json.loads(line)["text"] for line in Path(spec["texts"]).read_text().splitlines()]
    out: dict[str, Any] = {}
    path = str(Path(spec["dir"]) / "index.leann")
    t = time.perf_counter()
    builder = LeannBuilder(
        "hnsw",
        embedding_model=spec["model"],
        embedding_mode="sentence-transformers",
        is_recompute=True,
        is_compact=True,
        distance_metric="cosine",
        graph_degree=32,
        complexity=64,
    )
    for i, text in enumerate(texts):
        builder.add_text(text, metadata={"id": str(i)})
    builder.build_index_from_arrays(path, [str(i) for i in range(len(texts))], x)
    out["build_s"] = time.perf_counter() - t
    out["files"] = {p.name: p.stat().st_size for p in Path(spec["dir"]).iterdir() if p.is_file()}
    searcher = LeannSearcher(path, recompute_embeddings=True, use_daemon=False)
    kw = {"complexity": spec["complexity"], "batch_size": spec["batch_size"]}
    searcher.search(spec["queries"][0], top_k=3, **kw)  # warm-up: server start
    found3, found10, lat = [], [], []
    for q in spec["queries"]:
        t = time.perf_counter()
        res = searcher.search(q, top_k=10, **kw)
        lat.append(time.perf_counter() - t)
        found10.append([int(r.id) for r in res])
        found3.append(found10[-1][:3])  # the same traversal; a top_k=3 search would double LEANN's time
    with contextlib.suppress(Exception):
        searcher.cleanup()
    out.update(
        found3=found3,
        found10=found10,
        latency=lat,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    Path(spec["out"]).write_text(json.dumps(out))


def bench_leann(
    corpus: str,
    texts: list[str],
    queries: list[str],
    x: np.ndarray,
    truth: np.ndarray,
    model_dir: Path,
    raw: int,
    work: Path,
    complexity: int = 64,
    torch_threads: int | None = None,
) -> Row:
    if not LEANN_PY.is_file():
        return _leann_missing(corpus, raw, len(texts), f"LEANN venv not found at {LEANN_PY} (see --help)")
    d = work / f"leann-{corpus}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    np.save(d / "x.npy", x)
    with (d / "texts.jsonl").open("w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    idx = d / "index"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if torch_threads:  # through the environment: LEANN embeds in a server process of its own
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(torch_threads)
    t = time.perf_counter()
    failures = []
    # LEANN's C++ client gives up when one batch of re-embeddings takes too long (a loaded CPU with
    # long passages); then it is retried with its own smaller neighbour batches.
    for batch_size in (0, 8):
        shutil.rmtree(idx, ignore_errors=True)
        idx.mkdir()
        spec = {
            "vectors": str(d / "x.npy"),
            "texts": str(d / "texts.jsonl"),
            "dir": str(idx),
            "model": str(model_dir),
            "queries": queries,
            "out": str(d / "out.json"),
            "complexity": complexity,
            "batch_size": batch_size,
        }
        (d / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.run(
            [str(LEANN_PY), __file__, "--leann-worker", str(d / "spec.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=7200,
            cwd=d,
        )
        if proc.returncode == 0 and (d / "out.json").is_file():
            break
        err = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "INFO" not in ln][-4:]
        failures.append(f"batch_size={batch_size}: exit {proc.returncode}: {' | '.join(err)[-300:]}")
        print(f"  LEANN attempt failed: {failures[-1]}", flush=True)
    else:
        return _leann_missing(corpus, raw, len(texts), "LEANN failed: " + "; ".join(failures))
    out = json.loads((d / "out.json").read_text())
    size = sum(v for k, v in out["files"].items() if "passages" not in k)
    sub = truth[: len(queries)]
    row = Row(
        corpus,
        "LEANN",
        f"hnsw compact+recompute, complexity={complexity}, batch_size={batch_size}",
        size,
        raw,
        len(texts),
        recall(out["found3"], sub, 3),
        recall(out["found10"], sub, 10),
        float("nan"),
        pct(out["latency"], 50),
        pct(out["latency"], 95),
        out["build_s"],
        out["peak_rss_mib"],
        len(queries),
        note=f"files (passage store excluded): {out['files']}; wall {time.perf_counter() - t:.0f}s",
    )
    print(f"  LEANN: r@3={row.recall3:.3f} r@10={row.recall10:.3f} p50={row.p50_ms:.0f}ms bytes={size}", flush=True)
    return row


def _leann_missing(corpus: str, raw: int, n: int, why: str) -> Row:
    print(f"  LEANN: not measured: {why}", flush=True)
    nan = float("nan")
    return Row(corpus, "LEANN", "not run", 0, raw, n, nan, nan, nan, nan, nan, nan, nan, 0, note=why)


# ------------------------------------------------------------------ GPU measurement (no faiss/hnswlib needed)


def gpu_only(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tiergate.config import load_settings
    from tiergate.index import build_index, open_index
    from tiergate.models import load_embedder

    overrides: dict[str, Any] = {"device": args.device, "dtype": args.dtype}
    if args.embedder:
        overrides["embedder"] = args.embedder
    settings = load_settings(data_dir=Path(tempfile.mkdtemp(prefix="tg-gpu-")), models=overrides)
    embedder = load_embedder(settings.models)
    texts, questions = load_corpus_for_gpu(args)
    # Embedding throughput (the build's embedding stage), after a warm-up.
    embedder.encode(texts[:512], batch_size=args.batch)
    if args.device == "cuda":
        torch.cuda.synchronize()
    reps = max(1, min(10, 20000 // len(texts)))
    t = time.perf_counter()
    for _ in range(reps):
        x = embedder.encode(texts, batch_size=args.batch)
    if args.device == "cuda":
        torch.cuda.synchronize()
    embed_s = (time.perf_counter() - t) / reps
    src = Path(settings.data_dir) / "corpus.jsonl"
    src.parent.mkdir(parents=True, exist_ok=True)
    with src.open("w") as f:
        for i, t_ in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": t_}) + "\n")
    t = time.perf_counter()
    build_index(settings, "gpu", [src], embedder=embedder)
    build_s = time.perf_counter() - t
    index = open_index(settings, "gpu", embedder=embedder)
    q = embedder.encode(questions)
    truth = exact_truth(x, q)
    for qq in questions[:5]:
        index.search(qq, k=10)  # warm-up
    lat, found = [], []
    for qq in questions:
        t = time.perf_counter()
        found.append([int(h.id) for h in index.search(qq, k=10)])
        lat.append(time.perf_counter() - t)
    batch_q = (questions * (1 + 600 // len(questions)))[:600]
    t = time.perf_counter()
    for s in range(0, len(batch_q), args.query_batch):
        index.search_batch(batch_q[s : s + args.query_batch], 10)
    qps = len(batch_q) / (time.perf_counter() - t)
    result = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "embedder": embedder.model_id,
        "dtype": args.dtype,
        "passages": len(texts),
        "queries": len(questions),
        "embed_passages_per_s": len(texts) / embed_s,
        "build_s_total": build_s,
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "batched_queries_per_s": qps,
        "query_batch": args.query_batch,
        "recall10": recall(found, truth, 10),
        "index": index.info().to_dict() | {"files": index.info().files},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "index"}, indent=1))
    return result


def load_corpus_for_gpu(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    if args.corpus:
        lines = [json.loads(line) for line in Path(args.corpus).read_text().splitlines() if line.strip()]
        texts = [r["text"] for r in lines]
        rng = np.random.default_rng(0)
        questions = [texts[i][:200] for i in rng.choice(len(texts), size=min(200, len(texts)), replace=False)]
        return texts, questions
    path = Path(args.musique)
    if not path.is_file() and (ROOT / "shared" / "data" / "musique_s.json").is_file():
        path = ROOT / "shared" / "data" / "musique_s.json"  # shared/ inside the checkout
    return load_musique(path)


# ------------------------------------------------------------------ report


def write_report(rows: list[Row], meta: dict[str, Any], out: Path, merge: bool = False) -> None:
    """Write json/md/png. merge: rows and run records of corpora not run now are kept from index.json."""
    out.mkdir(parents=True, exist_ok=True)
    old = out / "index.json"
    if merge and old.is_file():
        before = json.loads(old.read_text())
        fresh = {r.corpus for r in rows}
        fields = set(Row.__dataclass_fields__)
        keep = [Row(**{k: v for k, v in r.items() if k in fields}) for r in before["rows"] if r["corpus"] not in fresh]
        runs = {c: run for c, run in before["meta"].get("runs", {}).items() if c not in fresh}
        meta = {**meta, "runs": {**runs, **meta["runs"]}}
        order = list(dict.fromkeys([r.corpus for r in keep] + [r.corpus for r in rows]))
        rows = sorted(keep + rows, key=lambda r: order.index(r.corpus))
    (out / "index.json").write_text(json.dumps({"meta": meta, "rows": [r.to_dict() for r in rows]}, indent=1))
    (out / "index.md").write_text("\n".join(markdown(rows, meta, out)) + "\n")
    plot(rows, out / "index.png")


def markdown(rows: list[Row], meta: dict[str, Any], out: Path) -> list[str]:
    lines = [
        "# Index benchmark",
        "",
        f"Machine: {meta['machine']}. {meta['note']}",
        "",
        "| corpus | method | setting | index B / raw text | B/passage | recall@3 | recall@10 | recomputed/q "
        "| p50 ms | p95 ms | build s | peak RAM MiB | queries |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r.to_dict()
        ratio = f"{100 * d['index_ratio']:.2f}%" if d["index_ratio"] else "-"
        lines.append(
            f"| {r.corpus} | {r.method} | {r.setting} | {ratio} | {d['bytes_per_passage']:.1f} | "
            f"{r.recall3:.3f} | {r.recall10:.3f} | {r.recompute_per_query:.1f} | {r.p50_ms:.1f} | "
            f"{r.p95_ms:.1f} | {r.build_s:.1f} | {r.peak_ram_mib:.0f} | {r.queries} |"
        )
    lines += [
        "",
        "Runs (one per corpus; load = 1-minute load average sampled every 5 s; other cores = CPU "
        "cores that other processes kept busy, on average):",
        "",
        "| corpus | started | wall s | load mean | load max | own cores | other cores | torch threads | arguments |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for corpus, run in meta.get("runs", {}).items():
        lines.append(
            f"| {corpus} | {run['started']} | {run['wall_s']:.0f} | {run['load1_mean']:.2f} | "
            f"{run['load1_max']:.2f} | {run['own_cores']:.2f} | {run['other_cores']:.2f} | "
            f"{run.get('torch_threads', '-')} | `{' '.join(run['argv'])}` |"
        )
    notes = [f"- {r.corpus} / {r.method}: {r.note}" for r in rows if r.note]
    lines += ["", "Notes:", *notes, ""]
    for corpus in dict.fromkeys(r.corpus for r in rows):
        tg = next((r for r in rows if r.corpus == corpus and r.method == "tiergate"), None)
        le = next((r for r in rows if r.corpus == corpus and r.method == "LEANN" and r.queries), None)
        if not (tg and le):
            continue
        same = tg.same_queries_as_leann or {
            "queries": tg.queries,
            "recall3": tg.recall3,
            "recall10": tg.recall10,
            "p50_ms": tg.p50_ms,
            "p95_ms": tg.p95_ms,
        }
        lines.append(
            f"- {corpus}: tiergate on {same['queries']} queries p50 {same['p50_ms']:.0f} ms / p95 "
            f"{same['p95_ms']:.0f} ms, recall@3 {same['recall3']:.3f}, recall@10 {same['recall10']:.3f}; LEANN on "
            f"{le.queries} queries p50 "
            f"{le.p50_ms:.0f} ms / p95 {le.p95_ms:.0f} ms, recall@3 {le.recall3:.3f}, recall@10 {le.recall10:.3f}: "
            f"tiergate {le.p50_ms / same['p50_ms']:.1f}x faster at p50 ({le.p95_ms / same['p95_ms']:.1f}x at p95); "
            f"index {tg.index_bytes} B vs {le.index_bytes} B ({le.index_bytes / max(1, tg.index_bytes):.1f}x smaller)"
        )
        # the fair comparison: the fastest tiergate setting at LEANN's recall or better, same queries
        matched = [
            p for p in tg.curve
            if (m := p.get("same_queries_as_leann")) and m["recall3"] >= le.recall3 and m["recall10"] >= le.recall10
        ]
        if matched:
            p = min(matched, key=lambda p: p["same_queries_as_leann"]["p50_ms"])
            m = p["same_queries_as_leann"]
            lines.append(
                f"- {corpus}, at equal or better recall: tiergate ef={p['ef']}, recompute<={p['recompute']}, "
                f"margin {p.get('margin') or 'calibrated'}: recall@3 {m['recall3']:.3f}, "
                f"recall@10 {m['recall10']:.3f}, p50 {m['p50_ms']:.0f} ms / p95 {m['p95_ms']:.0f} ms: "
                f"{le.p50_ms / m['p50_ms']:.1f}x faster than LEANN at p50 ({le.p95_ms / m['p95_ms']:.1f}x at p95)"
            )
        else:
            lines.append(f"- {corpus}: no tiergate setting reached LEANN's recall on the same queries")
    lines += gpu_markdown(out)
    return lines


def gpu_markdown(out: Path) -> list[str]:
    """The --gpu-only results saved beside this report (index_gpu_*.json), one row each."""
    runs = sorted(out.glob("index_gpu_*.json"))
    if not runs:
        return []
    lines = [
        "",
        "## GPU (`--gpu-only`, MuSiQue, text queries end to end)",
        "",
        "| file | device | embedder, dtype | passages | build embedding passages/s | build s | p50 ms | "
        "p95 ms | batched queries/s (batch) | recall@10 | index B / raw text |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in runs:
        g = json.loads(path.read_text())
        ratio = g.get("index", {}).get("index_ratio")
        ratio_text = f"{100 * ratio:.2f}%" if ratio else "-"
        lines.append(
            f"| {path.name} | {g['device']} | {g['embedder']}, {g['dtype']} | {g['passages']} | "
            f"{g['embed_passages_per_s']:,.0f} | {g['build_s_total']:.1f} | {g['p50_ms']:.1f} | "
            f"{g['p95_ms']:.1f} | {g['batched_queries_per_s']:.0f} ({g['query_batch']}) | "
            f"{g['recall10']:.3f} | {ratio_text} |"
        )
    return lines


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(r.corpus for r in rows))
    fig, axes = plt.subplots(1, len(corpora), figsize=(6 * len(corpora), 4.5), squeeze=False)
    for ax, corpus in zip(axes[0], corpora, strict=True):
        for r in rows:
            if r.corpus != corpus:
                continue
            pts = r.curve or [{"recall10": r.recall10, "p50_ms": r.p50_ms}]
            pts = sorted(pts, key=lambda p: p["p50_ms"])  # the defaults point sits among the others
            xs = [p["p50_ms"] for p in pts if np.isfinite(p["p50_ms"])]
            ys = [p["recall10"] for p in pts if np.isfinite(p["p50_ms"])]
            if xs:
                ax.plot(xs, ys, marker="o", label=r.method)
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per query (ms, log)")
        ax.set_ylabel("recall@10")
        ax.set_title(corpus)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------ main


def text_corpus(
    name: str,
    texts: list[str],
    queries: list[str],
    embedder: Any,
    args: argparse.Namespace,
    work: Path,
    leann_default: int,
) -> list[Row]:
    print(f"[{name}] {len(texts)} passages, {len(queries)} queries", flush=True)
    x, _ = cached_embeddings(name, texts, embedder)
    t = time.perf_counter()
    q = embedder.encode(queries, batch_size=1)
    q_encode_s = (time.perf_counter() - t) / len(queries)
    truth = exact_truth(x, q)
    raw = sum(len(t_.encode("utf-8")) for t_ in texts)
    nq = min(len(queries), args.leann_queries or leann_default)
    with timing_lock():
        rows = [
            bench_tiergate_text(name, texts, queries, x, truth, embedder, work, subset=None if args.no_leann else nq)
        ]
        rate = embedding_rate(texts, embedder)
    rows += baselines(name, x, q, truth, raw, q_encode_s, rows[0].index_bytes)
    if not args.no_leann and nq:
        from tiergate.models import embedder_dir

        model = embedder_dir(embedder_config(args))
        with timing_lock():
            leann = bench_leann(name, texts, queries[:nq], x, truth, model, raw, work, torch_threads=args.torch_threads)
        rows.append(leann)
    rows[0].note = f"{rows[0].note}; corpus embedding {rate:.0f} passages/s (512 passages, batches of 64)"
    return rows


def embedding_rate(texts: list[str], embedder: Any, n: int = 512) -> float:
    """Passages per second of the build's embedding stage, on n passages spread over the corpus (the
    corpus vectors come from a cache, filled whenever the machine was free or not)."""
    sample = [texts[i] for i in np.linspace(0, len(texts) - 1, min(n, len(texts))).astype(int)]
    embedder.encode(sample[:64], batch_size=64)  # warm-up
    t = time.perf_counter()
    embedder.encode(sample, batch_size=64)
    return len(sample) / (time.perf_counter() - t)


def torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def run_corpus(corpus: str, embedder: Any, args: argparse.Namespace, work: Path) -> list[Row]:
    if corpus in ("musique", "musique-500"):
        texts, questions = load_musique(Path(args.musique))
        questions = questions[: args.queries or (40 if args.quick else len(questions))]
        if corpus == "musique-500":  # no LEANN row by default: the LEANN comparison runs on the passages
            return text_corpus(corpus, split_passages(texts), questions, embedder, args, work, leann_default=0)
        return text_corpus(corpus, texts, questions, embedder, args, work, leann_default=10 if args.quick else 30)
    if corpus == "wordnet":
        if not (WORDNET / "data.noun").is_file():
            print("[wordnet] skipped: install Debian's wordnet-base", flush=True)
            return []
        texts, queries = load_wordnet(args.queries or (60 if args.quick else 200))
        return text_corpus("wordnet", texts, queries, embedder, args, work, leann_default=10 if args.quick else 50)
    if corpus == "synthetic":
        n = args.synthetic_n or (200_000 if args.quick else 1_000_000)
        print(f"[synthetic] {n} vectors", flush=True)
        x, q = synthetic(n, 200 if args.quick else 500)
        truth = exact_truth(x, q)
        name = f"synthetic-{n // 1000}k"
        with timing_lock():
            rows = [bench_tiergate_vectors(name, x, q, truth)]
        return rows + baselines(name, x, q, truth, 0, 0.0, rows[-1].index_bytes)
    raise SystemExit(f"unknown corpus {corpus!r}: musique, musique-500, wordnet or synthetic")


def embedder_config(args: argparse.Namespace) -> Any:
    from tiergate.config import ModelsConfig

    return ModelsConfig(embedder=args.embedder, device=args.device, dtype=args.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer queries and 200k synthetic vectors")
    ap.add_argument("--corpora", default="musique,wordnet,synthetic")
    ap.add_argument("--synthetic-n", type=int, default=None, help="default 1,000,000 (200,000 with --quick)")
    ap.add_argument("--no-leann", action="store_true")
    ap.add_argument("--leann-queries", type=int, default=None, help="LEANN queries per corpus (it is slow)")
    ap.add_argument("--queries", type=int, default=None, help="queries per text corpus (default: all / quick)")
    ap.add_argument("--musique", default=str(SHARED / "musique_s.json"))
    ap.add_argument("--corpus", default=None, help="--gpu-only: a JSONL corpus instead of MuSiQue")
    ap.add_argument("--embedder", default=None, help="local sentence-transformers folder (default: packaged)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--gpu-only", action="store_true", help="only the GPU measurements (no faiss/hnswlib/LEANN)")
    ap.add_argument("--batch", type=int, default=512, help="--gpu-only: passage embedding batch")
    ap.add_argument("--query-batch", type=int, default=150, help="--gpu-only: queries per search_batch call")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows (and run records) of corpora not run now from the existing index.json",
    )
    ap.add_argument(
        "--lock",
        default=None,
        help="a lock file (e.g. /tmp/bench.lock) held with flock around each method's build and queries",
    )
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch threads for tiergate and LEANN alike (default: torch's own; 1 is far faster on a busy machine)",
    )
    ap.add_argument("--leann-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.leann_worker:
        leann_worker(args)
        return
    out = Path(args.out)
    if args.gpu_only:
        out.mkdir(parents=True, exist_ok=True)
        (out / "index_gpu.json").write_text(json.dumps(gpu_only(args), indent=1))
        return
    from tiergate.models import load_embedder

    if args.lock:
        TIMING_LOCK.append(Path(args.lock))
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    embedder = load_embedder(embedder_config(args))
    rows: list[Row] = []
    runs: dict[str, dict[str, Any]] = {}
    work = Path(tempfile.mkdtemp(prefix="tg-bench-", dir=BENCH if BENCH.is_dir() else None))
    try:
        for corpus in args.corpora.split(","):
            with MachineLoad() as load:
                got = run_corpus(corpus, embedder, args, work)
            for name in dict.fromkeys(r.corpus for r in got):
                runs[name] = {**load.to_dict(), "argv": sys.argv[1:], "torch_threads": torch_threads()}
                print(f"[{name}] run: {runs[name]}", flush=True)
            rows += got
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import platform

    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work while measuring)",
        "note": "Latency is per text query end to end (query embedding included for every method) on CPU; "
        "synthetic rows are vectors only. Recall is against an exact flat search on the same embeddings.",
        "runs": runs,
    }
    write_report(rows, meta, out, merge=args.merge)
    print((out / "index.md").read_text())


if __name__ == "__main__":
    main()
