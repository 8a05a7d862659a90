"""Gateway overhead: the same load straight to a fast loopback upstream vs through tiergate.

Three processes: the upstream (aiohttp, `tests/upstream_server.py`), the gateway (`tiergate serve`)
and this load generator. On a machine with 2+ cores the gateway gets a core of its own and the
upstream shares the other with the load generator, in both the direct and the gateway runs.
Closed-loop load at concurrency 1, 8 and 32, JSON and streaming; plus the two async clients
(aiohttp, httpx with a tuned pool) driving the same upstream, to choose the client.

    python benchmarks/gateway_overhead.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, free_port, gateway_config, machine, markdown_table, pct, save, spawn, wait_http

BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hello gateway"}], "max_tokens": 16}


async def _load_aiohttp(url: str, body: dict | list[dict], concurrency: int, seconds: float, stream: bool,
                        headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Closed-loop load; a list of bodies is sent in turn (one different request after another)."""
    import itertools

    import aiohttp
    import orjson

    bodies = body if isinstance(body, list) else [body]
    payloads = itertools.cycle([orjson.dumps({**b, "stream": stream}) for b in bodies])
    headers = {"Content-Type": "application/json", **(headers or {})}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(url, data=next(payloads), headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

        return await _closed_loop(one, concurrency, seconds, latencies, lambda: errors)


async def _load_httpx(url: str, body: dict, concurrency: int, seconds: float, stream: bool) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            r = await client.post(url, json={**body, "stream": stream})
            if r.status_code != 200:
                errors += 1
            latencies.append(time.perf_counter() - t0)

        return await _closed_loop(one, concurrency, seconds, latencies, lambda: errors)


async def _closed_loop(one, concurrency: int, seconds: float, latencies: list[float], errors) -> dict[str, Any]:
    warm_until = time.perf_counter() + min(1.0, seconds / 4)
    while time.perf_counter() < warm_until:  # warm the connection pools
        await asyncio.gather(*[one() for _ in range(concurrency)])
    latencies.clear()
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            await one()

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - t0
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "errors": errors(),
            "p50_ms": pct(latencies, 50) * 1000, "p99_ms": pct(latencies, 99) * 1000}


LOADERS = {"aiohttp": _load_aiohttp, "httpx": _load_httpx}


# Routing overhead is measured with the response cache skipped (no lookup, no store); cache hits
# are measured on their own below.
NO_CACHE = {"Cache-Control": "no-cache, no-store"}


def run(url: str, concurrency: int, seconds: float, stream: bool, client: str = "aiohttp") -> dict[str, Any]:
    if client == "aiohttp":
        return asyncio.run(_load_aiohttp(url, BODY, concurrency, seconds, stream, NO_CACHE))
    return asyncio.run(LOADERS[client](url, BODY, concurrency, seconds, stream))


PARAPHRASES = ["How can I reverse a list in Python?", "What's the way to reverse a Python list?",
               "How can I reverse the order of a list in Python?", "python reverse a list",
               "How do you reverse a list in Python?", "reverse a list in python"]


def run_cache_hits(url: str, seconds: float) -> list[dict[str, Any]]:
    """Exact hits (the same request again) and semantic hits: paraphrases of a stored question, a
    different one each request, so no hit can come from a repeated text."""
    import httpx

    stored = {"model": "bench-model", "temperature": 0,
              "messages": [{"role": "user", "content": "How do I reverse a list in Python?"}]}
    paraphrase = [{**stored, "messages": [{"role": "user", "content": q}]} for q in PARAPHRASES]
    httpx.post(url, json=stored, timeout=30)  # the miss that stores the answer
    outcomes = [httpx.post(url, json=p, timeout=30).headers.get("x-tiergate-cache") for p in paraphrase]
    outcome = "semantic" if all(o == "semantic" for o in outcomes) else "/".join(map(str, outcomes))
    rows = []
    for kind, body in (("exact", stored), ("semantic", paraphrase)):
        for c in (1, 8):
            r = asyncio.run(_load_aiohttp(url, body, c, seconds, False))
            rows.append({"hit": kind, "concurrency": c, **r})
            print(rows[-1], flush=True)
    rows.append({"hit": "check", "paraphrase_outcome": outcome})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per configuration")
    args = parser.parse_args()

    multi = (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity")
    if multi:
        os.sched_setaffinity(0, {0})
    up_port, gw_port = free_port(), free_port()
    upstream = spawn([sys.executable, str(ROOT / "tests" / "upstream_server.py"), str(up_port)], cpu=0)
    tmp = Path(tempfile.mkdtemp(prefix="tiergate-bench-"))
    config = gateway_config(tmp, gw_port, up_port)
    gateway = spawn([str(Path(sys.executable).parent / "tiergate"), "serve", "--config", str(config)],
                    env={"TIERGATE_CONFIG": ""}, cpu=1 if multi else None)
    try:
        time.sleep(1.0)  # the upstream has no GET route to poll; it starts in well under a second
        wait_http(f"http://127.0.0.1:{gw_port}/readyz", timeout=180)
        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        through = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        rows: list[dict[str, Any]] = []
        for stream in (False, True):
            for c in (1, 8, 32):
                d = run(direct, c, args.seconds, stream)
                g = run(through, c, args.seconds, stream)
                rows.append({
                    "mode": "stream" if stream else "json", "concurrency": c,
                    "direct_p50_ms": d["p50_ms"], "gateway_p50_ms": g["p50_ms"],
                    "added_p50_ms": g["p50_ms"] - d["p50_ms"],
                    "direct_p99_ms": d["p99_ms"], "gateway_p99_ms": g["p99_ms"],
                    "added_p99_ms": g["p99_ms"] - d["p99_ms"],
                    "direct_rps": d["rps"], "gateway_rps": g["rps"], "errors": d["errors"] + g["errors"],
                })
                print(rows[-1], flush=True)
        hits = run_cache_hits(through, args.seconds)
        clients = []
        for client in ("aiohttp", "httpx"):
            for c in (8, 32):
                r = run(direct, c, args.seconds, False, client)
                clients.append({"client": client, "concurrency": c, **r})
                print(clients[-1], flush=True)
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(30)
        upstream.wait(30)

    key = next(r for r in rows if r["mode"] == "json" and r["concurrency"] == 8)
    best_rps = max(r["gateway_rps"] for r in rows if r["mode"] == "json")
    targets = {
        "added_p50_ms_at_c8_json<=2": key["added_p50_ms"] <= 2.0,
        "added_p99_ms_at_c8_json<=10": key["added_p99_ms"] <= 10.0,
        "gateway_rps>=500": best_rps >= 500,
    }
    exact = next(h for h in hits if h["hit"] == "exact" and h["concurrency"] == 1)
    semantic = next(h for h in hits if h["hit"] == "semantic" and h["concurrency"] == 1)
    targets["exact_hit_p50_ms<=2"] = exact["p50_ms"] <= 2.0
    targets["semantic_hit_p50_ms<=15"] = semantic["p50_ms"] <= 15.0
    data = {"machine": machine(), "pinned": multi, "seconds_per_run": args.seconds, "runs": rows,
            "cache_hits": hits, "clients": clients, "max_gateway_rps": best_rps, "targets_met": targets}
    md = ["# Gateway overhead", "",
          f"Machine: {data['machine']['cpus']} CPUs ({data['machine']['processor']}), gateway pinned to its own core: "
          f"{multi}. Closed-loop load, {args.seconds:.0f} s per configuration, aiohttp load generator.", "",
          markdown_table(rows, ["mode", "concurrency", "direct_p50_ms", "gateway_p50_ms", "added_p50_ms",
                                "direct_p99_ms", "gateway_p99_ms", "added_p99_ms", "direct_rps", "gateway_rps",
                                "errors"]),
          "", f"Max sustained requests/s through the gateway: **{best_rps:.0f}**.", "",
          "## Cache hits through the gateway (no backend call)", "",
          f"The semantic rows cycle through {len(PARAPHRASES)} paraphrases of the stored question; each was "
          f"answered as: {hits[-1]['paraphrase_outcome']}.", "",
          markdown_table(hits[:-1], ["hit", "concurrency", "rps", "p50_ms", "p99_ms", "errors"]), "",
          "## Async clients against the same upstream (direct, JSON)", "",
          markdown_table(clients, ["client", "concurrency", "rps", "p50_ms", "p99_ms", "errors"]), "",
          "## Targets", "", *[f"- {k}: {'met' if v else 'NOT met'}" for k, v in targets.items()]]
    png = save("gateway_overhead", data, "\n".join(md))
    _plot(rows, clients, png)
    print("\n".join(md))


def _plot(rows: list[dict[str, Any]], clients: list[dict[str, Any]], png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for mode, marker in (("json", "o"), ("stream", "s")):
        sel = [r for r in rows if r["mode"] == mode]
        cs = [r["concurrency"] for r in sel]
        axes[0].plot(cs, [r["added_p50_ms"] for r in sel], marker=marker, label=f"{mode} p50")
        axes[0].plot(cs, [r["added_p99_ms"] for r in sel], marker=marker, linestyle="--", label=f"{mode} p99")
        axes[1].plot(cs, [r["direct_rps"] for r in sel], marker=marker, label=f"direct {mode}")
        axes[1].plot(cs, [r["gateway_rps"] for r in sel], marker=marker, linestyle="--", label=f"gateway {mode}")
    axes[0].axhline(2, color="grey", lw=0.8)
    axes[0].set(title="Added latency (ms)", xlabel="concurrency", xscale="log")
    axes[1].axhline(500, color="grey", lw=0.8)
    axes[1].set(title="Requests/s", xlabel="concurrency", xscale="log")
    labels = [f"{c['client']}\nc={c['concurrency']}" for c in clients]
    axes[2].bar(labels, [c["rps"] for c in clients], color=["tab:blue", "tab:blue", "tab:orange", "tab:orange"])
    axes[2].set(title="Client requests/s (direct)")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
