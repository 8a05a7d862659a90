"""Per-request plumbing as plain ASGI middleware (no per-request task, streaming untouched):
a request id, the body size limit, one structured log line, the request metrics, and the
observers that want each finished request (path, status, what the route noted, seconds)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiergate.service.errors import error_response
from tiergate.service.metrics import Metrics

log = logging.getLogger("tiergate.access")

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
Observer = Callable[[str, int, dict[str, Any], float], None]
ROUTES = ("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/healthz", "/readyz", "/metrics")


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    for prefix in ("/v1/indexes", "/admin/api", "/admin"):
        if path.startswith(prefix):
            return prefix
    return "other"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int,
                 observers: list[Observer] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.observers = observers if observers is not None else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        if scope["method"] == "POST" and scope["path"].startswith("/v1/") and not _is_json(headers):
            # The API speaks JSON only; curl -d labels its body as a form, so take it as JSON.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        declared = headers.get(b"content-length")
        self.metrics.inflight.inc()
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                await self._too_large(send_wrapper)
                return
            if declared is None and scope["method"] in ("POST", "PUT", "PATCH"):
                # A chunked body has no declared size: read it here, bounded, then replay it.
                body = await _read_bounded(receive, self.max_body)
                if body is None:
                    await self._too_large(send_wrapper)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.inflight.dec()
            elapsed = time.perf_counter() - started
            route = route_label(scope["path"])
            backend = state.get("backend", "none")
            self.metrics.requests.labels(route, backend, str(status)).inc()
            self.metrics.latency.labels(route, backend).observe(elapsed)
            for observe in self.observers:
                observe(scope["path"], status, state, elapsed)
            if route not in ("/metrics", "/healthz", "/readyz"):
                log.info("request", extra={
                    "request_id": request_id, "method": scope["method"], "path": scope["path"],
                    "status": status, "duration_ms": round(elapsed * 1000, 2), "tenant": state.get("tenant"),
                    "backend": backend, "cache": state.get("cache"),
                })

    async def _too_large(self, send: Send) -> None:
        response = error_response(413, f"request body is over the limit of {self.max_body} bytes",
                                  "invalid_request_error", "request_too_large")
        await response({"type": "http"}, _no_receive, send)


async def _read_bounded(receive: Receive, limit: int) -> bytes | None:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        size += len(parts[-1])
        if size > limit:
            return None
        if not message.get("more_body"):
            break
    return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _is_json(headers: dict[bytes, bytes]) -> bool:
    ctype = headers.get(b"content-type", b"")
    return b"json" in ctype or b"multipart" in ctype


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
