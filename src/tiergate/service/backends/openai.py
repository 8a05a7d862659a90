"""Any OpenAI-compatible HTTP endpoint, called with aiohttp.

aiohttp rather than httpx: on this workload (many small keep-alive requests from one event
loop) it sustains several times httpx's requests per second at the same CPU; see
benchmarks/gateway_overhead.py, which measures both.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from tiergate.config import BackendConfig
from tiergate.errors import TiergateError, UpstreamError, UpstreamTimeoutError
from tiergate.service.backends.base import Backend, BackendUnavailable, Chunk
from tiergate.service.schemas import ChatCompletionRequest, EmbeddingRequest, dump_request


class UpstreamClientError(TiergateError):
    """The upstream refused the request itself (4xx): passed on with its status and message."""

    type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class OpenAIBackend(Backend):
    kind = "openai"

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.models = list(config.models)
        self.max_retries = config.max_retries
        self.retry_backoff_s = config.retry_backoff_s
        self.base_url = config.base_url.rstrip("/") if config.base_url else ""
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json"}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if key:
                self._headers["Authorization"] = f"Bearer {key}"

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.config.max_connections, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.config.connect_timeout_s, sock_read=self.config.read_timeout_s
        )
        # No cookie jar: one session serves every tenant, so an upstream's cookies must not travel.
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True,
                                              cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # calls ---------------------------------------------------------------
    async def complete(self, req: ChatCompletionRequest, tenant: str) -> dict[str, Any]:
        body = dump_request(req)
        body["stream"] = False
        body.pop("stream_options", None)
        data = await self._post_json("/chat/completions", body)
        if not isinstance(data.get("choices"), list):
            raise UpstreamError(f"backend {self.name!r} answered without 'choices'")
        return data

    async def open_stream(self, req: ChatCompletionRequest, tenant: str) -> AsyncIterator[Chunk]:
        body = dump_request(req)
        body["stream"] = True
        # Usage is asked for always (for metrics); the route drops it unless the client asked.
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        resp = await self._post("/chat/completions", body)
        ctype = resp.headers.get("Content-Type", "")
        if "text/event-stream" not in ctype:
            resp.release()
            raise UpstreamError(f"backend {self.name!r} answered a stream request with {ctype or 'no content type'}")
        return self._chunks(resp)

    async def embed(self, req: EmbeddingRequest) -> dict[str, Any]:
        return await self._post_json("/embeddings", dump_request(req))

    # plumbing --------------------------------------------------------------
    async def _post(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        assert self._session is not None, "backend not started"
        url = self.base_url + path
        try:
            resp = await self._session.post(url, data=orjson.dumps(body), headers=self._headers)
        except aiohttp.ConnectionTimeoutError as exc:
            raise BackendUnavailable(f"backend {self.name!r}: connect timed out", retryable=True) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise UpstreamTimeoutError(f"backend {self.name!r} did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(
                f"backend {self.name!r}: cannot connect ({type(exc).__name__})", retryable=True
            ) from exc
        if resp.status < 400:
            return resp
        detail = await _error_message(resp)
        if resp.status >= 500:
            raise BackendUnavailable(f"backend {self.name!r} answered {resp.status}: {detail}", retryable=True)
        if resp.status == 429:
            retry_after = _float(resp.headers.get("Retry-After"))
            raise BackendUnavailable(
                f"backend {self.name!r} is rate limited: {detail}", retryable=False, status=429,
                retry_after=retry_after,
            )
        if resp.status in (401, 403):  # our credentials for the upstream, not the client's fault
            raise UpstreamError(f"backend {self.name!r} refused the gateway's credentials ({resp.status})")
        if resp.status == 404:
            raise UpstreamClientError(f"backend {self.name!r}: {detail}", 404)
        raise UpstreamClientError(f"backend {self.name!r} rejected the request: {detail}", 400)

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self._post(path, body)
        try:
            raw = await resp.read()
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise UpstreamTimeoutError(f"backend {self.name!r} stopped sending its answer") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"backend {self.name!r} broke off its answer ({type(exc).__name__})") from exc
        finally:
            resp.release()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"backend {self.name!r} answered with invalid JSON") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"backend {self.name!r} answered with JSON that is not an object")
        return data

    async def _chunks(self, resp: aiohttp.ClientResponse) -> AsyncIterator[Chunk]:
        """Parse the upstream's server-sent events into chunk objects, ending at [DONE]."""
        try:
            async for raw_line in resp.content:
                line = raw_line.strip()
                if not line or line.startswith(b":") or not line.startswith(b"data:"):
                    continue  # blank separators, comments, event:/id:/retry: fields
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamError(f"backend {self.name!r} sent a malformed stream event") from exc
                if not isinstance(chunk, dict):
                    raise UpstreamError(f"backend {self.name!r} sent a stream event that is not an object")
                if "error" in chunk:
                    raise UpstreamError(f"backend {self.name!r} failed mid-stream: {_describe(chunk['error'])}")
                yield chunk
            raise UpstreamError(f"backend {self.name!r} ended its stream without [DONE]")
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise UpstreamTimeoutError(f"backend {self.name!r} stalled mid-stream") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError(f"backend {self.name!r} broke off its stream ({type(exc).__name__})") from exc
        finally:
            resp.release()


async def _error_message(resp: aiohttp.ClientResponse) -> str:
    try:
        raw = await resp.read()
    except (TimeoutError, aiohttp.ClientError):
        return f"HTTP {resp.status}"
    finally:
        resp.release()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace") or f"HTTP {resp.status}"
    return _describe(data.get("error", data) if isinstance(data, dict) else data)


def _describe(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)[:500]
    return str(error)[:500]


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

