"""SIGTERM drains: /readyz turns false at once, in-flight streams finish, then the process exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.upstream_server import Behaviour, UpstreamServer, free_port


def test_sigterm_drains_in_flight_streams(tmp_path: Path):
    up = UpstreamServer(behaviour=Behaviour(stream_stall_s=2.0)).start()
    port = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'var'}\n"
        f"server: {{port: {port}, drain_delay_s: 1.0, drain_timeout_s: 20}}\n"
        f"backends: [{{name: up, kind: openai, base_url: '{up.base_url}', models: [m]}}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    proc = subprocess.Popen([sys.executable, "-m", "tiergate.cli", "serve", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        body = {"model": "m", "messages": [{"role": "user", "content": "a long answer"}], "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))  # the stream is in flight
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            ready = httpx.get(url + "/readyz")  # still listening during the drain delay
            assert ready.status_code == 503 and ready.json()["draining"] is True
            rest = [line for line in lines if line.startswith("data: ")]
        assert first and rest[-1] == "data: [DONE]"  # the stream finished despite SIGTERM
        proc.wait(30)
        assert proc.returncode in (0, -signal.SIGTERM)
        assert up.requests == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        up.stop()
