"""Helpers for fault tests: a gateway as a real subprocess (SIGKILL-able), a small tmpfs to fill,
and a look at the disk tier's object files from outside the store."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.upstream_server import free_port
from tiergate.tiers import codec
from tiergate.tiers.errors import CorruptObjectError

REPO = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """`python -m tiergate.cli serve --config FILE` in its own process; its log goes to a file."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.base_config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {**config, "server": {**config.get("server", {}), "port": self.port, "log_format": "text"}}
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"gateway-{self.port}.log"

    def start(self, timeout: float = 180) -> GatewayProcess:
        path = self.workdir / f"gateway-{self.port}.yaml"
        path.write_text(yaml.safe_dump(self.config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tiergate.cli", "serve", "--config", str(path)],
                                         env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"gateway did not become ready:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush, no compaction runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def restarted(self) -> GatewayProcess:
        """A fresh process on the same config and data dir (on a new port)."""
        return GatewayProcess(self.base_config, self.workdir).start()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of `size` at `path`: a disk that fills up for real."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {exc} {detail.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(folder: Path, name: str = "ballast") -> Path:
    """Write a file until the device reports ENOSPC; returns it (delete it to free the space)."""
    path = folder / name
    block = b"\0" * 4096
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return path


def object_files(tier_dir: Path) -> Iterator[tuple[Path, codec.Header, int]]:
    """(file, header, payload offset) of every object file of a disk tier directory."""
    for path in sorted((tier_dir / "objects").glob("*/*.obj")):
        data = path.read_bytes()
        with contextlib.suppress(CorruptObjectError):  # a damaged one is no use to a test that damages files
            n = codec.header_length(data)
            yield path, codec.parse_header(data[:n]), n


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))
