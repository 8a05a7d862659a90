"""uvicorn with a graceful drain: on SIGTERM, /readyz turns false at once, the listener stays open
for `drain_delay_s` (so load balancers notice), then in-flight requests and streams get
`drain_timeout_s` to finish."""

from __future__ import annotations

import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from tiergate.config import Settings


class DrainingServer(uvicorn.Server):
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        super().__init__(uvicorn.Config(
            app, host=settings.server.host, port=settings.server.port, log_config=None, access_log=False,
            loop="uvloop", http="httptools", proxy_headers=False,
            timeout_graceful_shutdown=settings.server.drain_timeout_s,
        ))
        self.services = app.state.services
        self.delay = settings.server.drain_delay_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.services.draining or self.delay <= 0:
            self.services.draining = True
            super().handle_exit(sig, frame)
            return
        self.services.draining = True
        # uvicorn's main loop polls should_exit, so setting it from a timer thread is enough.
        timer = threading.Timer(self.delay, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
