"""Chunk KV reuse: fidelity, time to first token and reuse, side by side in one run.

CPU, real SmolLM2 weights, MuSiQue prompts (system + passages + question):

    .venv/bin/python benchmarks/kvstore.py --requests 16 --passages 5

  - stream: the requests in a realistic order (popular questions come back as paraphrases that
    retrieve an overlapping set of passages in another order); full prefill vs exact prefix
    caching vs tiergate at the default ratio, cold store, TTFT and tokens reused;
  - sweep: every request with all its chunks stored, r in RATIOS plus the adaptive ratio,
    int8-compressed KV and chunks computed at position 0 (no sink): KL of the first-token
    distribution, first-token agreement and identical 32-token greedy answers vs full prefill;
  - tiers: load rate of chunk KV from host, disk and Redis against the limits measured here.

GPU (random weights, timing only; merges a "gpu" section into an existing kvstore.json):

    python benchmarks/kvstore.py --device cuda --shape 7b --tokens 2048,8192 --random-weights --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tiergate.engine.generate import Engine  # noqa: E402
from tiergate.engine.prompt import Document, PromptPlan, Segment, plan_chat  # noqa: E402
from tiergate.kvstore import KVConfig, KVOptions, KVStore  # noqa: E402
from tiergate.tiers import StoreConfig, TieredStore  # noqa: E402

RATIOS = (0.0, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0)
DEFAULT_RATIO = 0.15
SYSTEM = (
    "You are a question answering assistant. Answer the question using the documents below. Answer with a short phrase."
)


# ---------------------------------------------------------------- helpers


def store_config(
    tmp: Path | None = None,
    *,
    host: bool = True,
    disk: bool = False,
    gpu: bool = False,
    redis_url: str | None = None,
    budget: int = 16 << 30,
) -> StoreConfig:
    return StoreConfig(
        gpu={"enabled": gpu, "budget_bytes": budget},
        host={"enabled": host, "budget_bytes": budget},
        disk={"enabled": disk, "path": str(tmp) if (disk and tmp) else None, "budget_bytes": budget, "fsync": False},
        redis={
            "enabled": redis_url is not None,
            "url": redis_url or "redis://127.0.0.1:1/0",
            "timeout_s": 10.0,
            "max_object_bytes": 1 << 30,
        },
        sweep_interval_s=0,
        promote_on_hit=False,
    )


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A private redis-server for the run, if one is installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="kvbench-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--proto-max-bulk-len",
            "2gb",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def held(lock: str | None) -> Iterator[None]:
    """Hold an flock on `lock` (if given), so one request's timings run on a quiet machine
    without holding the lock for the whole run."""
    if not lock:
        yield
        return
    import fcntl

    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def kl_first_token(ref: torch.Tensor, logits: torch.Tensor) -> float:
    lp_ref = torch.log_softmax(ref.float(), -1)
    lp = torch.log_softmax(logits.float(), -1)
    return float((lp_ref.exp() * (lp_ref - lp)).sum())


@torch.inference_mode()
def answer(
    engine: Engine, plan: PromptPlan, kv: KVOptions, n_tokens: int, ref: list[int] | None = None
) -> dict[str, Any]:
    """Prefill (timed) then greedy decode of n_tokens; with `ref`, decoding stops at the first
    token that differs from it (all a same-answer check needs)."""
    pre = engine.prefill(plan, kv)
    model = engine.gen.model
    logits, cache, pos = pre.logits, pre.cache, pre.prompt_tokens
    tokens: list[int] = []
    for _ in range(n_tokens):
        tok = int(torch.argmax(logits))
        tokens.append(tok)
        if tok in engine.eos_ids or len(tokens) == n_tokens:
            break
        if ref is not None and (len(tokens) > len(ref) or tokens[-1] != ref[len(tokens) - 1]):
            break
        out = model(
            input_ids=torch.tensor([[tok]], device=model.device),
            past_key_values=cache,
            cache_position=torch.tensor([pos], device=model.device),
            use_cache=True,
        )
        logits, cache, pos = out.logits[0, -1], out.past_key_values, pos + 1
    return {
        "logits": pre.logits,
        "tokens": tokens,
        "ttft": pre.extra["prefill_s"],
        "cached": pre.cached_tokens,
        "recomputed": pre.recomputed_tokens,
        "prompt": pre.prompt_tokens,
        "ratios": pre.extra.get("chunk_ratios", {}),
    }


# ---------------------------------------------------------------- MuSiQue stream


def build_stream(data: list[dict[str, Any]], n: int, passages: int, seed: int) -> list[dict[str, Any]]:
    """n requests: questions drawn with Zipf-like popularity; each ask retrieves `passages` of
    the question's 10 passages, a different subset and order each time (paraphrases retrieve
    overlapping results in other ranks)."""
    rng = random.Random(seed)
    pool = list(range(len(data)))
    rng.shuffle(pool)
    pool = pool[: max(2, n // 2)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(pool))]
    stream, seen = [], set()
    for i in range(n):
        # The first asks cover distinct questions, later ones revisit popular ones.
        unseen = [q for q in pool if q not in seen]
        q = unseen[0] if unseen and i % 2 == 0 else rng.choices(pool, weights)[0]
        seen.add(q)
        ctxs = data[q]["ctxs"]
        idx = rng.sample(range(len(ctxs)), min(passages, len(ctxs)))
        docs = [Document((ctxs[j]["title"] + "\n" + ctxs[j]["text"]).strip(), id=f"q{q}p{j}") for j in idx]
        stream.append({"question": data[q]["question"], "q": q, "docs": docs})
    return stream


def run_cpu(args: argparse.Namespace) -> dict[str, Any]:
    from tiergate.config import load_settings
    from tiergate.models import load_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = load_settings(data_dir=args.data_dir, models={"device": "cpu"})
    gen = load_generator(settings.models, settings.data_dir)
    data = json.loads((Path(args.data) / "musique_s.json").read_text())
    stream = build_stream(data, args.requests, args.passages, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="kvbench-"))
    results: dict[str, Any] = {
        "model": gen.model_id,
        "requests": args.requests,
        "passages": args.passages,
        "answer_tokens": args.answer_tokens,
        "threads": torch.get_num_threads(),
        "loadavg_at_start": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    full = Engine(gen)
    stores: list[TieredStore] = []

    def engine(cfg: StoreConfig, **kv: Any) -> Engine:
        tiers = TieredStore(cfg)
        stores.append(tiers)
        return Engine(gen, kv_store=KVStore(tiers, KVConfig(**kv)))

    with redis_server() as redis_url:
        prefix_eng = engine(store_config(), prefix_block_tokens=16)  # vLLM's block size
        stream_eng = engine(store_config(tmp / "stream", disk=True, redis_url=redis_url))
        sweep = {"prefix": engine(store_config())}
        # The same stored chunks, ranked the CacheBlend way (K/V deviation at the selection layer).
        sweep["deviation"] = Engine(gen, kv_store=KVStore(sweep["prefix"].kv_store.tiers,
                                                          KVConfig(selection="deviation")))
        if not args.quick:
            sweep["sink"] = engine(store_config(), chunk_context="sink")
            sweep["pos0"] = engine(store_config(), chunk_context="none")
            sweep["int8"] = engine(store_config(), compression="int8")
        variants = [(f"r={r:g}", "prefix", KVOptions(recompute_ratio=r)) for r in RATIOS]
        variants += [
            (f"adaptive r={DEFAULT_RATIO:g}", "prefix", KVOptions(recompute_ratio=DEFAULT_RATIO, adaptive=True)),
            (f"deviation r={DEFAULT_RATIO:g}", "deviation", KVOptions(recompute_ratio=DEFAULT_RATIO)),
        ]
        if not args.quick:
            variants += [
                (f"int8 r={DEFAULT_RATIO:g}", "int8", KVOptions(recompute_ratio=DEFAULT_RATIO)),
                ("sink r=0", "sink", KVOptions(recompute_ratio=0.0)),
                (f"sink r={DEFAULT_RATIO:g}", "sink", KVOptions(recompute_ratio=DEFAULT_RATIO)),
                ("pos0 r=0", "pos0", KVOptions(recompute_ratio=0.0)),
                (f"pos0 r={DEFAULT_RATIO:g}", "pos0", KVOptions(recompute_ratio=DEFAULT_RATIO)),
            ]
        rows: list[dict[str, Any]] = []
        t_start = time.perf_counter()

        def run_request(i: int, req: dict[str, Any]) -> dict[str, Any]:
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": req["question"]}]
            plan = plan_chat(gen.tokenizer, msgs, req["docs"], full.template)
            row: dict[str, Any] = {
                "i": i,
                "q": req["q"],
                "prompt_tokens": len(plan),
                "chunk_tokens": sum(len(s.token_ids) for s in plan.segments if s.kind == "chunk"),
            }
            ref = answer(full, plan, KVOptions(enabled=False), args.answer_tokens)
            row["full"] = {"ttft": ref["ttft"]}
            pc = answer(prefix_eng, plan, KVOptions(chunks=False), 1)
            row["prefix"] = {
                "ttft": pc["ttft"],
                "cached": pc["cached"],
                "kl": kl_first_token(ref["logits"], pc["logits"]),
            }
            st = answer(stream_eng, plan, KVOptions(recompute_ratio=DEFAULT_RATIO), 1)
            row["stream"] = {
                "ttft": st["ttft"],
                "cached": st["cached"],
                "recomputed": st["recomputed"],
                "agree": st["tokens"][0] == ref["tokens"][0],
                "kl": kl_first_token(ref["logits"], st["logits"]),
            }
            for eng in sweep.values():
                eng.prefiller.warm(plan)
            row["sweep"] = {}
            for name, which, kv in variants:
                out = answer(sweep[which], plan, kv, args.answer_tokens, ref["tokens"])
                row["sweep"][name] = {
                    "ttft": out["ttft"],
                    "kl": kl_first_token(ref["logits"], out["logits"]),
                    "agree": out["tokens"][0] == ref["tokens"][0],
                    "same_answer": out["tokens"] == ref["tokens"],
                    "cached": out["cached"],
                    "recomputed": out["recomputed"],
                }
            return row

        for i, req in enumerate(stream):
            with held(args.lock):
                rows.append(run_request(i, req))
            row = rows[-1]
            # Rows so far, so a run cut short still leaves its numbers.
            (Path(tempfile.gettempdir()) / "kvstore_rows.json").write_text(json.dumps(rows, default=str))
            print(
                f"[{i + 1}/{len(stream)}] {row['prompt_tokens']} tok  full {row['full']['ttft']:.2f}s  "
                f"stream {row['stream']['ttft']:.2f}s cached {row['stream']['cached']}  "
                f"prefix cached {row['prefix']['cached']}  r=.15 KL {row['sweep']['r=0.15']['kl']:.4f}  "
                f"({time.perf_counter() - t_start:.0f}s)",
                flush=True,
            )
        results["loadavg_at_end"] = os.getloadavg()

        results["rows"] = rows
        results["tiers"] = tier_rates(stream_eng, redis_url, tmp)
        results["stream_stats"] = stream_eng.kv_store.stats.as_dict()
        results["bytes_per_token"] = bytes_per_token(stream_eng, sweep.get("int8"), redis_url)
    for s in stores:
        s.close()
    shutil.rmtree(tmp, ignore_errors=True)
    results["summary"] = summarize(rows, [v[0] for v in variants])
    return results


def bytes_per_token(eng: Engine, int8: Engine | None, redis_url: str | None) -> dict[str, Any]:
    fmt = eng.prefiller.fmt
    tiers = eng.kv_store.tiers
    stats = tiers.stats()
    out: dict[str, Any] = {
        "format": fmt.name,
        "payload": fmt.bytes_per_token(),
        "int8_payload": int8.prefiller.fmt.bytes_per_token() if int8 is not None else None,
    }
    keys = [k for k in tiers.keys("kv") if k.startswith("chunk/")]
    tokens = sum(tiers.meta("kv", k).size // fmt.bytes_per_token() for k in keys)
    if tiers.disk is not None:
        from tiergate.tiers import codec

        disk_bytes = 0
        for f in Path(tiers.disk.path).rglob("*.obj"):
            with open(f, "rb") as fh:
                if codec.parse_header(fh.read(1 << 16)).key.startswith("chunk/"):
                    disk_bytes += f.stat().st_size
        out["disk"] = disk_bytes / max(1, tokens)
    if redis_url:
        import redis

        r = redis.Redis.from_url(redis_url)
        used = sum(r.memory_usage(k) or 0 for k in r.scan_iter("tiergate:obj:kv|chunk/*"))
        out["redis"] = used / max(1, tokens)
    out["host"] = fmt.bytes_per_token()
    out["chunk_tokens_stored"] = tokens
    out["store_stats"] = {t: v for t, v in stats.get("tiers", {}).items()} if isinstance(stats, dict) else {}
    return out


def _drop_page_cache(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def tier_rates(eng: Engine, redis_url: str | None, tmp: Path) -> dict[str, Any]:
    """Load rate of stored chunk KV per tier, against this machine's own limits."""
    src = eng.kv_store.tiers
    keys = [k for k in src.keys("kv") if k.startswith("chunk/")][:16]
    values = {k: src.get("kv", k, as_="torch") for k in keys}
    nbytes = sum(v.numel() * v.element_size() for v in values.values())
    out: dict[str, Any] = {"objects": len(keys), "bytes": nbytes}
    # host: a get hands back the stored tensor; the useful limit is a memcpy of the same bytes.
    big = torch.cat([v.reshape(-1).view(torch.uint8) for v in values.values()])
    dst = torch.empty_like(big)
    t0 = time.perf_counter()
    dst.copy_(big)
    out["memcpy_GBps"] = nbytes / (time.perf_counter() - t0) / 1e9
    with TieredStore(store_config(tmp / "rates", host=False, disk=True)) as disk_store:
        disk_store.put_many("kv", values)
        _drop_page_cache(tmp / "rates")
        t0 = time.perf_counter()
        got = disk_store.get_many("kv", keys, as_="torch")
        out["disk_GBps"] = sum(v.numel() * v.element_size() for v in got.values()) / (time.perf_counter() - t0) / 1e9
        files = sorted((tmp / "rates").rglob("*.obj"))
        _drop_page_cache(tmp / "rates")
        t0 = time.perf_counter()
        total = 0
        for f in files:
            with open(f, "rb", buffering=0) as fh:
                while chunk := fh.read(8 << 20):
                    total += len(chunk)
        out["disk_plain_read_GBps"] = total / (time.perf_counter() - t0) / 1e9
    if redis_url:
        import redis

        with TieredStore(store_config(host=False, redis_url=redis_url)) as rstore:
            t0 = time.perf_counter()
            got = {k: rstore.get("kv", k, as_="torch") for k in keys}
            dt = time.perf_counter() - t0
            out["redis_GBps"] = sum(v.numel() * v.element_size() for v in got.values() if v is not None) / dt / 1e9
        client = redis.Redis.from_url(redis_url)
        blob = os.urandom(len(big) // max(1, len(keys)))
        client.set("kvbench:raw", blob)
        t0 = time.perf_counter()
        for _ in keys:
            client.get("kvbench:raw")
        out["redis_raw_get_GBps"] = len(blob) * len(keys) / (time.perf_counter() - t0) / 1e9
        client.delete("kvbench:raw")
    costs = eng.kv_store.costs
    out["token_layer_seconds"] = costs.token_layer_seconds
    out["bandwidth_estimates"] = dict(costs.bandwidth)
    return out


def summarize(rows: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    def mean(xs: list[float]) -> float:
        return statistics.fmean(xs) if xs else float("nan")

    full = [r["full"]["ttft"] for r in rows]
    s: dict[str, Any] = {"full_ttft_mean": mean(full)}
    s["prefix"] = {
        "ttft_speedup": mean(full) / mean([r["prefix"]["ttft"] for r in rows]),
        "tokens_reused": sum(r["prefix"]["cached"] for r in rows),
    }
    st = [r["stream"] for r in rows]
    s["stream"] = {
        "ttft_speedup": mean(full) / mean([x["ttft"] for x in st]),
        "tokens_reused": sum(x["cached"] for x in st),
        "first_token_agreement": mean([float(x["agree"]) for x in st]),
        "max_slowdown": max(x["ttft"] / r["full"]["ttft"] for x, r in zip(st, rows, strict=True)),
        "warm_ttft_speedup": None,
    }
    warm = [(r["full"]["ttft"], r["stream"]["ttft"]) for r in rows if r["stream"]["cached"] > 0]
    if warm:
        s["stream"]["warm_ttft_speedup"] = mean([a for a, _ in warm]) / mean([b for _, b in warm])
    s["prompt_tokens"] = sum(r["prompt_tokens"] for r in rows)
    s["reuse_vs_prefix"] = s["stream"]["tokens_reused"] / max(1, s["prefix"]["tokens_reused"])
    s["sweep"] = {}
    for name in variants:
        xs = [r["sweep"][name] for r in rows]
        chunk = sum(r["chunk_tokens"] for r in rows)
        s["sweep"][name] = {
            "kl_mean": mean([x["kl"] for x in xs]),
            "kl_max": max(x["kl"] for x in xs),
            "first_token_agreement": mean([float(x["agree"]) for x in xs]),
            "identical_answers": mean([float(x["same_answer"]) for x in xs]),
            "ttft_speedup": mean(full) / mean([x["ttft"] for x in xs]),
            "recomputed_share": sum(x["recomputed"] for x in xs) / max(1, chunk),
            "max_slowdown": max(x["ttft"] / r["full"]["ttft"] for x, r in zip(xs, rows, strict=True)),
        }
    return s


# ---------------------------------------------------------------- GPU, random weights


def shape_config(shape: str) -> Any:
    from transformers import LlamaConfig

    if shape == "smollm2":
        return LlamaConfig(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            vocab_size=49152,
            rope_theta=100000.0,
            max_position_embeddings=16384,
            tie_word_embeddings=True,
        )
    if shape == "7b":  # Mistral-7B / Llama-3-8B-like: GQA with 8 KV heads
        return LlamaConfig(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=32000,
            rope_theta=1e6,
            max_position_embeddings=32768,
        )
    raise SystemExit(f"unknown shape {shape!r}")


def random_generator(shape: str, device: str, dtype: torch.dtype) -> Any:
    from transformers import LlamaForCausalLM

    from tiergate.models import Generator

    cfg = shape_config(shape)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model.eval()

    class _Tok:  # the synthetic path plans token ids directly; only the fingerprint needs this
        eos_token_id = None

        def get_vocab(self) -> dict[str, int]:
            return {"<random>": 0}

    return Generator(model, _Tok(), f"random-{shape}", f"random-{shape}@seed0", device, dtype)


def synthetic_plan(tokens: int, chunk: int, seed: int, vocab: int, chunk_pool: list[tuple[int, ...]]) -> PromptPlan:
    rng = random.Random(seed)
    prefix = tuple(rng.randrange(vocab) for _ in range(64))
    suffix = tuple(rng.randrange(vocab) for _ in range(32))
    n_chunks = max(1, (tokens - 96) // chunk)
    chunks = rng.sample(chunk_pool, min(n_chunks, len(chunk_pool)))
    segs = [Segment("prefix", prefix), *[Segment("chunk", c) for c in chunks], Segment("suffix", suffix)]
    return PromptPlan(tuple(segs))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_gpu(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = random_generator(args.shape, device, dtype)
    vocab = gen.model.config.vocab_size
    out: dict[str, Any] = {
        "shape": args.shape,
        "selection": args.selection,
        "device": device,
        "dtype": str(dtype),
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "points": [],
    }
    if device == "cuda":
        n = 1 << 30
        host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(n, dtype=torch.uint8, device="cuda")
        for _ in range(2):
            dev.copy_(host, non_blocking=True)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            dev.copy_(host, non_blocking=True)
        _sync(device)
        out["pinned_h2d_GBps"] = 5 * n / (time.perf_counter() - t0) / 1e9
        del host, dev
    rng = random.Random(args.seed)
    chunk_pool = [tuple(rng.randrange(vocab) for _ in range(args.chunk_tokens)) for _ in range(64)]
    tmp = Path(tempfile.mkdtemp(prefix="kvbench-gpu-"))
    tiers = {"gpu": dict(gpu=True, host=False), "host": dict(host=True), "disk": dict(host=False, disk=True)}
    if device != "cuda":
        tiers.pop("gpu")
    full = Engine(gen)
    for tokens in args.tokens:
        plans = [
            synthetic_plan(tokens, args.chunk_tokens, args.seed + i, vocab, chunk_pool) for i in range(args.repeats + 1)
        ]
        point: dict[str, Any] = {"tokens": len(plans[0])}
        ttft = []
        for i, plan in enumerate(plans):
            pre = full.prefill(plan, KVOptions(enabled=False))
            if i:
                ttft.append(pre.extra["prefill_s"])
        point["full"] = statistics.median(ttft)
        # HF's own forward, for reference
        ids = torch.tensor([plans[1].token_ids], device=device)
        with torch.inference_mode():
            gen.model(input_ids=ids, logits_to_keep=1)
            _sync(device)
            t0 = time.perf_counter()
            gen.model(input_ids=ids, logits_to_keep=1)
            _sync(device)
        point["hf_forward"] = time.perf_counter() - t0
        for tier, kw in tiers.items():
            for decide in (False, True):
                with TieredStore(store_config(tmp / f"{tier}{tokens}{decide}", **kw)) as ts:
                    eng = Engine(gen, kv_store=KVStore(ts, KVConfig(decide_load=decide, selection=args.selection)))
                    times, loaded = [], []
                    for i, plan in enumerate(plans):
                        eng.prefiller.warm(plan)
                        if tier == "disk":
                            _drop_page_cache(tmp / f"{tier}{tokens}{decide}")
                        before = eng.kv_store.stats.as_dict()
                        pre = eng.prefill(plan, KVOptions(recompute_ratio=DEFAULT_RATIO, store=False))
                        after = eng.kv_store.stats.as_dict()
                        if i:
                            times.append(pre.extra["prefill_s"])
                            lb = sum(after["load_bytes"].values()) - sum(before["load_bytes"].values())
                            ls = sum(after["load_seconds"].values()) - sum(before["load_seconds"].values())
                            loaded.append((lb, ls, pre.cached_tokens))
                    if device == "cuda" and not decide:
                        # What a load to the GPU costs from this tier, copy included.
                        keys = [k for k in ts.keys("kv") if k.startswith("chunk/")]
                        _sync(device)
                        t0 = time.perf_counter()
                        got = [ts.get("kv", k, as_="torch", device="cuda") for k in keys]
                        _sync(device)
                        dt = time.perf_counter() - t0
                        nb = sum(g.numel() * g.element_size() for g in got)
                        point[f"{tier}_to_gpu_GBps"] = nb / dt / 1e9
                        del got
                    name = f"{tier}{'' if not decide else '+decide'}"
                    lb = sum(x[0] for x in loaded)
                    ls = sum(x[1] for x in loaded)
                    point[name] = statistics.median(times)
                    point[f"{name}_load_GBps"] = lb / ls / 1e9 if ls else None
                    point[f"{name}_cached_tokens"] = statistics.mean(x[2] for x in loaded)
        point["speedup"] = {
            k: point["full"] / v
            for k, v in point.items()
            if isinstance(v, float) and k in {*tiers, *(t + "+decide" for t in tiers)}
        }
        out["points"].append(point)
        print(json.dumps(point), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if "pinned_h2d_GBps" in out:
        for p in out["points"]:
            rate = p.get("host_to_gpu_GBps")
            p["host_load_share_of_pinned"] = rate / out["pinned_h2d_GBps"] if rate else None
    return out


# ---------------------------------------------------------------- output


def write_markdown(res: dict[str, Any], path: Path) -> None:
    lines = ["# Chunk KV reuse benchmark", ""]
    if "cpu" in res:
        c = res["cpu"]
        s = c["summary"]
        lines += [
            f"CPU run: {c['model']}, {c['requests']} MuSiQue requests (system + {c['passages']} passages + "
            f"question), {c['threads']} torch threads on a {c['cpus']}-core machine shared with other work "
            f"(load average at start {c['loadavg_at_start'][0]:.1f}); timings are noisy, ratios are side by side "
            "on the same requests.",
            "",
            f"Mean prompt: {s['prompt_tokens'] / c['requests']:.0f} tokens. "
            f"Full prefill TTFT: {s['full_ttft_mean']:.2f} s.",
            "",
            "## Fidelity and TTFT vs full prefill (all chunks stored)",
            "",
            "| variant | KL mean | KL max | first-token agreement | identical 32-token answers "
            "| recomputed share | TTFT speedup | worst TTFT ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in s["sweep"].items():
            lines.append(
                f"| {name} | {v['kl_mean']:.4f} | {v['kl_max']:.4f} | {v['first_token_agreement']:.0%} | "
                f"{v['identical_answers']:.0%} | {v['recomputed_share']:.1%} | {v['ttft_speedup']:.2f}x | "
                f"{v['max_slowdown']:.2f} |"
            )
        st = s["stream"]
        lines += [
            "",
            "## Stream (cold store, realistic order)",
            "",
            "| method | tokens reused | TTFT speedup vs full | first-token agreement |",
            "|---|---|---|---|",
            f"| exact prefix caching | {s['prefix']['tokens_reused']} | {s['prefix']['ttft_speedup']:.2f}x | 100% |",
            f"| tiergate r={DEFAULT_RATIO} | {st['tokens_reused']} | {st['ttft_speedup']:.2f}x "
            f"(requests with reuse: {st['warm_ttft_speedup'] or float('nan'):.2f}x) "
            f"| {st['first_token_agreement']:.0%} |",
            "",
            f"Tokens reused vs prefix caching: {s['reuse_vs_prefix']:.1f}x of {s['prompt_tokens']} prompt tokens. "
            f"Worst per-request TTFT ratio (tiergate / full): {st['max_slowdown']:.2f}.",
            "",
            "## Tiers",
            "",
        ]
        if c.get("partial"):
            lines[-2:] = [c["partial"], ""]
    if "cpu" in res and "bytes_per_token" in res["cpu"]:
        c = res["cpu"]
        b = c["bytes_per_token"]
        lines.append(
            f"Bytes per token ({b['format']}): host {b['host']}, int8 payload {b['int8_payload'] or 'not run'}, "
            + ", ".join(f"{t} {b[t]:.0f}" for t in ("disk", "redis") if t in b)
            + " (disk and Redis include per-object headers; disk also holds prefix blocks)."
        )
        t = c["tiers"]
        lines.append("")
        lines.append(
            f"Load rates over {t['objects']} chunk objects ({t['bytes'] / 1e6:.0f} MB): "
            + ", ".join(f"{k} {v:.2f} GB/s" for k, v in t.items() if k.endswith("GBps"))
            + "."
        )
    if "gpu" in res:
        g = res["gpu"]
        lines += ["", f"## GPU ({g.get('gpu')}, {g['shape']} shape, {g['dtype']}, random weights)", ""]
        if g.get("pinned_h2d_GBps"):
            lines.append(f"Pinned host→GPU copy limit: {g['pinned_h2d_GBps']:.1f} GB/s.")
            lines.append("")
        lines.append(
            "| tokens | full prefill s | HF forward s | "
            + " | ".join(f"{k} s (speedup)" for k in g["points"][0]["speedup"])
            + " | host load share of pinned |"
        )
        lines.append("|---|---|---|" + "---|" * len(g["points"][0]["speedup"]) + "---|")
        for p in g["points"]:
            share = p.get("host_load_share_of_pinned")
            lines.append(
                f"| {p['tokens']} | {p['full']:.4f} | {p['hf_forward']:.4f} | "
                + " | ".join(f"{p[k]:.4f} ({v:.2f}x)" for k, v in p["speedup"].items())
                + f" | {share:.0%} |"
                if share
                else " | n/a |"
            )
    path.write_text("\n".join(lines) + "\n")


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (3 if "cpu" in res else 0) + (1 if "gpu" in res else 0)
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    axes = list(axes) if panels > 1 else [axes]
    if "cpu" in res:
        s = res["cpu"]["summary"]["sweep"]
        rs = [float(k.split("=")[1]) for k in s if k.startswith("r=")]
        fixed = [s[f"r={r:g}"] for r in rs]
        ax = axes.pop(0)
        ax.plot(rs, [v["first_token_agreement"] for v in fixed], "o-", label="first-token agreement")
        ax.plot(rs, [v["identical_answers"] for v in fixed], "s-", label="identical 32-token answers")
        ad = s[f"adaptive r={DEFAULT_RATIO:g}"]
        ax.plot([ad["recomputed_share"]], [ad["identical_answers"]], "r*", ms=12, label="adaptive (answers)")
        ax.set_xlabel("recompute ratio r")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title("Fidelity vs full prefill")
        ax = axes.pop(0)
        ax.semilogy(rs, [max(v["kl_mean"], 1e-7) for v in fixed], "o-", label="fixed ratio")
        ax.semilogy([ad["recomputed_share"]], [max(ad["kl_mean"], 1e-7)], "r*", ms=12, label="adaptive")
        ax2 = ax.twinx()
        ax2.plot(rs, [v["ttft_speedup"] for v in fixed], "g^--", label="TTFT speedup")
        ax2.set_ylabel("TTFT speedup vs full (x)", color="g")
        ax.set_xlabel("recompute ratio r")
        ax.set_ylabel("KL of first-token distribution")
        ax.legend(fontsize=8, loc="upper center")
        ax.set_title("KL and TTFT (CPU, SmolLM2)")
        ax = axes.pop(0)
        rows = res["cpu"]["rows"]
        xs = range(1, len(rows) + 1)
        cum = lambda key: [sum(r[key]["cached"] for r in rows[:i]) for i in xs]  # noqa: E731
        ax.plot(xs, cum("stream"), label=f"tiergate r={DEFAULT_RATIO}")
        ax.plot(xs, cum("prefix"), label="exact prefix caching")
        ax.plot(xs, [sum(r["prompt_tokens"] for r in rows[:i]) for i in xs], "k:", label="prompt tokens")
        ax.set_xlabel("request in stream")
        ax.set_ylabel("tokens whose KV was reused (cumulative)")
        ax.legend(fontsize=8)
        ax.set_title("Reuse on the MuSiQue stream")
    if "gpu" in res:
        ax = axes.pop(0)
        g = res["gpu"]
        for k in g["points"][0]["speedup"]:
            ax.plot([p["tokens"] for p in g["points"]], [p["speedup"][k] for p in g["points"]], "o-", label=k)
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("TTFT speedup vs full prefill (x)")
        ax.set_title(f"{g['shape']} on {g.get('gpu') or g['device']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shape", default="smollm2", choices=["smollm2", "7b"])
    p.add_argument("--tokens", default="2048,8192", help="prompt sizes of the random-weights run")
    p.add_argument("--random-weights", action="store_true", help="timing-only run on a random model")
    p.add_argument("--chunk-tokens", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--passages", type=int, default=4)
    p.add_argument("--answer-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--selection", default="attention", choices=["attention", "deviation", "attention_deviation"],
                   help="random-weights run: how recomputed tokens are chosen")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--data-dir", default=str(ROOT / "var"), help="tiergate data dir holding the converted model")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--lock", default=None, help="flock this file around each request (not the whole run)")
    p.add_argument("--rows", default=None, help="summarise the rows a cut-short CPU run left (no tiers section)")
    p.add_argument("--quick", action="store_true", help="skip the int8, sink and position-0 variants")
    args = p.parse_args()
    args.tokens = [int(t) for t in args.tokens.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "kvstore.json"
    res: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if args.rows:
        rows = json.loads(Path(args.rows).read_text())
        prev = res.get("cpu", {})
        res["cpu"] = {
            "model": prev.get("model", "?"), "requests": len(rows), "passages": args.passages,
            "answer_tokens": args.answer_tokens, "threads": args.threads, "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(), "rows": rows,
            "summary": summarize(rows, list(rows[0]["sweep"])),
            "partial": f"Partial run: the first {len(rows)} of the planned requests finished before the run "
            "was stopped; tier load rates and bytes per token were not measured in it.",
        }
    elif args.random_weights or args.device == "cuda":
        res["gpu" if args.device == "cuda" else "cpu_random"] = run_gpu(args)
    else:
        res["cpu"] = run_cpu(args)
    path.write_text(json.dumps(res, indent=1, default=str))
    write_markdown(res, out_dir / "kvstore.md")
    plot(res, out_dir / "kvstore.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
