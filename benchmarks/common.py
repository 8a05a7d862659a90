"""Helpers shared by the benchmarks: percentiles, machine description, saving JSON + Markdown + plot."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_at_start": os.getloadavg()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def spawn(args: list[str], env: dict[str, str] | None = None, cpu: int | None = None,
          log: Path | None = None) -> subprocess.Popen:
    """Start a process; its output goes to `log` (stdout and stderr together) or nowhere."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    if log is not None:
        out.close()
    if cpu is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {cpu})
    return proc


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # it may exit between listing and reading
            total += child.memory_info().rss
    return total


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def save(study: str, data: dict[str, Any], markdown: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{study}.json").write_text(json.dumps(data, indent=2, default=float))
    (RESULTS / f"{study}.md").write_text(markdown + "\n")
    return RESULTS / f"{study}.png"


def gateway_config(tmp: Path, gw_port: int, up_port: int) -> Path:
    """A gateway whose model `bench-model` is the loopback upstream on `up_port`, with the cache's
    verification sampling off (a sampled hit goes to the backend by design: not a hit to time)."""
    config = tmp / "gateway.yaml"
    config.write_text(
        f"data_dir: {tmp / 'var'}\n"
        f"server: {{port: {gw_port}, log_format: json}}\n"
        "backends:\n"
        f"  - {{name: up, kind: openai, base_url: 'http://127.0.0.1:{up_port}/v1', models: [bench-model]}}\n"
        "cache: {budget: {sample_rate: 0.0, warmup_sample_rate: 0.0}}\n"
    )
    return config
