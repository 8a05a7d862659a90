"""A writer killed with SIGKILL mid-stream loses nothing it acknowledged."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from tiergate.tiers import TieredStore
from tiergate.tiers.disk import is_inline

from .helpers import check_invariants, config

SRC = str(Path(__file__).resolve().parents[2] / "src")

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tiergate.tiers import StoreConfig, TieredStore

    path, start = sys.argv[1], int(sys.argv[2])
    cfg = StoreConfig(gpu={"enabled": False}, host={"budget_bytes": 1 << 20},
                      disk={"path": path, "fsync": True}, sweep_interval_s=0)
    store = TieredStore(cfg)
    print("READY", flush=True)
    i = start
    while True:
        rng = np.random.default_rng(i)
        size = int(rng.integers(1, 600_000 if i % 3 else 8_000))  # every third small: inline
        if i % 2:
            store.put("crash", f"k{i}", rng.integers(0, 255, size, dtype=np.uint8))
        else:
            store.put("crash", f"k{i}", rng.bytes(size))
        if i % 7 == 0:
            store.delete("crash", f"k{i - 3}")
        print(f"ACK {i}", flush=True)
        i += 1
    """
)


def expected(i: int) -> bytes:
    rng = np.random.default_rng(i)
    size = int(rng.integers(1, 600_000 if i % 3 else 8_000))
    return rng.integers(0, 255, size, dtype=np.uint8).tobytes() if i % 2 else rng.bytes(size)


def run_and_kill(path: Path, start: int, acks_before_kill: int) -> list[int]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(start)], stdout=subprocess.PIPE, env=env, text=True
    )
    acked: list[int] = []
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        while len(acked) < acks_before_kill:
            line = child.stdout.readline()
            assert line.startswith("ACK"), f"child stopped: {line!r}"
            acked.append(int(line.split()[1]))
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: the child is inside its next put
        for line in child.stdout:  # anything it printed before dying was acknowledged too
            if line.startswith("ACK"):
                acked.append(int(line.split()[1]))
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return acked


def test_every_acknowledged_put_survives_sigkill(tmp_path) -> None:
    start = 0
    for round_, n in enumerate((40, 25)):
        acked = run_and_kill(tmp_path, start, n)
        deleted = {i - 3 for i in acked if i % 7 == 0}
        with TieredStore(config(tmp_path)) as s:
            s.disk._scrub_thread.join()
            check_invariants(s)
            for i in range(start if round_ else 0, max(acked) + 1):
                got = s.get("crash", f"k{i}", as_="bytes")
                if i in deleted:
                    assert got is None, f"k{i} was deleted before the crash"
                elif i in acked:
                    assert got is not None, f"acknowledged k{i} lost"
                    assert hashlib.sha256(got).digest() == hashlib.sha256(expected(i)).digest()
            held = {p.name for p in (tmp_path / "objects").rglob("*.obj")}
            in_files = [r for r in s.disk._live.values() if not is_inline(r[9])]
            assert len(held) == len(in_files), "uncommitted files were left behind"
            assert len(in_files) < len(s.keys("crash")) - 5  # the small ones live in the manifest
        start = max(acked) + 1
