"""Semantic cache study: tiergate's cache against common single-threshold caches, side by side.

All methods see the same pairs (benchmarks/data/semcache/pairs.jsonl) and the same embeddings
(the packaged all-MiniLM-L6-v2). Each pair's first question is cached, its second looked up:

- gptcache_0.8:  last-message cosine >= 0.8 over one global index (GPTCache's default style)
- redisvl_0.1:   cosine distance <= 0.1, i.e. similarity >= 0.9 (RedisVL's default style)
- best_global:   the single global threshold that serves the most paraphrases with traps <= 2%
- tiergate:      per-category thresholds + guard + context rule (the shipped defaults)

Then: false hits per category as filler entries grow from 1k to 50k; ANN lookup p50/p99 at
100k entries; full semantic lookups per second (one at a time, `lookup_many` batches, and
concurrent callers through the cache's micro-batcher); bytes per entry; and hit latency through a
real gateway (`tiergate serve` in its own process, loopback upstream) for exact repeats and for
varied paraphrases of stored questions. Writes benchmarks/results/semcache.{json,md,png}.

Three pair sets: pairs.jsonl (dev: the guard's rules and the category thresholds were developed on
it), heldout.jsonl (written after an earlier version of the guard was frozen; looked at since) and
heldout2.jsonl (written before the previous round of guard rules; scored as a regression check
during the latest round, see the data README).

Run: .venv/bin/python benchmarks/semcache.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tiergate.cache.ann import AnnIndex, vector_range
from tiergate.cache.config import CacheConfig
from tiergate.cache.encoder import query_encoder
from tiergate.cache.entries import MemoryEntryStore
from tiergate.cache.keys import parse_request
from tiergate.cache.lexicon import Lexicon
from tiergate.cache.semantic import Lookup, SemanticCache

HERE = Path(__file__).parent
DATA = HERE / "data" / "semcache"
RESULTS = HERE / "results"
TRAP_BUDGET = 0.02
FILLER_MARK = "<filler> "


def chat(q: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}], "temperature": 0}


def answer(text: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- filler queries


FILLER_TEMPLATES = [
    ("code", "How do I {verb} a {obj} in {lang}?"),
    ("code", "What is the difference between {obj} and {obj2} in {lang}?"),
    ("code", "Why does my {lang} {obj} {fail}?"),
    ("math", "What is {n} {op} {m}?"),
    ("math", "What is the {mfn} of {n}?"),
    ("factual", "What is the {attr} of {place}?"),
    ("factual", "Who was the {nth} {role} of {place}?"),
    ("conversational", "Write a {form} about {topic}"),
    ("conversational", "Give me {k} tips for {activity}"),
    ("time_sensitive", "What is the weather in {place} {day}?"),
    ("time_sensitive", "What is the price of {asset} {day}?"),
]
def _w(text: str) -> list[str]:
    return text.split()


VOCAB = {
    "verb": _w("sort reverse filter copy merge split parse serialize hash compress encrypt validate flatten "
            "shuffle clone compare"),
    "obj": _w("list array dictionary string set tuple map queue stack tree graph matrix dataframe file socket "
           "thread date"),
    "obj2": _w("vector slice record struct enum class interface closure iterator generator promise"),
    "lang": _w("Python Java Rust Go C++ JavaScript TypeScript Kotlin Swift Ruby PHP Scala Haskell Elixir"),
    "fail": ["crash on startup", "leak memory", "hang forever", "return None", "throw an exception"],
    "n": [str(i) for i in range(2, 400)],
    "m": [str(i) for i in range(2, 60)],
    "op": ["plus", "minus", "times", "divided by", "to the power of"],
    "mfn": ["square root", "cube root", "logarithm", "factorial", "prime factorization"],
    "attr": ["capital", "population", "area", "currency", "official language", "highest mountain"],
    "place": _w("France Peru Kenya Norway Chile Japan Canada Egypt Spain Brazil India Vietnam Poland Ghana Nepal "
             "Oslo Lima Nairobi Tokyo Cairo Madrid Delhi Hanoi Warsaw Accra Denver Dublin Lisbon"),
    "nth": ["first", "second", "third", "fourth", "fifth", "last"],
    "role": ["president", "prime minister", "king", "queen", "mayor"],
    "form": ["poem", "short story", "limerick", "song", "haiku", "letter"],
    "topic": _w("rain autumn friendship the ocean cats coffee mountains trains the moon a lost key"),
    "k": ["three", "five", "seven", "ten"],
    "activity": ["public speaking", "learning guitar", "running a marathon", "saving money", "gardening"],
    "day": ["today", "tomorrow", "this weekend", "right now", "on Monday"],
    "asset": ["gold", "silver", "bitcoin", "oil", "Tesla stock", "the euro"],
}


def fillers(n: int, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    while len(out) < n:
        cat, template = rng.choice(FILLER_TEMPLATES)
        fields = {k: rng.choice(v) for k, v in VOCAB.items()}
        q = template.format(**fields)
        if q not in seen:
            seen.add(q)
            out.append((cat, q))
    return out


# ---------------------------------------------------------------- evaluation


def score(rows: list[dict], served: list[str | None]) -> dict[str, Any]:
    """served[i]: the cached first question returned for row i's second question, or None."""
    by: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r, s in zip(rows, served, strict=True):
        for key in (r["category"], "overall"):
            row = by[key]
            if r["same"] and r["category"] != "personal":
                row["paraphrases"] += 1
                row["paraphrases_served"] += s == r["a"]
                # A filler entry served for a paraphrase may itself be a paraphrase (fillers are
                # unlabelled): counted apart, listed in the JSON for inspection.
                row["filler_hits"] += isinstance(s, str) and s.startswith(FILLER_MARK)
                row["wrong"] += s is not None and s != r["a"] and not s.startswith(FILLER_MARK)
            elif r["category"] == "personal":
                row["personal"] += 1
                row["personal_served"] += s is not None
            else:
                row["traps"] += 1
                row["traps_served"] += s is not None
    out = {}
    for key, row in by.items():
        p, t = row["paraphrases"], row["traps"]
        out[key] = {
            **row,
            "paraphrase_rate": row["paraphrases_served"] / p if p else None,
            "trap_rate": row["traps_served"] / t if t else None,
            "wrong_rate": (row["traps_served"] + row["wrong"]) / (p + t) if p + t else None,
        }
    return out


def by_kind(rows: list[dict], served: list[str | None]) -> dict[str, dict[str, int]]:
    """Per pair kind: how many, and how many were answered from the cache (rightly or not)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "served": 0})
    for r, s in zip(rows, served, strict=True):
        if r["category"] == "personal":
            continue
        out[r["kind"]]["n"] += 1
        out[r["kind"]]["served"] += s == r["a"] if r["same"] else s is not None
    return dict(out)


def baseline(rows: list[dict], a_vecs: np.ndarray, a_texts: list[str], b_vecs: np.ndarray,
             threshold: float) -> list[str | None]:
    sims = b_vecs @ a_vecs.T
    best = sims.argmax(1)
    return [a_texts[j] if sims[i, j] >= threshold else None for i, j in enumerate(best)]


def tiergate_run(rows: list[dict], embedder: Any, lexicon: Lexicon, a_vecs: dict[str, np.ndarray],
                 offset: float = 0.0, extra: list[tuple[str, str, np.ndarray]] | None = None,
                 ) -> tuple[list[str | None], SemanticCache]:
    cfg = CacheConfig()
    for c in cfg.categories:
        c.target_false_hit_rate = None
        c.min_threshold = max(0.0, c.min_threshold + min(offset, 0))
        c.max_threshold = min(1.0, c.max_threshold + max(offset, 0))
        c.threshold = min(max(c.threshold + offset, c.min_threshold), c.max_threshold)
        c.max_entries = 10**6
    cache = SemanticCache(cfg, embedder, MemoryEntryStore(), lexicon=lexicon)
    for cat, q, vec in extra or []:
        bulk_insert(cache, q, vec, cat)
    firsts = {}
    for r in rows:
        if r["a"] not in firsts:
            firsts[r["a"]] = bulk_insert(cache, r["a"], a_vecs[r["a"]], r["category"])
    by_id = {v: k for k, v in firsts.items()}
    served = []
    for r in rows:
        lk = cache.lookup("t", "m", chat(r["b"]))
        if lk.hit and lk.entry_id not in by_id:
            entry = cache.entry("t", lk.entry_id)
            served.append(FILLER_MARK + (entry.query if entry else "?"))
        else:
            served.append(by_id.get(lk.entry_id) if lk.hit else None)
    return served, cache


def bulk_insert(cache: SemanticCache, q: str, vec: np.ndarray, category: str) -> str | None:
    """Insert with a precomputed embedding (what `insert(lookup=...)` does for a real request)."""
    req = chat(q)
    lk = Lookup("miss", category, view=parse_request("t", "m", req), vector=vec)
    return cache.insert("t", "m", req, answer(q), lookup=lk)


def gateway_hit_latency(rows: list[dict], seconds: float = 4.0) -> dict[str, Any]:
    """Exact and semantic hit latency through a real gateway process with a loopback upstream.

    The stored questions are sent once (misses that store the answers); then exact repeats, and
    the pairs' true paraphrases cycled in order (so consecutive requests are different texts, and
    each semantic hit embeds a new query). Verification sampling is off here: a sampled hit is
    sent to the backend by design, which is not what this row measures. Only responses whose
    X-Tiergate-Cache says `semantic` count in the semantic row; the share is reported."""
    import httpx

    sys.path.insert(0, str(HERE))
    from common import ROOT, free_port, gateway_config, spawn, wait_http

    up_port, gw_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="tiergate-semcache-"))
    config = gateway_config(tmp, gw_port, up_port)
    upstream = spawn([sys.executable, str(ROOT / "tests" / "upstream_server.py"), str(up_port)])
    gateway = spawn([str(Path(sys.executable).parent / "tiergate"), "serve", "--config", str(config)],
                    env={"TIERGATE_CONFIG": ""}, log=tmp / "gateway.log")
    url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
    usable = [r for r in rows if r["category"] != "personal"]
    stored = list(dict.fromkeys(r["a"] for r in usable))
    category = {r["a"]: r["category"] for r in usable}
    paraphrases = [(r["b"], r["category"]) for r in usable if r["same"]]

    def body(q: str) -> dict[str, Any]:
        return {"model": "bench-model", "temperature": 0, "messages": [{"role": "user", "content": q}]}

    try:
        time.sleep(1.0)
        wait_http(f"http://127.0.0.1:{gw_port}/readyz", timeout=240)
        with httpx.Client(timeout=30) as client:
            for q in stored:
                client.post(url, json=body(q), headers={"X-Tiergate-Category": category[q]})
        out: dict[str, Any] = {"stored": len(stored), "paraphrase_pool": len(paraphrases), "rows": []}
        for kind, pool in (("exact", [(q, category[q]) for q in stored]), ("semantic", paraphrases)):
            for concurrency in (1, 8):
                out["rows"].append({"hit": kind, "concurrency": concurrency,
                                    **asyncio.run(_cycle(url, pool, body, kind, concurrency, seconds))})
                print(out["rows"][-1], flush=True)
        return out
    finally:
        for proc in (gateway, upstream):
            proc.terminate()
        for proc in (gateway, upstream):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _cycle(url: str, pool: list[tuple[str, str]], body: Any, kind: str, concurrency: int,
                 seconds: float) -> dict[str, Any]:
    """Closed-loop load cycling through `pool`; latency of the responses with outcome `kind`."""
    import aiohttp
    import orjson

    order = itertools.cycle(pool)
    latencies: list[float] = []
    outcomes: dict[str, int] = defaultdict(int)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker(stop_at: float) -> None:
            while time.perf_counter() < stop_at:
                q, cat = next(order)
                t0 = time.perf_counter()
                async with session.post(url, data=orjson.dumps(body(q)), headers={
                        "Content-Type": "application/json", "X-Tiergate-Category": cat}) as r:
                    await r.read()
                    outcome = r.headers.get("X-Tiergate-Cache", "none") if r.status == 200 else f"http_{r.status}"
                outcomes[outcome] += 1
                if outcome == kind:
                    latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*[worker(time.perf_counter() + 0.5) for _ in range(concurrency)])  # warm-up
        latencies.clear()
        outcomes.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(t0 + seconds) for _ in range(concurrency)])
        elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    total = sum(outcomes.values())
    return {"requests": total, "rps": total / elapsed, "hits_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "hit_share": len(latencies) / total if total else 0.0, "outcomes": dict(outcomes)}


async def concurrent_lookups(cache: SemanticCache, queries: list[str], callers: int, seconds: float
                             ) -> dict[str, Any]:
    """Closed-loop `callers` concurrent lookups through the cache's micro-batcher."""
    order = itertools.cycle(queries)
    done = 0
    batches_before, batched_before = cache.batcher.batches, cache.batcher.batched

    async def caller(stop_at: float) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await cache.batcher.lookup("t", "m", chat(next(order)))
            done += 1

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*[caller(t0 + seconds) for _ in range(callers)])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    batches = cache.batcher.batches - batches_before
    return {"callers": callers, "lookups_per_s": done / elapsed, "lookups_per_cpu_s": done / cpu,
            "mean_batch": (cache.batcher.batched - batched_before) / batches if batches else 0.0}


# ---------------------------------------------------------------- size and speed at 100k entries


def ann_study(vecs: np.ndarray, queries: np.ndarray, cfg: CacheConfig, grid: float | None) -> dict[str, Any]:
    """Build time, search latency and top-1 recall (against exact search) of one ANN index."""
    ann = AnnIndex(vecs.shape[1], m=cfg.ann.m, ef_construction=cfg.ann.ef_construction, ef_search=cfg.ann.ef_search,
                   vector_range=grid)
    t0 = time.perf_counter()
    for start in range(0, len(vecs), 5000):
        ann.add(np.arange(start, start + 5000), vecs[start: start + 5000])
    build_s = time.perf_counter() - t0
    lat = []
    for q in queries:
        t1 = time.perf_counter()
        ann.search(q, cfg.ann.candidates)
        lat.append(time.perf_counter() - t1)
    lat_ms = np.array(lat) * 1000
    exact_top = (queries[:300] @ vecs.T).argmax(1)
    recall = float(np.mean([ann.search(q, 1)[0][0] == e for q, e in zip(queries[:300], exact_top, strict=True)]))
    return {"p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
            "build_s": build_s, "top1_recall": recall, "index_bytes_per_entry": ann.memory_bytes() / len(vecs)}


def run_cache_child(vecs: np.ndarray, stored: list[tuple[str, str]], probe: list[str]) -> dict[str, Any]:
    """`cache_child` in a fresh interpreter, so that no memory freed earlier in this process hides
    the cache's growth."""
    with tempfile.TemporaryDirectory(prefix="tiergate-semcache-") as tmp:
        np.save(Path(tmp) / "vecs.npy", vecs)
        (Path(tmp) / "input.json").write_text(json.dumps({"stored": stored, "probe": probe}))
        subprocess.run([sys.executable, __file__, "--cache-child", tmp], check=True)
        return json.loads((Path(tmp) / "output.json").read_text())


def store_overhead(store: MemoryEntryStore) -> int:
    """Bytes the in-memory test store spends on its own bookkeeping: its dict, key tuples and
    strings, and object headers (a TieredStore has bookkeeping of its own instead)."""
    total = sys.getsizeof(store.data)
    for (_ns, key), value in store.data.items():
        total += sys.getsizeof((_ns, key)) + sys.getsizeof(key) + sys.getsizeof(value) - len(value)
    return total


def cache_child(folder: Path) -> None:
    """A cache of 100k entries: bytes per entry besides the response, then lookups per second."""
    import torch

    from tiergate.config import ModelsConfig
    from tiergate.models import load_embedder
    from tiergate.service.heap import pin_mmap_threshold

    pin_mmap_threshold()  # as `tiergate serve` does, before any model loads: the heap of the gateway
    torch.set_num_threads(1)
    fp32 = load_embedder(ModelsConfig(device="cpu", embedder_runtime="torch"))  # the reference row
    embedder = query_encoder(load_embedder(ModelsConfig(device="cpu")), CacheConfig().query_precision)  # as served
    lexicon = Lexicon.load()
    vecs = np.load(folder / "vecs.npy")
    data = json.loads((folder / "input.json").read_text())
    stored, probe = data["stored"], data["probe"]
    cfg = CacheConfig()
    for c in cfg.categories:
        c.max_entries = 10**6
    cache = SemanticCache(cfg, embedder, MemoryEntryStore(), lexicon=lexicon, load=False)
    import faiss  # noqa: F401  (its import, ~30 MB once per process, would otherwise land on the first entry)

    gc.collect()
    # Memory freed while the encoder was set up (its graph exported and quantized in memory) would
    # otherwise be reused by the entries below without growing RSS.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = rss_bytes()
    t0 = time.perf_counter()
    for (cat, q), vec in zip(stored, vecs, strict=True):
        bulk_insert(cache, q, vec, cat)
    insert_s = time.perf_counter() - t0
    gc.collect()
    total = rss_bytes() - before
    n = len(stored)
    store: MemoryEntryStore = cache.store  # type: ignore[assignment]
    payload_bytes = sum(len(v) for (ns, k), v in store.data.items() if k.startswith("p/"))
    meta_bytes = sum(len(v) for (ns, k), v in store.data.items() if k.startswith("m/"))
    test_store = store_overhead(store)
    stats = cache.stats()
    out: dict[str, Any] = {"entries": len(cache), "inserts_per_s": n / insert_s, "bytes_per_entry": {
        "in_memory_index_and_bookkeeping": (total - payload_bytes - meta_bytes - test_store) / n,
        "stored_metadata_record": meta_bytes / n,
        "test_store_own_bookkeeping": test_store / n,
        "payload": payload_bytes / n,
        "reported_by_cache_stats": stats["index_bytes"] / n,
        "mean_query_chars": sum(len(q) for _, q in stored) / n,
        "note": "in a fresh process with faiss already imported and glibc's mmap threshold pinned as the gateway "
                "pins it (tiergate.service.heap): RSS growth per entry minus everything the "
                "in-memory test store holds (payloads, metadata records, and the store's own dict, keys and "
                "object headers, listed apart); the metadata record lives in the tiered store (host/disk)",
    }}
    print(out, flush=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    outcomes: dict[str, int] = defaultdict(int)
    for q in probe:
        outcomes[cache.lookup("t", "m", chat(q)).outcome] += 1
    dt, single_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    embed_t0 = time.perf_counter()
    for q in probe:
        embedder.encode([q])
    embed_dt = time.perf_counter() - embed_t0
    fp32_t0 = time.perf_counter()
    for q in probe[:100]:
        fp32.encode([q])
    fp32_dt = time.perf_counter() - fp32_t0
    batch = [("t", "m", chat(q), None) for q in probe]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, len(batch), 32):
        cache.lookup_many(batch[start: start + 32])
    batched_dt, batched_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    concurrent = [asyncio.run(concurrent_lookups(cache, probe, callers, 5.0)) for callers in (8, 32, 64)]
    out["lookups"] = {
        "batched_lookups_per_s": len(probe) / batched_dt,
        "semantic_lookups_per_s": len(probe) / dt,
        # Per second of this process's CPU time: what one core would do with nobody else on it.
        "batched_lookups_per_cpu_s": len(probe) / batched_cpu,
        "semantic_lookups_per_cpu_s": len(probe) / single_cpu,
        "mean_ms": dt / len(probe) * 1000,
        "embedding_ms": embed_dt / len(probe) * 1000,
        "embedding_ms_sentence_transformers_fp32": fp32_dt / 100 * 1000,
        "concurrent_through_batcher": concurrent,
        "outcomes": dict(outcomes),
    }
    cache.close()
    (folder / "output.json").write_text(json.dumps(out, default=float))


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller filler sizes (for a smoke run)")
    ap.add_argument("--no-gateway", action="store_true", help="skip the through-gateway hit latency")
    ap.add_argument("--cache-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cache_child is not None:
        cache_child(args.cache_child)
        return
    import torch

    from tiergate.config import ModelsConfig
    from tiergate.models import load_embedder
    from tiergate.service.heap import pin_mmap_threshold

    pin_mmap_threshold()  # as `tiergate serve` does, before any model loads: the heap of the gateway
    torch.set_num_threads(1)
    fp32 = load_embedder(ModelsConfig(device="cpu"))
    # What the cache embeds with (int8 by default); every method below uses its vectors.
    embedder = query_encoder(fp32, CacheConfig().query_precision)
    lexicon = Lexicon.load()
    rows = [json.loads(line) for line in (DATA / "pairs.jsonl").read_text().splitlines() if line.strip()]
    a_texts = sorted({r["a"] for r in rows})
    a_vecs = embedder.encode(a_texts)
    b_vecs = embedder.encode([r["b"] for r in rows])
    a_map = dict(zip(a_texts, a_vecs, strict=True))
    results: dict[str, Any] = {"pairs": len(rows), "machine": f"{os.cpu_count()} cores", "methods": {},
                               "loadavg_at_start": os.getloadavg(), "query_encoder": embedder.mode}

    # 1. Side by side on the pairs.
    curve = {}
    for t in np.round(np.arange(0.70, 1.0001, 0.01), 3):
        s = score(rows, baseline(rows, a_vecs, a_texts, b_vecs, float(t)))["overall"]
        curve[float(t)] = (s["paraphrase_rate"], s["trap_rate"])
    ok = [t for t, (_, trap) in curve.items() if trap <= TRAP_BUDGET]
    best_t = min(ok) if ok else 1.0
    for name, t in (("gptcache_0.8", 0.8), ("redisvl_0.1", 0.9), (f"best_global_{best_t:.2f}", best_t)):
        results["methods"][name] = score(rows, baseline(rows, a_vecs, a_texts, b_vecs, t))
    t0 = time.perf_counter()
    served, _ = tiergate_run(rows, embedder, lexicon, a_map)
    results["methods"]["tiergate"] = score(rows, served)
    results["tiergate_eval_seconds"] = time.perf_counter() - t0
    tg_curve = {}
    for off in (-0.08, -0.04, 0.0, 0.04):
        s = score(rows, tiergate_run(rows, embedder, lexicon, a_map, off)[0])["overall"]
        tg_curve[off] = (s["paraphrase_rate"], s["trap_rate"])
    results["curves"] = {"global_threshold": curve, "tiergate_offset": tg_curve}

    # 1b. The held-out sets (see the module docstring for how each was written).
    results["heldout_sets"] = {}
    for name in ("heldout", "heldout2"):
        held = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]
        h_a = sorted({r["a"] for r in held})
        h_avecs = embedder.encode(h_a)
        h_bvecs = embedder.encode([r["b"] for r in held])
        entry: dict[str, Any] = {"pairs": len(held), "methods": {
            mname: score(held, baseline(held, h_avecs, h_a, h_bvecs, t))
            for mname, t in (("gptcache_0.8", 0.8), ("redisvl_0.1", 0.9), (f"best_global_{best_t:.2f}", best_t))
        }}
        h_served, _ = tiergate_run(held, embedder, lexicon, dict(zip(h_a, h_avecs, strict=True)))
        entry["methods"]["tiergate"] = score(held, h_served)
        entry["tiergate_by_kind"] = by_kind(held, h_served)
        results["heldout_sets"][name] = entry
    results["tiergate_by_kind"] = by_kind(rows, served)

    # 2. Growth: false hits per category as filler entries are added.
    sizes = [1000, 5000, 20000] if args.quick else [1000, 5000, 20000, 50000]
    n_real = min(max(sizes), 20000)
    eval_texts = {r[k].lower() for r in rows for k in ("a", "b")}
    fill = [f for f in fillers(n_real + 200) if f[1].lower() not in eval_texts][:n_real]
    t0 = time.perf_counter()
    fill_vecs = embedder.encode([q for _, q in fill], batch_size=128)
    results["filler_encode_per_s"] = n_real / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    extra_needed = max(sizes) - n_real
    pick = rng.integers(0, n_real, size=(extra_needed, 2))
    mixed = fill_vecs[pick[:, 0]] + 0.35 * fill_vecs[pick[:, 1]]
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    all_fill = [(c, q, v) for (c, q), v in zip(fill, fill_vecs, strict=True)]
    all_fill += [(fill[i][0], fill[i][1] + f" ({k})", v)
                 for k, (i, v) in enumerate(zip(pick[:, 0], mixed, strict=True))]
    growth = {}
    for n in sizes:
        served, cache = tiergate_run(rows, embedder, lexicon, a_map, extra=all_fill[:n])
        s = score(rows, served)
        growth[n] = {
            cat: {"wrong_rate": v["wrong_rate"], "paraphrase_rate": v["paraphrase_rate"],
                  "trap_rate": v["trap_rate"]}
            for cat, v in s.items()
        }
        growth[n]["entries"] = len(cache)
        growth[n]["filler_hits"] = [(r["b"], x[len(FILLER_MARK):]) for r, x in zip(rows, served, strict=True)
                                    if isinstance(x, str) and x.startswith(FILLER_MARK)]
        del cache
        gc.collect()
    results["growth"] = growth
    results["budget"] = TRAP_BUDGET
    results["budget_held"] = all(
        v["wrong_rate"] is None or v["wrong_rate"] <= TRAP_BUDGET
        for g in growth.values() for k, v in g.items() if k not in ("entries", "filler_hits")
    )

    # 3. ANN lookup latency at 100k entries: the cache's 8-bit index beside fp16.
    n_ann = 100_000
    pick = rng.integers(0, len(all_fill), size=(n_ann, 2))
    base_vecs = np.stack([v for _, _, v in all_fill])
    vecs = base_vecs[pick[:, 0]] + 0.3 * base_vecs[pick[:, 1]]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = vecs.astype(np.float32)
    cfg = CacheConfig()
    grid = vector_range(embedder.encode([q for c in cfg.categories for q in c.examples]))
    queries = b_vecs[rng.integers(0, len(b_vecs), size=2000)]
    results["ann_100k"] = {"vector_range": grid}
    for name, rng_ in (("int8", grid), ("fp16", None)):
        results["ann_100k"][name] = ann_study(vecs, queries, cfg, rng_)
        print(name, results["ann_100k"][name], flush=True)
    gc.collect()

    # Full cache at 100k, in a fresh process (memory freed by the steps above would hide growth):
    # bytes per entry besides the response, and lookups per second.
    cats = [c.name for c in cfg.categories if c.enabled]
    stored = [(cats[i % len(cats)], all_fill[pick[i, 0]][1] + f" #{i}") for i in range(n_ann)]
    probe = [r["b"] for r in rows][:300]
    results["cache_100k"] = run_cache_child(vecs, stored, probe)
    cache_100k = results["cache_100k"]
    results["bytes_per_entry"] = cache_100k["bytes_per_entry"]
    results["ann_m"] = cfg.ann.m
    results["lookups_100k"] = cache_100k["lookups"]
    results["loadavg_before_gateway"] = os.getloadavg()
    results["gateway_hit_latency"] = (
        {"status": "skipped (--no-gateway)"} if args.no_gateway else gateway_hit_latency(rows)
    )
    results["loadavg_at_end"] = os.getloadavg()
    write(results)


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "semcache.json").write_text(json.dumps(results, indent=2, default=float))
    lines = ["# Semantic cache: tiergate vs single-threshold caches", "",
             f"{results['pairs']} labelled pairs, all-MiniLM-L6-v2 embeddings ({results['query_encoder']} query "
             f"path, the same vectors for every method), {results['machine']}, shared with other work: load "
             f"average {_load(results['loadavg_at_start'])} at the start, {_load(results['loadavg_at_end'])} at "
             "the end, so every speed below is pessimistic. Paraphrases served = the right cached answer; traps "
             "served = a wrong answer.", "",
             "| method | category | paraphrases served | traps served | wrong answers (all lookups) |",
             "|---|---|---|---|---|"]
    for name, by in results["methods"].items():
        for cat in ["overall", "code", "math", "factual", "conversational", "time_sensitive", "personal"]:
            s = by.get(cat)
            if s is None:
                continue
            pr = "-" if s["paraphrase_rate"] is None else f"{s['paraphrase_rate']:.1%}"
            tr = "-" if s["trap_rate"] is None else f"{s['trap_rate']:.1%}"
            wr = "-" if s["wrong_rate"] is None else f"{s['wrong_rate']:.1%}"
            if cat == "personal":
                tr = f"personal served: {s.get('personal_served', 0)}/{s.get('personal', 0)}"
            lines.append(f"| {name} | {cat} | {pr} | {tr} | {wr} |")
    lines += ["", "## Held-out pairs", "",
              "`heldout` (78 pairs) was written after an earlier version of the guard was frozen; its failures "
              "were looked at while later rules were written, so it is no longer blind. `heldout2` (141 pairs) "
              "was written before the previous round of rules and scored once after it; during the latest round "
              "(grammar rules, math and time-sensitive thresholds at 0.77, developed on the dev pairs) both sets "
              "were scored after each change as a regression check, and one heldout2 regression seen that way "
              "shaped a rule (\"fall\" as a verb), so neither is fully blind.", "",
              "| set | method | paraphrases served | traps served |", "|---|---|---|---|"]
    for set_name, entry in results["heldout_sets"].items():
        for name, by in entry["methods"].items():
            o = by["overall"]
            lines.append(f"| {set_name} ({entry['pairs']}) | {name} | {o['paraphrase_rate']:.1%} "
                         f"({o['paraphrases_served']}/{o['paraphrases']}) | {o['trap_rate']:.1%} "
                         f"({o['traps_served']}/{o['traps']}) |")
    lines += ["", "tiergate per pair kind (served / pairs; for paraphrases served is right, for traps wrong):", "",
              "| kind | dev | heldout | heldout2 |", "|---|---|---|---|"]
    kinds = sorted(set(results["tiergate_by_kind"]) | {k for e in results["heldout_sets"].values()
                                                        for k in e["tiergate_by_kind"]})
    for kind in kinds:
        cells = []
        for src in (results["tiergate_by_kind"], *(e["tiergate_by_kind"] for e in results["heldout_sets"].values())):
            c = src.get(kind)
            cells.append(f"{c['served']}/{c['n']}" if c else "-")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    held = results["budget_held"]
    lines += ["", f"## Wrong answers as the cache grows (budget {results['budget']:.0%}; held: {held})",
              "Wrong answers = traps served + paraphrases answered with another labelled entry. A paraphrase "
              "answered with a filler entry is counted in the last column and listed in the JSON (fillers are "
              "unlabelled; many such hits are right, e.g. \"bitcoin price now\" -> \"What is the price of bitcoin "
              "today?\").", "",
              "| entries (fillers) | " + " | ".join(["overall", "code", "math", "factual", "conversational",
                                                      "time_sensitive"]) + " | paraphrases served a filler |",
              "|---" * 8 + "|"]
    for n, g in results["growth"].items():
        cells = []
        for cat in ["overall", "code", "math", "factual", "conversational", "time_sensitive"]:
            v = g.get(cat, {}).get("wrong_rate")
            cells.append("-" if v is None else f"{v:.1%}")
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {len(g['filler_hits'])} |")
    a = results["ann_100k"]
    lk = results["lookups_100k"]
    b = results["bytes_per_entry"]
    conc = ", ".join(f"{c['lookups_per_s']:.0f}/s ({c['lookups_per_cpu_s']:.0f} per CPU-second) with {c['callers']} "
                     f"callers (mean batch {c['mean_batch']:.1f})" for c in lk["concurrent_through_batcher"])
    ann = [f"{name} p50 {a[name]['p50_ms']:.3f} ms, p99 {a[name]['p99_ms']:.3f} ms, top-1 recall "
           f"{a[name]['top1_recall']:.1%}, {a[name]['index_bytes_per_entry']:.0f} B per entry, build "
           f"{a[name]['build_s']:.1f} s" for name in ("int8", "fp16")]
    total = b["in_memory_index_and_bookkeeping"] + b["stored_metadata_record"]
    lines += ["", "## Speed and size at 100k entries", "",
              f"- ANN search (HNSW, M={results['ann_m']}, k=8): " + "; ".join(ann) + ". The cache uses int8 (a "
              f"uniform grid over ±{a['vector_range']:.3f}, fitted to the model's example embeddings)",
              f"- embedding one query: {lk['embedding_ms']:.1f} ms on the cache's query path "
              f"({results['query_encoder']}), {lk['embedding_ms_sentence_transformers_fp32']:.1f} ms through "
              "sentence-transformers in torch fp32 (one thread)",
              f"- full semantic lookups (embed + search + guard), one at a time: {lk['semantic_lookups_per_s']:.0f}/s "
              f"(mean {lk['mean_ms']:.1f} ms; {lk['semantic_lookups_per_cpu_s']:.0f} per CPU-second); "
              f"{lk['batched_lookups_per_s']:.0f}/s with `lookup_many` in batches of 32 "
              f"({lk['batched_lookups_per_cpu_s']:.0f} per CPU-second). Wall-clock rates share the 2 cores with "
              "other jobs; per CPU-second is what one otherwise idle core does",
              f"- concurrent callers through the micro-batcher (`await cache.batcher.lookup(...)`): {conc}",
              f"- bytes per entry besides the response: {total:.0f} = {b['in_memory_index_and_bookkeeping']:.0f} "
              f"in process (index + bookkeeping) + {b['stored_metadata_record']:.0f} metadata record in the tiered "
              f"store (queries of {b['mean_query_chars']:.0f} characters on average). Measured in a fresh process "
              "(faiss imported first, glibc's mmap threshold pinned as `tiergate serve` pins it): RSS growth per "
              "entry, minus everything the in-memory test store holds. "
              f"That store's own dict, keys and object headers add {b['test_store_own_bookkeeping']:.0f} B per "
              "entry (two objects) on top, "
              "listed apart because it is the test store's bookkeeping, not the cache's (a TieredStore keeps its "
              "own instead)"]
    g = results["gateway_hit_latency"]
    if "rows" in g:
        lines += ["", "## Hits through a real gateway (`tiergate serve`, loopback upstream)", "",
                  f"{g['stored']} stored questions; the semantic rows cycle through {g['paraphrase_pool']} true "
                  "paraphrases of them (a different text each request). Latency counts only responses with that "
                  "outcome; the share of requests that had it is listed. Verification sampling off. The chat route "
                  "looks up through the cache's micro-batcher (concurrent lookups are embedded together). Load "
                  f"average before: {_load(results['loadavg_before_gateway'])}.", "",
                  "| hit | concurrency | p50 ms | p99 ms | hits/s | share of requests |", "|---|---|---|---|---|---|"]
        for r in g["rows"]:
            lines.append(f"| {r['hit']} | {r['concurrency']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                         f"{r['hits_per_s']:.0f} | {r['hit_share']:.0%} |")
    else:
        lines += ["", "- through-gateway hit latency: " + g["status"]]
    (RESULTS / "semcache.md").write_text("\n".join(lines) + "\n")
    plot(results)


def _load(avg: Any) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    g = results["curves"]["global_threshold"]
    ax.plot([v[1] for v in g.values()], [v[0] for v in g.values()], "o-", ms=3, label="single global threshold")
    t = results["curves"]["tiergate_offset"]
    ax.plot([v[1] for v in t.values()], [v[0] for v in t.values()], "s-", ms=4,
            label="tiergate (category thresholds ± offset, guard)")
    for name, by in results["methods"].items():
        o = by["overall"]
        ax.scatter([o["trap_rate"]], [o["paraphrase_rate"]], zorder=5, s=40)
        ax.annotate(name, (o["trap_rate"], o["paraphrase_rate"]), textcoords="offset points", xytext=(5, -10),
                    fontsize=8)
    for set_name, entry in results.get("heldout_sets", {}).items():
        o = entry["methods"]["tiergate"]["overall"]
        ax.scatter([o["trap_rate"]], [o["paraphrase_rate"]], marker="^", s=50, zorder=5)
        ax.annotate(f"tiergate, {set_name}", (o["trap_rate"], o["paraphrase_rate"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.axvline(TRAP_BUDGET, color="grey", ls=":", lw=1)
    ax.axhline(0.75, color="grey", ls=":", lw=1)
    ax.set_xlabel("traps served (wrong answers)")
    ax.set_ylabel("true paraphrases served")
    ax.set_title("Semantic cache: hit rate vs wrong answers")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "semcache.png", dpi=120)


if __name__ == "__main__":
    main()
