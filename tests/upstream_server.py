"""A real OpenAI-compatible HTTP server on a loopback port, for tests and benchmarks.

It answers chat completions (JSON and SSE) and embeddings, and can be told to misbehave:
fail the first N requests with a status, answer slowly, send garbage, reset connections.
Run it in a thread (`UpstreamServer().start()`) or as a process (`python tests/upstream_server.py PORT`).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Behaviour:
    fail_first: int = 0  # answer this many requests with `fail_status` first
    fail_status: int = 503
    delay_s: float = 0.0  # before the headers
    stream_stall_s: float = 0.0  # after the first chunk of a stream
    garbage: str | None = None  # "json" | "sse" | "no_done" | "reset" | "not_object"
    retry_after: str | None = None
    words: int = 5


@dataclass
class UpstreamServer:
    port: int = field(default_factory=free_port)
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: int = 0
    bodies: list[dict] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = orjson.loads(await request.read())
        self.bodies.append(body)
        b = self.behaviour
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        if self.requests <= b.fail_first:
            headers = {"Retry-After": b.retry_after} if b.retry_after else None
            err = {"error": {"message": f"upstream says {b.fail_status}", "type": "x", "code": None}}
            return web.json_response(err, status=b.fail_status, headers=headers)
        if b.garbage == "reset":
            request.transport.close()  # the connection dies before any answer
            return web.Response()
        text = reply_text(body, b.words)
        model = body.get("model", "")
        if body.get("stream"):
            return await self._stream(request, body, text)
        if b.garbage == "json":
            return web.Response(body=b"{this is not json", content_type="application/json")
        if b.garbage == "not_object":
            return web.json_response([1, 2, 3])
        return web.json_response(completion(model, text))

    async def _stream(self, request: web.Request, body: dict, text: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": body.get("model")}
        b = self.behaviour
        await resp.write(sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                   "finish_reason": None}]}))
        if b.stream_stall_s:
            await asyncio.sleep(b.stream_stall_s)
        for i, word in enumerate(text.split(" ")):
            piece = word if i == 0 else " " + word
            delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            await resp.write(sse({**base, "choices": [delta]}))
            if b.garbage == "sse" and i == 1:
                await resp.write(b"data: {not json}\n\n")
        await resp.write(sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(sse({**base, "choices": [], "usage": usage(text)}))
        if b.garbage != "no_done":
            await resp.write(b"data: [DONE]\n\n")
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = orjson.loads(await request.read())
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    # running -----------------------------------------------------------------
    def start(self) -> UpstreamServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024).start())
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("upstream server did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def reply_text(body: dict, words: int) -> str:
    last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
    content = last.get("content") if isinstance(last.get("content"), str) else ""
    return " ".join((["echo:"] + content.split() + ["ok"] * words)[: max(words, 1)])


def usage(text: str) -> dict:
    n = len(text.split())
    return {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}


def completion(model: str, text: str) -> dict:
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage(text)}


def sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


if __name__ == "__main__":  # a standalone process for benchmarks
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8900
    web.run_app(UpstreamServer(port=port).app(), host="127.0.0.1", port=port, access_log=None, print=None)
