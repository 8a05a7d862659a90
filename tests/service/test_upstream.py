"""The gateway in front of real OpenAI-compatible servers on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.service.conftest import run_gateway, upstream_settings
from tests.upstream_server import Behaviour, UpstreamServer, free_port


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[UpstreamServer, UpstreamServer]]:
    a, b = UpstreamServer().start(), UpstreamServer().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def gateway(ups, tmp_path_factory) -> Iterator[str]:
    a, b = ups
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    common = {"kind": "openai", "read_timeout_s": 1.0, "connect_timeout_s": 1.0, "retry_backoff_s": 0.01}
    settings = upstream_settings(
        tmp_path_factory.mktemp("gw"),
        {**common, "name": "primary", "base_url": a.base_url, "models": ["up-model", "shared-model"], "max_retries": 2},
        {**common, "name": "dead", "base_url": dead, "models": ["dead-first"], "max_retries": 1},
        {**common, "name": "secondary", "base_url": b.base_url, "models": ["shared-model", "dead-first"],
         "max_retries": 0},
    )
    with run_gateway(settings) as url:
        yield url


@pytest.fixture(autouse=True)
def fresh(ups) -> None:
    for server in ups:
        server.behaviour = Behaviour()
        server.requests = 0
        server.bodies.clear()


def chat(url: str, model: str = "up-model", **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def stream_events(url: str, model: str = "up-model", **extra) -> list[bytes]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": True, **extra}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [line[6:].encode() for line in r.iter_lines() if line.startswith("data: ")]


def test_json_pass_through(gateway, ups):
    r = chat(gateway, temperature=0.3, seed=7, custom_field={"kept": True})
    assert r.status_code == 200
    data = r.json()
    assert data["choices"][0]["message"]["content"].startswith("echo: hello there")
    assert data["usage"]["total_tokens"] > 0
    sent = ups[0].bodies[-1]
    assert sent["temperature"] == 0.3 and sent["seed"] == 7
    assert sent["custom_field"] == {"kept": True}  # unknown fields reach the upstream untouched
    assert r.headers["x-tiergate-cache"] in {"miss", "bypass"}
    assert r.headers["x-request-id"]


def test_streaming_pass_through(gateway, ups):
    events = stream_events(gateway)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == chat(gateway).json()["choices"][0]["message"]["content"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert not any("usage" in c for c in chunks)  # the client did not ask for usage


def test_streaming_usage_when_asked(gateway):
    events = stream_events(gateway, stream_options={"include_usage": True})
    last = orjson.loads(events[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0


def test_retries_5xx_then_succeeds(gateway, ups):
    ups[0].behaviour = Behaviour(fail_first=2, fail_status=503)
    r = chat(gateway)
    assert r.status_code == 200
    assert ups[0].requests == 3  # two failures, then the answer


def test_retries_exhausted_gives_502(gateway, ups):
    ups[0].behaviour = Behaviour(fail_first=10, fail_status=500)
    r = chat(gateway)
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "upstream_error"
    assert ups[0].requests == 3  # max_retries=2


def test_streaming_retries_before_first_byte(gateway, ups):
    ups[0].behaviour = Behaviour(fail_first=1, fail_status=502)
    events = stream_events(gateway)
    assert events[-1] == b"[DONE]"
    assert ups[0].requests == 2


def test_fallback_to_next_backend_on_connect_error(gateway, ups):
    r = chat(gateway, model="dead-first")
    assert r.status_code == 200
    assert ups[1].requests == 1
    metrics = httpx.get(gateway + "/metrics").text
    assert 'tiergate_backend_fallbacks_total{backend="dead"}' in metrics
    assert 'tiergate_backend_retries_total{backend="dead"}' in metrics


def test_fallback_after_primary_exhausts_retries(gateway, ups):
    ups[0].behaviour = Behaviour(fail_first=10, fail_status=503)
    r = chat(gateway, model="shared-model")
    assert r.status_code == 200
    assert ups[0].requests == 3 and ups[1].requests == 1


def test_rate_limited_upstream_falls_back_then_429(gateway, ups):
    ups[0].behaviour = Behaviour(fail_first=10, fail_status=429, retry_after="7")
    assert chat(gateway, model="shared-model").status_code == 200  # the other backend took it
    assert ups[0].requests == 1  # 429 is not retried on the same backend
    r = chat(gateway, model="up-model")  # no other backend serves this one
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_slow_upstream_times_out_504(gateway, ups):
    ups[0].behaviour = Behaviour(delay_s=3.0)
    r = chat(gateway)
    assert r.status_code == 504
    assert "did not answer in time" in r.json()["error"]["message"]


def test_stall_mid_stream_ends_with_error_event(gateway, ups):
    ups[0].behaviour = Behaviour(stream_stall_s=3.0)
    events = stream_events(gateway)
    assert events[-1] != b"[DONE]"
    assert orjson.loads(events[-1])["error"]["code"] == "gateway_timeout"


def test_upstream_client_error_is_passed_on(gateway, ups):
    ups[0].behaviour = Behaviour(fail_first=1, fail_status=400)
    r = chat(gateway)
    assert r.status_code == 400
    assert "upstream says 400" in r.json()["error"]["message"]
    assert ups[0].requests == 1  # a 4xx is the request's fault: never retried


@pytest.mark.parametrize("garbage", ["json", "not_object"])
def test_garbage_answer_gives_502(gateway, ups, garbage):
    ups[0].behaviour = Behaviour(garbage=garbage)
    r = chat(gateway)
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "upstream_error"


def test_connection_reset_gives_502(gateway, ups):
    ups[0].behaviour = Behaviour(garbage="reset")
    r = chat(gateway)
    assert r.status_code == 502


@pytest.mark.parametrize("garbage", ["sse", "no_done"])
def test_malformed_stream_ends_with_error_event(gateway, ups, garbage):
    ups[0].behaviour = Behaviour(garbage=garbage)
    events = stream_events(gateway)
    error = orjson.loads(events[-1])["error"]
    assert error["type"] == "upstream_error"
    assert events[-1] != b"[DONE]"


def test_gateway_stays_healthy_after_faults(gateway, ups):
    ups[0].behaviour = Behaviour(garbage="reset")
    chat(gateway)
    ups[0].behaviour = Behaviour()
    assert httpx.get(gateway + "/healthz").status_code == 200
    assert chat(gateway).status_code == 200


def test_embeddings_forwarded_to_upstream(gateway, ups, tmp_path):
    ups[0].behaviour = Behaviour()
    r = httpx.post(gateway + "/v1/embeddings", json={"model": "up-model", "input": ["abc", "de"]})
    assert r.status_code == 200
    assert [d["embedding"][0] for d in r.json()["data"]] == [3.0, 2.0]


def test_models_lists_every_backend_model(gateway):
    ids = {m["id"] for m in httpx.get(gateway + "/v1/models").json()["data"]}
    assert {"up-model", "shared-model", "dead-first", "all-minilm-l6-v2"} <= ids


def test_metrics_count_requests_and_tokens(gateway):
    chat(gateway)
    text = httpx.get(gateway + "/metrics").text
    assert 'tiergate_requests_total{backend="primary",route="/v1/chat/completions",status="200"}' in text
    assert 'tiergate_tokens_total{backend="primary",kind="completion"}' in text
