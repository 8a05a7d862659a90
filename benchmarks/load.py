"""Load through the gateway: wrk with a mix of cache hits and misses, a memory soak, Redis killed mid-load.

Run it (wrk comes from `make system-deps`):

    .venv/bin/python benchmarks/load.py                          # full run, about 14 minutes
    .venv/bin/python benchmarks/load.py --load-s 20 --soak-s 60 --redis-down-s 10   # a quick look

Processes: a fast upstream (tests/upstream_server.py), a private redis-server on a free port, the
gateway (`tiergate serve` with a generated YAML config: the packaged generator and embedder loaded,
semantic cache on, host + disk + Redis tiers, auth with a key, the upstream serving the load's model)
and wrk driving it with benchmarks/load.lua: `--hit-share` of the requests ask one of a fixed pool of
prompts (cache hits after first sight), the rest a unique prompt (a miss that goes to the upstream).
One gateway lives through all phases, sampled for RSS (with children) every `--sample-s`:

1. idle: RSS once /readyz answers, before any request;
2. warm-up (`--warmup-s`): fills the cache up to its quota (`--max-entries` per category, capped so
   that the soak looks for leaks, not for a cache that is still filling);
3. load (`--load-s`): sustained requests/s, latency p50/p99, non-2xx responses and socket errors;
4. soak (`--soak-s`): the same load, RSS trend (least-squares slope, MB/min) and a verdict;
5. Redis down: one wrk run of 3 x `--redis-down-s`; Redis is SIGKILLed after the first third and
   restarted (empty, same port) after the second (`--redis-fault pause`: frozen with SIGSTOP
   instead, a hung Redis); requests/s before, during and after, errors.

Writes benchmarks/results/load.json, load.md and load.png. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from common import ROOT, free_port, machine, markdown_table, pct, rss_bytes, save, spawn, wait_http

LUA = Path(__file__).with_name("load.lua")
MODEL = "bench-model"
API_KEY = "bench-load-key-0001"
MB = 1e6

# The soak shows "no growth trend" when RSS over its second half rises by less than this many
# MB per minute and the last tenth of it ends within this share of the first tenth.
MAX_SLOPE_MB_PER_MIN = 1.0
MAX_END_GROWTH = 0.03

# A standalone upstream whose record of request bodies stays bounded over a long soak.
UPSTREAM = """
import collections, sys
sys.path.insert(0, sys.argv[2])
from aiohttp import web
from upstream_server import UpstreamServer
server = UpstreamServer(port=int(sys.argv[1]))
server.bodies = collections.deque(maxlen=16)
web.run_app(server.app(), host="127.0.0.1", port=server.port, access_log=None, print=None, backlog=1024)
"""


class RedisServer:
    """A private redis-server on a free port, no persistence; `kill` is SIGKILL, `start` comes back empty."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (make system-deps)")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except Exception:  # redis.ConnectionError while it starts
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)

    def dbsize(self) -> int:
        return int(self.client().dbsize())

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@dataclass
class Sampler:
    """Samples the gateway's RSS (with children), its CPU share and the load average in a thread."""

    pid: int
    every_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    phase: str = "idle"

    def start(self) -> Sampler:
        import psutil

        self._proc = psutil.Process(self.pid)
        self._proc.cpu_percent()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def sample(self) -> dict[str, Any]:
        row = {"t": time.time(), "phase": self.phase, "rss_mb": rss_bytes(self.pid) / MB,
               "cpu_pct": self._proc.cpu_percent(), "loadavg_1m": os.getloadavg()[0]}
        self.samples.append(row)
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def in_phase(self, phase: str) -> list[dict[str, Any]]:
        return [s for s in self.samples if s["phase"] == phase]


def wrk(url: str, seconds: float, args: argparse.Namespace, hit_share: float | None = None) -> dict[str, Any]:
    """One wrk run with load.lua; the parsed `LOAD ...` lines plus requests/s and error counts."""
    share = args.hit_share if hit_share is None else hit_share
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{int(seconds)}s",
           "--timeout", f"{args.timeout_s}s", "--latency", "-s", str(LUA), url, "--",
           API_KEY, MODEL, str(share), str(args.pool), str(args.seed)]
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    out = done.stdout
    r: dict[str, Any] = {"started": started, "seconds": seconds, "hit_share": share, "errors": {}, "latency_ms": {},
                         "per_second": {}, "outcomes": {}, "statuses": {}}
    for line in out.splitlines():
        m = re.fullmatch(r"LOAD (\S+) (\S+) (\S+)", line.strip())
        if not m:
            continue
        what, key, value = m.group(1), m.group(2), float(m.group(3))
        if what == "total":
            r[key] = value
        elif what == "errors":
            r["errors"][key] = int(value)
        elif what == "latency_us":
            r["latency_ms"][key] = value / 1000
        elif what == "second":
            r["per_second"][int(key)] = int(value)
        elif what in ("outcome", "status"):
            r["outcomes" if what == "outcome" else "statuses"][key] = int(value)
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["non_2xx"] = sum(n for status, n in r["statuses"].items() if not status.startswith("2"))
    r["socket_errors"] = sum(r["errors"].get(k, 0) for k in ("connect", "read", "write", "timeout"))
    hits = sum(r["outcomes"].get(k, 0) for k in ("exact", "semantic", "coalesced"))
    r["hit_rate"] = hits / max(1, sum(r["outcomes"].values()))
    r["p50_ms"], r["p99_ms"] = r["latency_ms"]["p50"], r["latency_ms"]["p99"]
    return r


def summary_row(phase: str, r: dict[str, Any]) -> dict[str, Any]:
    return {"phase": phase, "seconds": r["seconds"], "requests": int(r["requests"]), "rps": r["rps"],
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "p99.9_ms": r["latency_ms"]["p99.9"],
            "max_ms": r["latency_ms"]["max"], "hit_rate": r["hit_rate"], "non_2xx": r["non_2xx"],
            "socket_errors": r["socket_errors"]}


def window_rps(per_second: dict[int, int], start: float, end: float) -> float:
    """Mean completions per second over the whole seconds inside [start, end)."""
    seconds = range(int(np.ceil(start)), int(np.floor(end)))
    return float(np.mean([per_second.get(s, 0) for s in seconds])) if len(seconds) else float("nan")


def redis_down_run(url: str, redis: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    down = args.redis_down_s
    keys_before = redis.dbsize()
    times: dict[str, float] = {}

    def outage() -> None:
        time.sleep(down)
        times["killed"] = time.time()
        if args.redis_fault == "pause":
            redis.pause()
            time.sleep(down)
            redis.resume()
        else:
            redis.kill()
            time.sleep(down)
            redis.start()
        times["restarted"] = time.time()

    chaos = threading.Thread(target=outage)
    chaos.start()
    r = wrk(url, 3 * down, args)
    chaos.join()
    end = r["started"] + r["duration_us"] / 1e6
    r.update(times)
    r["redis_keys_before_kill"] = keys_before
    r["redis_keys_after_run"] = redis.dbsize()  # written since the restart: the shared tier resumed
    # The first and last seconds are partial (wrk starting and stopping); the second after each
    # switch is left out so each window holds one state only.
    r["rps_before"] = window_rps(r["per_second"], r["started"] + 1, times["killed"])
    r["rps_during"] = window_rps(r["per_second"], times["killed"] + 1, times["restarted"])
    r["rps_after"] = window_rps(r["per_second"], times["restarted"] + 1, end - 1)
    return r


def trend(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares RSS slope over the soak and over its second half; first vs last tenth."""
    t = np.array([s["t"] for s in samples])
    rss = np.array([s["rss_mb"] for s in samples])
    if len(t) < 6:
        return {"verdict": "too few samples", "no_growth": False}
    minutes = (t - t[0]) / 60
    half = len(t) // 2
    slope_all = float(np.polyfit(minutes, rss, 1)[0])
    slope_half = float(np.polyfit(minutes[half:], rss[half:], 1)[0])
    tenth = max(3, len(t) // 10)
    first, last = float(np.median(rss[:tenth])), float(np.median(rss[-tenth:]))
    growth = (last - first) / first
    ok = slope_half <= MAX_SLOPE_MB_PER_MIN and growth <= MAX_END_GROWTH
    return {"samples": len(t), "minutes": float(minutes[-1]), "slope_mb_per_min": slope_all,
            "slope_second_half_mb_per_min": slope_half, "rss_first_tenth_mb": first,
            "rss_last_tenth_mb": last, "end_growth": growth, "rss_min_mb": float(rss.min()),
            "rss_max_mb": float(rss.max()), "no_growth": ok,
            "verdict": "no growth trend" if ok else "growth trend"}


WATCHED = ("tiergate_cache_entries", "tiergate_cache_inserts", "tiergate_cache_evictions", "used_bytes",
           "redis_up", "redis_failures")


def metrics_snapshot(base: str) -> dict[str, float]:
    """The gateway's cache and tier series from /metrics: entries, inserts, evictions, bytes used, Redis state."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if any(w in sample.name for w in WATCHED) and not sample.name.endswith("_created"):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def gateway_config(tmp: Path, gw_port: int, up_port: int, redis: RedisServer, generator: Path,
                   max_entries: int) -> Path:
    from tiergate.cache.config import default_categories

    categories = [{**c.model_dump(), "max_entries": min(c.max_entries, max_entries)} for c in default_categories()]
    config = {
        "data_dir": str(tmp / "var"),
        "server": {"port": gw_port, "log_format": "json", "log_level": "warning"},
        "models": {"generator": str(generator)},
        "auth": {"api_keys": {API_KEY: "bench"}},
        "backends": [
            {"name": "local", "kind": "local"},
            {"name": "up", "kind": "openai", "base_url": f"http://127.0.0.1:{up_port}/v1", "models": [MODEL]},
        ],
        "tiers": {"redis": {"enabled": True, "url": redis.url}},
        "cache": {"categories": categories},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def packaged_generator() -> Path:
    """The packaged GGUF converted to safetensors once (under var/, kept between runs), in a child
    process: converting inside the gateway would leave its dequantisation garbage in the idle RSS."""
    code = "import sys; from pathlib import Path; from tiergate.models import packaged_generator_dir; " \
           "print(packaged_generator_dir(Path(sys.argv[1])))"
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "var" / "bench-load")], capture_output=True,
                         text=True, check=True).stdout
    return Path(out.strip().splitlines()[-1])


def log_levels(log: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Counts of the gateway's log lines by level, and of its distinct warning and error messages."""
    import orjson

    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = orjson.loads(line)
            level, message = str(rec.get("level", "?")).lower(), str(rec.get("message", rec.get("msg", "")))
        except orjson.JSONDecodeError:
            level, message = "unstructured", line
        levels[level] += 1
        progress = level == "unstructured" and ("it/s]" in line or not line.strip())  # model-loading bars
        if level != "info" and not progress:
            messages[f"{level}: {re.sub(r'[0-9]+', 'N', message[:160])}"] += 1
    return dict(levels), dict(messages.most_common(10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup-s", type=float, default=45)
    parser.add_argument("--load-s", type=float, default=60, help="the measured load run")
    parser.add_argument("--soak-s", type=float, default=600)
    parser.add_argument("--redis-down-s", type=float, default=30, help="Redis outage; the run is 3x as long")
    parser.add_argument("--hit-share", type=float, default=0.5, help="share of requests from the repeated pool")
    parser.add_argument("--pool", type=int, default=100, help="repeated prompts")
    parser.add_argument("--hits-s", type=float, default=20, help="a run of pool prompts only (the hit path)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--timeout-s", type=int, default=10, help="wrk counts slower answers as timeouts")
    parser.add_argument("--max-entries", type=int, default=200, help="cache quota per tenant and category")
    parser.add_argument("--redis-fault", choices=("kill", "pause"), default="kill",
                        help="kill: SIGKILL, restart empty; pause: SIGSTOP, then SIGCONT (a hung Redis)")
    parser.add_argument("--sample-s", type=float, default=2.0, help="RSS sampling period")
    parser.add_argument("--pin", action="store_true", help="gateway on core 1; upstream, Redis and wrk on core 0")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="load", help="results name under benchmarks/results")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: make system-deps")

    multi = args.pin and (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity")
    if multi:
        os.sched_setaffinity(0, {0})  # wrk and Redis inherit it
    tmp = Path(tempfile.mkdtemp(prefix="tiergate-load-"))
    generator = packaged_generator()
    redis = RedisServer(tmp)
    redis.start()
    up_port, gw_port = free_port(), free_port()
    upstream = spawn([sys.executable, "-c", UPSTREAM, str(up_port), str(ROOT / "tests")], cpu=0 if multi else None)
    config = gateway_config(tmp, gw_port, up_port, redis, generator, args.max_entries)
    log = tmp / "gateway.log"
    t_spawn = time.monotonic()
    gateway = spawn([str(Path(sys.executable).parent / "tiergate"), "serve", "--config", str(config)],
                    env={"TIERGATE_CONFIG": "", "HF_HUB_OFFLINE": "1"}, cpu=1 if multi else None, log=log)
    url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
    sampler: Sampler | None = None
    runs: dict[str, dict[str, Any]] = {}
    try:
        wait_http(f"http://127.0.0.1:{gw_port}/readyz", timeout=300)
        ready_s = time.monotonic() - t_spawn
        sampler = Sampler(gateway.pid, args.sample_s).start()
        time.sleep(max(5.0, 3 * args.sample_s))  # settle: background threads finish starting
        idle = [sampler.sample()["rss_mb"] for _ in range(3)]
        idle_rss = float(np.median(idle))
        print(f"ready in {ready_s:.0f} s, idle RSS {idle_rss:.0f} MB", flush=True)
        base = f"http://127.0.0.1:{gw_port}"
        snapshots = {"idle": metrics_snapshot(base)}
        phases = (("warmup", args.warmup_s, None), ("load", args.load_s, None), ("hits_only", args.hits_s, 1.0),
                  ("soak", args.soak_s, None))
        for phase, seconds, share in phases:
            if seconds <= 0:
                continue
            sampler.phase = phase
            runs[phase] = wrk(url, seconds, args, share)
            snapshots[phase] = metrics_snapshot(base)
            print(phase, summary_row(phase, runs[phase]), runs[phase]["outcomes"], flush=True)
        sampler.phase = "redis_down"
        runs["redis_down"] = redis_down_run(url, redis, args)
        snapshots["redis_down"] = metrics_snapshot(base)
        r = runs["redis_down"]
        print("redis_down", summary_row("redis_down", r), r["outcomes"],
              {k: r[k] for k in ("rps_before", "rps_during", "rps_after")}, flush=True)
        sampler.phase = "after"
        time.sleep(2 * args.sample_s)
        alive = gateway.poll() is None
    finally:
        if sampler is not None:
            sampler.stop()
        gateway.terminate()
        upstream.terminate()
        gateway.wait(60)
        upstream.wait(30)
        redis.kill()
    report(args, runs, sampler, snapshots, idle_rss, ready_s, alive, log, multi)
    shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, runs: dict[str, dict[str, Any]], sampler: Sampler,
           snapshots: dict[str, dict[str, float]], idle_rss: float, ready_s: float, alive: bool, log: Path,
           pinned: bool) -> None:
    soak = trend(sampler.in_phase("soak"))
    levels, examples = log_levels(log)
    load, rd = runs["load"], runs["redis_down"]
    rows = [summary_row(phase, r) for phase, r in runs.items()]
    for row in rows:  # median cores the gateway process used (all its threads) in each phase
        row["gw_cores"] = pct([s["cpu_pct"] / 100 for s in sampler.in_phase(row["phase"])], 50)
    measured = ("load", "soak", "redis_down")
    errors = {p: runs[p]["non_2xx"] + runs[p]["socket_errors"] for p in measured}
    loadavg = [s["loadavg_1m"] for s in sampler.samples if s["phase"] != "idle"]
    targets = {
        "rps>=500_at_0_errors (load run)": load["rps"] >= 500 and errors["load"] == 0,
        "idle_rss<=1500MB (local models loaded)": idle_rss <= 1500,
        "no_memory_growth (soak)": soak["no_growth"],
        "0_errors (soak)": errors["soak"] == 0,
        "0_errors with Redis killed": errors["redis_down"] == 0,
    }
    outcome_rows = [{"phase": p, **r["outcomes"]} for p, r in runs.items()]
    entries = {p: _sum(snap, "tiergate_cache_entries{") for p, snap in snapshots.items()}
    before_soak = list(snapshots)[list(snapshots).index("soak") - 1] if "soak" in snapshots else None
    soak_cache = {
        "entries_at_start": entries.get(before_soak, np.nan), "entries_at_end": entries.get("soak", np.nan),
        "inserts": _sum(snapshots.get("soak", {}), "tiergate_cache_inserts_total")
        - _sum(snapshots.get(before_soak, {}), "tiergate_cache_inserts_total"),
        "evictions": _sum(snapshots.get("soak", {}), "tiergate_cache_evictions_total")
        - _sum(snapshots.get(before_soak, {}), "tiergate_cache_evictions_total"),
    }
    m = machine()
    redis_run = {k: rd[k] for k in ("rps_before", "rps_during", "rps_after", "redis_keys_before_kill",
                                    "redis_keys_after_run")}
    data = {
        "machine": m, "pinned": pinned, "args": vars(args), "ready_s": ready_s, "idle_rss_mb": idle_rss,
        "gateway_alive_at_end": alive, "runs": {k: {kk: vv for kk, vv in v.items() if kk != "per_second"}
                                                for k, v in runs.items()},
        "per_second": {k: v["per_second"] for k, v in runs.items()}, "rss_samples": sampler.samples,
        "soak": soak, "redis_down": redis_run, "gateway_log_levels": levels, "gateway_log_examples": examples,
        "loadavg_1m_during": {"median": pct(loadavg, 50), "max": max(loadavg, default=float("nan"))},
        "errors": errors, "targets_met": targets, "cache_entries": entries, "soak_cache": soak_cache,
        "metrics": snapshots,
    }
    t0 = sampler.samples[0]["t"]
    md = [
        "# Load: wrk through the gateway, soak, Redis killed mid-load", "",
        f"Machine: {m['cpus']} CPUs ({m['processor']}, {m['platform']}), shared with other jobs: load average "
        f"(1 min) during the run median {data['loadavg_1m_during']['median']:.1f}, max "
        f"{data['loadavg_1m_during']['max']:.1f}; at start {tuple(round(x, 1) for x in m['loadavg_at_start'])}. "
        f"Gateway pinned to its own core: {pinned}.", "",
        f"Load: wrk ({args.wrk_threads} thread, {args.connections} connections, {args.timeout_s:.0f} s timeout) "
        f"with `benchmarks/load.lua`: POST /v1/chat/completions, {args.hit_share:.0%} of requests from a pool of "
        f"{args.pool} repeated prompts (hits after first sight), the rest unique prompts (misses, answered by a "
        "fast aiohttp upstream on loopback). Gateway: `tiergate serve`, packaged SmolLM2-135M generator and "
        "MiniLM embedder loaded, semantic cache on (quota "
        f"{args.max_entries} entries per category), tiers host + disk (write-through, fsync) + Redis (a private "
        "redis-server), auth with an API key, JSON logs at warning level.", "",
        markdown_table(rows, ["phase", "seconds", "requests", "rps", "p50_ms", "p99_ms", "p99.9_ms", "max_ms",
                              "hit_rate", "gw_cores", "non_2xx", "socket_errors"]), "",
        "gw_cores: median CPU cores used by the gateway process (all threads) while the phase ran.", "",
        "hit_rate: share of answers served from the cache (exact, semantic or coalesced). `hits_only` asks pool "
        "prompts only (all seen before): the hit path's own rate. Cache outcomes (X-Tiergate-Cache) per phase:", "",
        markdown_table(outcome_rows, ["phase", "exact", "semantic", "coalesced", "miss", "bypass"]), "",
        "## Memory", "",
        f"- Ready (models loaded) {ready_s:.0f} s after start; idle RSS (with children) **{idle_rss:.0f} MB**.",
        f"- Soak ({soak.get('minutes', 0):.1f} min, {soak.get('samples', 0)} samples every {args.sample_s:.0f} s): "
        f"RSS {soak.get('rss_min_mb', float('nan')):.0f}-{soak.get('rss_max_mb', float('nan')):.0f} MB; slope "
        f"{soak.get('slope_mb_per_min', float('nan')):+.2f} MB/min over the soak, "
        f"{soak.get('slope_second_half_mb_per_min', float('nan')):+.2f} MB/min over its second half; "
        f"last tenth {soak.get('rss_last_tenth_mb', float('nan')):.0f} MB vs first tenth "
        f"{soak.get('rss_first_tenth_mb', float('nan')):.0f} MB ({soak.get('end_growth', float('nan')):+.1%}). "
        f"Verdict: **{soak['verdict']}** (criterion: second-half slope <= {MAX_SLOPE_MB_PER_MIN} MB/min and last "
        f"tenth within {MAX_END_GROWTH:.0%} of the first).",
        f"- Cache during the soak: {soak_cache['entries_at_start']:.0f} entries at its start, "
        f"{soak_cache['entries_at_end']:.0f} at its end; {soak_cache['inserts']:.0f} inserts and "
        f"{soak_cache['evictions']:.0f} evictions (quota, TTL) during it.", "",
        "## Redis down", "",
        f"Redis {'SIGKILLed' if args.redis_fault == 'kill' else 'frozen (SIGSTOP)'} {args.redis_down_s:.0f} s into "
        f"a {3 * args.redis_down_s:.0f} s run, {'restarted (empty)' if args.redis_fault == 'kill' else 'resumed'} "
        f"{args.redis_down_s:.0f} s later. Requests/s before **{rd['rps_before']:.0f}**, during "
        f"**{rd['rps_during']:.0f}**, after **{rd['rps_after']:.0f}**; errors {errors['redis_down']}. Redis keys: "
        f"{rd['redis_keys_before_kill']} before the outage, {rd['redis_keys_after_run']} at the end of the run "
        "(after a kill: all written since the restart, so the shared tier resumed).", "",
        "## Gateway log", "",
        f"Lines by level: {levels or 'none'}. Gateway still running at the end: {alive}.",
        *[f"- {n} x `{e}`" for e, n in examples.items()], "",
        "## Targets", "", *[f"- {k}: {'met' if v else 'NOT met'}" for k, v in targets.items()], "",
        f"Plot: load.png (RSS and requests/s over time from {time.strftime('%H:%M:%S', time.localtime(t0))}).",
    ]
    png = save(args.out, data, "\n".join(md))
    plot(runs, sampler, png)
    print("\n".join(md))


def _sum(snapshot: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in snapshot.items() if k.startswith(prefix))


def plot(runs: dict[str, dict[str, Any]], sampler: Sampler, png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    t0 = sampler.samples[0]["t"]
    fig, (ax_rss, ax_rps, ax_load) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    t = [s["t"] - t0 for s in sampler.samples]
    ax_rss.plot(t, [s["rss_mb"] for s in sampler.samples], lw=1, color="tab:blue")
    ax_rss.axhline(1500, color="grey", lw=0.8, ls="--", label="1.5 GB target")
    ax_rss.set(ylabel="gateway RSS (MB)", title="Gateway RSS, requests/s and load over the run")
    for phase, r in runs.items():
        seconds = sorted(r["per_second"])[1:-1]  # the first and last seconds are partial
        ax_rps.plot([s - t0 for s in seconds], [r["per_second"][s] for s in seconds], lw=0.8, label=phase)
        for ax in (ax_rss, ax_rps, ax_load):
            ax.axvline(r["started"] - t0, color="grey", lw=0.5)
        ax_rss.text(r["started"] - t0, ax_rss.get_ylim()[1], f" {phase}", va="top", fontsize=8)
    rd = runs.get("redis_down", {})
    if "killed" in rd and "restarted" in rd:
        for ax in (ax_rss, ax_rps, ax_load):
            ax.axvspan(rd["killed"] - t0, rd["restarted"] - t0, color="tab:red", alpha=0.15,
                       label="Redis down" if ax is ax_rss else None)
    ax_rps.axhline(500, color="grey", lw=0.8, ls="--")
    ax_rps.set(ylabel="requests/s (per second)")
    ax_load.plot(t, [s["loadavg_1m"] for s in sampler.samples], color="tab:grey", label="load average (1 min)")
    ax_load.plot(t, [s["cpu_pct"] / 100 for s in sampler.samples], color="tab:orange", lw=0.8,
                 label="gateway CPU (cores)")
    ax_load.set(xlabel="seconds since ready", ylabel="cores")
    for ax in (ax_rss, ax_rps, ax_load):
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
