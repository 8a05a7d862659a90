"""Tiered store throughput as a share of this machine's own limits, side by side in one run.

For each object shape (256 KiB and 4 MiB byte blobs, the same sizes as uint8 tensors, and one
KV chunk of SmolLM2 shape: 30 layers x 2 (K,V) x 3 kv-heads x 512 tokens x 64 dims, bf16) it
measures, on the same objects:

- host tier: put (copy into the tier) vs a numpy memcpy of a large buffer; get followed by the
  copy a consumer that needs its own buffer makes, vs the same memcpy (a bare get is zero-copy),
  and vs the same copies of the same objects without the store;
- disk tier: put (write + fsync + manifest) vs a plain sequential write + fsync of a large
  file; get with a cold page cache vs a plain sequential read of a large file with a cold page
  cache, and vs plain reads of the tier's own object files. Each of several rounds drops the
  caches (through /proc/sys/vm/drop_caches, else POSIX_FADV_DONTNEED per file) before each of
  these reads, so ratios compare reads made moments apart under the same procedure;
- gpu tier (CUDA only): loading host-tier objects to the GPU (`get(device="cuda")`) vs a
  torch pinned host->GPU copy of a large buffer, and vs pinned copies of the same objects one by
  one. The GPU target applies to 4 MiB tensors and KV chunks: the GPU tier holds tensors only
  (loading a bytes object converts it: a host copy into pinned staging, then the transfer), and
  one 256 KiB copy is bound by its launch cost, not by the bus;
- reopening a disk tier of 100k objects (cold and warm page cache).

Writes benchmarks/results/tiers.json, tiers.md and tiers.png (when matplotlib is installed).
Run from the repository root: `python benchmarks/tiers.py [--quick]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import tiergate.tiers  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "src"))

from tiergate.tiers import StoreConfig, TieredStore, codec  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
TARGETS = {"host": 0.80, "disk": 0.85, "gpu": 0.90}
KV_SHAPE = (30, 2, 3, 512, 64)


# ---- machine limits ----------------------------------------------------------------------------


def best_of(fn, repeats: int = 3) -> float:
    """Fastest wall time of `fn()` over `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def memcpy_buffers(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    src = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    return src, dst


def memcpy_rate(buffers: tuple[np.ndarray, np.ndarray]) -> float:
    src, dst = buffers
    return src.nbytes / best_of(lambda: np.copyto(dst, src), 3)


_DROP_WORKS: bool | None = None


def drop_caches(paths: list[Path]) -> str:
    """Evict files from the page cache; returns the method used."""
    global _DROP_WORKS
    os.sync()
    if _DROP_WORKS is not False:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            _DROP_WORKS = True
            return "drop_caches"
        except OSError:
            _DROP_WORKS = False
    for p in paths:
        for f in [p] if p.is_file() else p.rglob("*"):
            if f.is_file():
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return "fadvise"


def seq_write(path: Path, nbytes: int, chunk: int = 4 * MiB) -> float:
    """Plain sequential write (+fsync) of one large file, bytes/s."""
    buf = np.random.default_rng(1).integers(0, 255, chunk, dtype=np.uint8)
    mv = memoryview(buf)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(nbytes // chunk):
            os.write(fd, mv)
        os.fsync(fd)
    finally:
        os.close(fd)
    return nbytes / (time.perf_counter() - t0)


def read_sequential(path: Path, chunk: int = 4 * MiB) -> int:
    """Plain sequential read of one file in `chunk`-sized reads into one reused buffer."""
    rbuf = bytearray(chunk)
    n = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while (got := os.readv(fd, [rbuf])) > 0:
            n += got
    finally:
        os.close(fd)
    return n


def read_files(files: list[Path]) -> int:
    """Plain reads of whole files, one after the other: the tier's files without the tier."""
    n = 0
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            n += len(fh.read())
    return n


def pinned_h2d_rate(nbytes: int) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty(nbytes, dtype=torch.uint8, device="cuda")

    def copy() -> None:
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()

    copy()
    return nbytes / best_of(copy, 5)


# ---- objects -------------------------------------------------------------------------------------


def make_objects(kind: str, total: int) -> list:
    g = torch.Generator().manual_seed(0)
    if kind == "kv-chunk bf16":
        n = max(2, total // (int(np.prod(KV_SHAPE)) * 2))
        return [torch.randn(KV_SHAPE, generator=g, dtype=torch.float32).to(torch.bfloat16) for _ in range(n)]
    size = 256 * KiB if kind.startswith("256KiB") else 4 * MiB
    n = max(4, total // size)
    if kind.endswith("bytes"):
        return [np.random.default_rng(i).bytes(size) for i in range(n)]
    return [torch.randint(0, 255, (size,), generator=g, dtype=torch.uint8) for _ in range(n)]


def nbytes_of(v) -> int:
    return len(v) if isinstance(v, bytes) else v.numel() * v.element_size()


def consume_copy(v, dst: np.ndarray) -> None:
    """What a consumer needing a private buffer does with a value: one copy into its buffer."""
    src = np.frombuffer(v, dtype=np.uint8) if isinstance(v, bytes) else v.view(-1).view(torch.uint8).numpy()
    np.copyto(dst[: src.size], src)


# ---- tier measurements -------------------------------------------------------------------------


def cfg(**kw) -> StoreConfig:
    base = {
        "gpu": {"enabled": False},
        "host": {"enabled": False},
        "disk": {"enabled": False},
        "sweep_interval_s": 0,
        "promote_on_hit": False,
    }
    base.update(kw)
    return StoreConfig.model_validate(base)


def bench_host(objs: list, total: int, memcpy: tuple[np.ndarray, np.ndarray], rounds: int = 5) -> dict:
    """Host put and get+copy. The memcpy reference is timed in every round right before the
    tier, each the best of 3 passes, and the ratio is the median of the per-round ratios: a busy
    machine slows both alike."""
    store = TieredStore(cfg(host={"budget_bytes": 4 * total, "pin_memory": False}))
    keys = [f"o{i}" for i in range(len(objs))]
    put_t = best_of(lambda: [store.put("bench", k, v) for k, v in zip(keys, objs, strict=True)], 3)
    dst = np.empty(max(nbytes_of(v) for v in objs), dtype=np.uint8)
    ratios, get_t = [], float("inf")
    for _ in range(rounds):
        ref_rate = memcpy_rate(memcpy)
        t = best_of(lambda: [consume_copy(store.get("bench", k), dst) for k in keys], 3)
        get_t = min(get_t, t)
        ratios.append(total / t / ref_rate)
    ratios.sort()
    bare_t = best_of(lambda: [store.get("bench", k) for k in keys], 3)
    # the same copies of the same objects, without the store: the same-size reference
    copy_t = best_of(lambda: [consume_copy(v, dst) for v in objs], 3)
    store.close()
    return {
        "put": total / put_t,
        "get": total / get_t,
        "get/memcpy": (statistics.median(ratios), ratios[0], ratios[-1]),
        "copy": total / copy_t,
        "get_zero_copy_us": 1e6 * bare_t / len(keys),
    }


def bench_disk(objs: list, total: int, workdir: Path, seq_file: Path, rounds: int) -> dict:
    """Disk tier put and cold get/get_many. Each round also reads, with the same cold-cache
    procedure, the large sequential file (the machine's limit) and the tier's own object files
    with plain reads (same sizes, no tier); ratios are taken within a round, so that a busy
    machine slows the reference and the tier alike. Returns rates (best round) and ratios
    (median over rounds, with min and max)."""
    path = workdir / "disk-tier"
    c = cfg(disk={"path": str(path), "budget_bytes": 4 * total + GiB, "fsync": True})
    keys = [f"o{i}" for i in range(len(objs))]
    store = TieredStore(c)
    t0 = time.perf_counter()
    for k, v in zip(keys, objs, strict=True):
        store.put("bench", k, v)
    put_rate = total / (time.perf_counter() - t0)
    store.close()
    files = sorted((path / "objects").rglob("*.obj"))

    def get() -> None:
        for k in keys:
            assert store.get("bench", k) is not None

    def get_many() -> None:
        for i in range(0, len(keys), 16):  # batches, as a KV prefill asks for a request's chunks
            assert len(store.get_many("bench", keys[i : i + 16])) == len(keys[i : i + 16])

    runs: dict[str, list[float]] = {"seq": [], "files": [], "get": [], "get_many": []}
    for _ in range(rounds):
        for name in runs:
            drop_caches([path, seq_file])
            if name in ("get", "get_many"):
                store = TieredStore(c)  # opened (manifest read) before the clock starts
            t0 = time.perf_counter()
            if name == "seq":
                nbytes = read_sequential(seq_file)
            elif name == "files":
                nbytes = read_files(files)
            else:
                get() if name == "get" else get_many()
                nbytes = total
            runs[name].append(nbytes / (time.perf_counter() - t0))
            if name in ("get", "get_many"):
                store.close()
    shutil.rmtree(path)
    out: dict = {"put": put_rate, **{k: max(v) for k, v in runs.items()}}
    for op in ("get", "get_many"):
        for ref in ("seq", "files"):
            ratios = sorted(a / b for a, b in zip(runs[op], runs[ref], strict=True))
            out[f"{op}/{ref}"] = (statistics.median(ratios), ratios[0], ratios[-1])
    return out


def bench_gpu(objs: list, total: int) -> dict:
    store = TieredStore(cfg(host={"budget_bytes": 4 * total}, gpu={"enabled": True, "budget_bytes": 4 * total}))
    keys = [f"o{i}" for i in range(len(objs))]
    for k, v in zip(keys, objs, strict=True):
        store.put("bench", k, v, tier="host")

    # passes over the objects per timing, so that one final synchronize is noise (>= 512 MiB moved)
    passes = max(1, (512 * MiB) // total)

    def load() -> None:
        for _ in range(passes):
            out = [store.get("bench", k, device="cuda") for k in keys]
        torch.cuda.synchronize()
        del out

    load()
    get_t = best_of(load, 3) / passes
    store.close()
    if not isinstance(objs[0], torch.Tensor):
        return {"get": total / get_t, "direct": None}
    # the same objects copied one by one from pinned memory without the store: small objects are
    # bound by the per-copy launch, not by the bus
    pinned = [o.pin_memory() for o in objs]

    def direct() -> None:
        for _ in range(passes):
            out = [p.to("cuda", non_blocking=True) for p in pinned]
        torch.cuda.synchronize()
        del out

    direct()
    return {"get": total / get_t, "direct": total * passes / best_of(direct, 3)}


def bench_reopen(n: int, workdir: Path) -> dict:
    path = workdir / "reopen"
    c = cfg(disk={"path": str(path), "budget_bytes": 100 * GiB, "fsync": False})
    t0 = time.perf_counter()
    with TieredStore(c) as store:
        batch = 1000
        for start in range(0, n, batch):
            store.put_many(
                "index/emb",
                ((f"vec-{i:09d}", i.to_bytes(8, "little") * 8) for i in range(start, min(n, start + batch))),
            )
    build = time.perf_counter() - t0
    out = {"objects": n, "build_seconds": build}
    for label in ("cold", "warm"):
        out[f"{label}_seconds"] = float("inf")
        for _ in range(3):  # the fastest of three: a busy machine only ever adds time
            if label == "cold":
                drop_caches([path / "manifest.log"])
            gc.collect()
            t0 = time.perf_counter()
            store = TieredStore(c)
            seconds = time.perf_counter() - t0
            if seconds < out[f"{label}_seconds"]:
                out[f"{label}_seconds"], out[f"{label}_replay_seconds"] = seconds, store.disk.open_seconds
            assert len(store.keys("index/emb")) == n
            store.close()
    shutil.rmtree(path)
    return out


# ---- reporting ---------------------------------------------------------------------------------


def gbps(x: float) -> float:
    return round(x / 1e9, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller data sets (about a minute)")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / "var" / "bench-tiers",
        help="scratch directory on the disk to measure (default: var/bench-tiers)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--reopen-objects", type=int, default=100_000)
    args = ap.parse_args()

    total = (64 if args.quick else 256) * MiB
    seq_bytes = (256 if args.quick else 1024) * MiB
    rounds = 3
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=args.workdir))
    cuda = torch.cuda.is_available()
    try:
        memcpy = memcpy_buffers(256 * MiB)
        limits: dict = {"memcpy": memcpy_rate(memcpy)}
        seq_file = workdir / "seq.bin"  # kept: each disk measurement re-reads it as its reference
        limits["seq_write_fsync"] = seq_write(seq_file, seq_bytes)
        limits["cache_drop"] = drop_caches([seq_file])
        t0 = time.perf_counter()
        limits["seq_read_cold"] = read_sequential(seq_file) / (time.perf_counter() - t0)
        if cuda:
            limits["pinned_h2d"] = pinned_h2d_rate(256 * MiB)
        print("limits (GB/s):", {k: gbps(v) if isinstance(v, float) else v for k, v in limits.items()}, flush=True)

        rows = []
        kinds = ["256KiB bytes", "4MiB bytes", "256KiB tensor", "4MiB tensor", "kv-chunk bf16"]
        for kind in kinds:
            objs = make_objects(kind, total)
            size = nbytes_of(objs[0])
            data = size * len(objs)
            h = bench_host(objs, data, memcpy)
            d = bench_disk(objs, data, workdir, seq_file, rounds)
            # (tier, op, rate, reference, its rate, ratio or None: rate / reference,
            #  same-size reference, its rate, ratio to it)
            meas = [
                # bytes are immutable: the host tier keeps them by reference, so put copies nothing
                ("host", "put (by ref)" if kind.endswith("bytes") else "put", h["put"], "memcpy", limits["memcpy"]),
                ("host", "get+copy", h["get"], "memcpy", limits["memcpy"], h["get/memcpy"], "copy", h["copy"]),
                ("disk", "put", d["put"], "seq write+fsync", limits["seq_write_fsync"]),
                ("disk", "get (cold)", d["get"], "seq read (cold)", d["seq"], d["get/seq"], "files", d["files"]),
                ("disk", "get_many (cold)", d["get_many"], "seq read (cold)", d["seq"], d["get_many/seq"], "files"),
            ]
            if cuda:
                g = bench_gpu(objs, data)
                meas.append(("gpu", "load", g["get"], "pinned H2D", limits["pinned_h2d"], None, "direct", g["direct"]))
            for tier, op, rate, ref, limit, *rest in meas:
                paired = rest[0] if rest else None  # disk: (median, min, max) of per-round ratios
                ratio = None if op == "put (by ref)" else (paired[0] if paired else rate / limit)
                same_ref = rest[1] if len(rest) > 1 else None
                if same_ref == "files":
                    same_ref, same_ratio = "plain read of the same files (cold)", d[f"{op.split()[0]}/files"]
                elif same_ref == "copy":
                    same_ref, same_ratio = "np.copyto of the same objects", (rate / rest[2],)
                elif same_ref == "direct" and rest[2] is not None:
                    same_ref, same_ratio = "pinned H2D copies of the same objects, one by one", (rate / rest[2],)
                else:
                    same_ref, same_ratio = None, None
                target = TARGETS.get(tier) if op in ("get+copy", "get (cold)", "get_many (cold)", "load") else None
                if tier == "disk" and not kind.startswith("4MiB"):
                    target = None  # the disk target is stated for 4 MiB objects
                if tier == "gpu" and (kind.endswith("bytes") or kind.startswith("256KiB")):
                    # bytes are host objects: a load to the GPU converts them (a host copy first);
                    # a 256 KiB copy is bound by its launch, not the bus (see the same-size ratio)
                    target = None
                rows.append(
                    {
                        "object": kind,
                        "object_bytes": size,
                        "count": len(objs),
                        "tier": tier,
                        "op": op,
                        "GBps": gbps(rate),
                        "reference": ref,
                        "reference_GBps": gbps(limit),
                        "ratio": None if ratio is None else round(ratio, 3),
                        "ratio_range": None if paired is None else [round(paired[1], 3), round(paired[2], 3)],
                        "target": target,
                        "meets_target": None if target is None or ratio is None else ratio >= target,
                        "same_size_reference": same_ref,
                        "same_size_ratio": None if same_ratio is None else round(same_ratio[0], 3),
                    }
                )
                share = "(no copy)" if ratio is None else f"= {ratio:6.1%} of {ref}"
                if paired is not None:
                    share += f" (rounds {paired[1]:.0%}..{paired[2]:.0%})"
                if same_ratio is not None:
                    share += f"; {same_ratio[0]:.0%} of {same_ref}"
                print(f"{kind:>14} {tier:>4} {op:>15}: {rate / 1e9:7.3f} GB/s {share}", flush=True)
            rows.append(
                {
                    "object": kind,
                    "tier": "host",
                    "op": "get (zero-copy) us/op",
                    "value": round(h["get_zero_copy_us"], 2),
                }
            )
            del objs
            gc.collect()
        reopen = bench_reopen(args.reopen_objects, workdir)
        print("reopen:", reopen, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if cuda else None,
            "load_average": os.getloadavg(),
        },
        "quick": args.quick,
        "checksum": getattr(codec, "WRITE_SUM", "crc32"),
        "disk_rounds": rounds,
        "limits_GBps": {k: gbps(v) if isinstance(v, float) else v for k, v in limits.items()},
        "rows": rows,
        "reopen": {**reopen, "target_seconds": 1.0, "meets_target": reopen["cold_seconds"] < 1.0},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tiers.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "tiers.md").write_text(markdown(result))
    plot(result, args.out / "tiers.png")
    print(f"wrote {args.out}/tiers.json, tiers.md" + (", tiers.png" if (args.out / "tiers.png").exists() else ""))


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Tiered store throughput vs. machine limits",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, GPU: {m['cuda'] or 'none'}, torch {m['torch']}, "
        f"load average at the end {tuple(round(x, 1) for x in m['load_average'])}"
        + (" (quick run)" if res["quick"] else ""),
        "",
        "Limits (GB/s): " + ", ".join(f"{k} {v}" for k, v in res["limits_GBps"].items()),
        "",
        f"Disk checksums: {res['checksum']}. Disk reads: {res['disk_rounds']} rounds, each reading the large "
        "sequential file, the tier's object files with plain reads, the tier with get and with get_many, "
        "after the same cache drop; a disk ratio is the median of the per-round ratios (range in brackets), "
        "its ref GB/s the best round. Same-size ratio: to the same work on the same objects without the tier "
        "(plain reads of the tier's files; np.copyto of the objects for host get+copy; pinned copies of the "
        "objects one by one for GPU loads). The GPU target applies to 4 MiB tensors and KV chunks (bytes objects are "
        "converted on the way; a 256 KiB copy is launch-bound). Host get+copy: "
        "5 rounds, each timing a 256 MiB memcpy right before the tier (both the best of 3 passes); "
        "its ratio is the median of the "
        "per-round ratios. Reopen: the fastest of 3.",
        "",
        "| object | tier | op | GB/s | reference | ref GB/s | ratio | target | ok | same-size ratio |",
        "|---|---|---|---:|---|---:|---:|---:|:-:|---:|",
    ]
    for r in res["rows"]:
        if "ratio" not in r:
            continue
        t = "" if r["target"] is None else f"{r['target']:.0%}"
        ok = "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "**no**")
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.1%}"
        if r.get("ratio_range"):
            ratio += f" ({r['ratio_range'][0]:.0%}–{r['ratio_range'][1]:.0%})"
        same = "" if r.get("same_size_ratio") is None else f"{r['same_size_ratio']:.1%}"
        lines.append(
            f"| {r['object']} | {r['tier']} | {r['op']} | {r['GBps']} | {r['reference']} | "
            f"{r['reference_GBps']} | {ratio} | {t} | {ok} | {same} |"
        )
    zc = [r for r in res["rows"] if "value" in r]
    lines += [
        "",
        "Host-tier get without a copy (the value is shared): "
        + ", ".join(f"{r['object']} {r['value']} µs" for r in zc),
        "",
    ]
    ro = res["reopen"]
    lines += [
        f"Reopen of a disk tier with {ro['objects']:,} objects: {ro['cold_seconds']:.3f} s with a cold page cache "
        f"(manifest replay {ro['cold_replay_seconds']:.3f} s), {ro['warm_seconds']:.3f} s warm; target < 1 s: "
        f"{'yes' if ro['meets_target'] else '**no**'}.",
        "",
    ]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    rows = [r for r in res["rows"] if r.get("ratio") is not None]
    series = sorted({(r["tier"], r["op"]) for r in rows})
    objects = list(dict.fromkeys(r["object"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(series)
    for i, (tier, op) in enumerate(series):
        vals = [
            next((r["ratio"] for r in rows if r["object"] == o and r["tier"] == tier and r["op"] == op), 0)
            for o in objects
        ]
        ax.bar([x + i * width for x in range(len(objects))], vals, width, label=f"{tier} {op}")
    for j, (tier, t) in enumerate(TARGETS.items()):
        if any(s[0] == tier for s in series):
            ax.axhline(t, ls="--", lw=0.8, color="gray")
            ax.text(-0.3 + 1.2 * j, t, f"{tier} target {t:.0%}", fontsize=7, va="bottom")
    ax.set_ylim(0, max(1.2, min(2.0, max((r["ratio"] for r in rows), default=1) * 1.1)))
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(objects))], objects)
    ax.set_ylabel("share of the machine's limit")
    ax.set_title("tiergate tiers: throughput / machine limit (same objects, one run)")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
