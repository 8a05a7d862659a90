"""Chunk KV outlives the process: the disk tier after a restart, Redis between two engines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def engine_process(generator_dir: Path, order: str, **store: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.kvstore.proc", str(generator_dir), order]
    for name, value in store.items():
        cmd += [f"--{name}", value]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reuse_after_restart_from_the_disk_tier(generator_dir: Path, tmp_path: Path) -> None:
    disk = str(tmp_path / "tiers")
    first = engine_process(generator_dir, "0,1,2", disk=disk)
    assert first["usage"]["chunks_missed"] == 3 and first["stats"]["chunks_stored"] == 3
    second = engine_process(generator_dir, "2,0,1", disk=disk)  # a new process: memory tiers empty
    assert second["usage"]["chunks_hit"] == 3 and second["usage"]["cached_tokens"] > 0
    assert second["stats"]["chunk_hits"] == {"disk": 3}


def test_two_engine_processes_share_chunks_through_redis(generator_dir: Path, redis_server: str) -> None:
    first = engine_process(generator_dir, "1,3", redis=redis_server)
    assert first["usage"]["chunks_missed"] == 2
    second = engine_process(generator_dir, "3,1,0", redis=redis_server)
    assert second["usage"]["chunks_hit"] == 2 and second["usage"]["chunks_missed"] == 1
    assert second["stats"]["chunk_hits"] == {"redis": 2}
