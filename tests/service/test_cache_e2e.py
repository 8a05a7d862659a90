"""The semantic cache through the gateway: real embedder, real upstream on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.service.conftest import run_gateway, upstream_settings
from tests.upstream_server import Behaviour, UpstreamServer

pytestmark = pytest.mark.slow

KEY_A = "sk-tenant-a-000001"
KEY_B = "sk-tenant-b-000002"
ADMIN = "sk-admin-000000003"


@pytest.fixture(scope="module")
def up() -> Iterator[UpstreamServer]:
    server = UpstreamServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(up, tmp_path_factory) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TIERGATE_ADMIN_KEY", ADMIN)
    settings = upstream_settings(
        tmp_path_factory.mktemp("gw"),
        {"name": "up", "kind": "openai", "base_url": up.base_url, "models": ["m", "other"], "read_timeout_s": 10},
        auth={"api_keys": {KEY_A: "tenant-a", KEY_B: "tenant-b"}},
        # No verification sampling: a sampled would-be hit is served as a miss, at random.
        cache={"enabled": True, "budget": {"sample_rate": 0, "warmup_sample_rate": 0}},
    )
    with run_gateway(settings) as url:
        yield url
    mp.undo()


@pytest.fixture(autouse=True)
def fresh(up, gateway) -> None:
    up.behaviour = Behaviour()
    up.requests = 0
    httpx.post(gateway + "/admin/api/cache/invalidate", json={"all": True}, headers=auth(ADMIN))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(url: str, text: str, key: str = KEY_A, headers: dict | None = None, **extra) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, headers={**auth(key), **(headers or {})}, timeout=30)


def test_exact_hit_after_miss(gateway, up):
    first = ask(gateway, "How do I reverse a list in Python?")
    assert first.headers["x-tiergate-cache"] == "miss"
    assert first.headers["x-tiergate-category"] == "code"
    second = ask(gateway, "How do I reverse a list in Python?")
    assert second.headers["x-tiergate-cache"] == "exact"
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["id"] != first.json()["id"]
    assert up.requests == 1


def test_semantic_hit_on_paraphrase(gateway, up):
    ask(gateway, "How do I reverse a list in Python?")
    r = ask(gateway, "How can I reverse a list in Python?")
    assert r.headers["x-tiergate-cache"] == "semantic"
    assert 0.8 < float(r.headers["x-tiergate-similarity"]) < 1.0
    assert up.requests == 1


@pytest.mark.parametrize(("first", "second"), [
    ("What is the boiling point of water at sea level?", "What is the freezing point of water at sea level?"),
    ("How do I reverse a list in Python?", "How do I reverse a list in Java?"),
    ("What is 15% of 240?", "What is 15% of 250?"),
])
def test_traps_are_not_served(gateway, up, first, second):
    ask(gateway, first)
    r = ask(gateway, second)
    assert r.headers["x-tiergate-cache"] == "miss"
    assert up.requests == 2


def test_stream_hit_replays_as_sse(gateway, up):
    ask(gateway, "Who wrote Pride and Prejudice?")
    body = {"model": "m", "messages": [{"role": "user", "content": "Who wrote Pride and Prejudice?"}],
            "temperature": 0, "stream": True}
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, headers=auth(KEY_A)) as r:
        assert r.headers["x-tiergate-cache"] == "exact"
        lines = [x[6:] for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [orjson.loads(x) for x in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith("echo: Who wrote")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert up.requests == 1


def test_stream_is_cached_only_when_complete(gateway, up):
    body = {"model": "m", "messages": [{"role": "user", "content": "What is photosynthesis?"}], "temperature": 0,
            "stream": True}
    up.behaviour = Behaviour(garbage="sse")
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, headers=auth(KEY_A)) as r:
        list(r.iter_lines())
    assert ask(gateway, "What is photosynthesis?").headers["x-tiergate-cache"] == "miss"  # broken: not stored
    up.behaviour = Behaviour()
    with httpx.stream("POST", gateway + "/v1/chat/completions", json={**body, "messages": [
            {"role": "user", "content": "How tall is Mount Everest?"}]}, headers=auth(KEY_A)) as r:
        list(r.iter_lines())
    assert ask(gateway, "How tall is Mount Everest?").headers["x-tiergate-cache"] == "exact"


def test_cache_control_and_ttl_headers(gateway, up):
    ask(gateway, "What is the capital of Australia?")
    r = ask(gateway, "What is the capital of Australia?", headers={"Cache-Control": "no-cache"})
    assert r.headers["x-tiergate-cache"] == "bypass" and up.requests == 2
    ask(gateway, "What language is spoken in Brazil?", headers={"Cache-Control": "no-store"})
    assert ask(gateway, "What language is spoken in Brazil?").headers["x-tiergate-cache"] == "miss"
    ask(gateway, "Who painted the Mona Lisa?", headers={"X-Tiergate-Cache-TTL": "0"})
    assert ask(gateway, "Who painted the Mona Lisa?").headers["x-tiergate-cache"] == "miss"
    bad = ask(gateway, "Who painted the Mona Lisa?", headers={"X-Tiergate-Cache-TTL": "soon"})
    assert bad.status_code == 400 and "X-Tiergate-Cache-TTL" in bad.json()["error"]["message"]


def test_identical_concurrent_misses_share_one_backend_call(gateway, up):
    up.behaviour = Behaviour(delay_s=1.0)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "How does a vaccine work?"}],
                    "temperature": 0}
            return await asyncio.gather(*[client.post(gateway + "/v1/chat/completions", json=body,
                                                      headers=auth(KEY_A)) for _ in range(5)])

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1
    assert up.requests == 1
    assert sum(r.headers.get("x-tiergate-coalesced") == "1" for r in responses) == 4


def test_tenants_never_see_each_others_entries(gateway, up):
    ask(gateway, "What causes the seasons on Earth?", key=KEY_A)
    r = ask(gateway, "What causes the seasons on Earth?", key=KEY_B)
    assert r.headers["x-tiergate-cache"] == "miss" and up.requests == 2


def test_personal_questions_are_never_cached(gateway, up):
    ask(gateway, "What is my account balance?")
    r = ask(gateway, "What is my account balance?")
    assert r.headers["x-tiergate-category"] == "personal"
    assert r.headers["x-tiergate-cache"] in {"bypass", "miss"} and up.requests == 2


def test_category_from_header(gateway, up):
    r = ask(gateway, "Tell me about the stock market", headers={"X-Tiergate-Category": "time_sensitive"})
    assert r.headers["x-tiergate-category"] == "time_sensitive"
    bad = ask(gateway, "x", headers={"X-Tiergate-Category": "no-such-category"})
    assert bad.status_code == 400


def test_follow_up_after_different_context_does_not_hit(gateway, up):
    def turns(first: str) -> list[dict]:
        return [{"role": "user", "content": first}, {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": "and in Python?"}]

    body = {"model": "m", "temperature": 0}
    h = auth(KEY_A)
    httpx.post(gateway + "/v1/chat/completions", json={**body, "messages": turns("How do I sort a list in Go?")},
               headers=h)
    r = httpx.post(gateway + "/v1/chat/completions",
                   json={**body, "messages": turns("How do I open a file in Go?")}, headers=h)
    assert r.headers["x-tiergate-cache"] == "miss" and up.requests == 2


def test_high_temperature_bypasses(gateway, up):
    r = ask(gateway, "Tell me a joke", temperature=1.5)
    assert r.headers["x-tiergate-cache"] == "bypass"


def test_admin_stats_and_invalidation(gateway, up):
    ask(gateway, "What is the largest planet in the solar system?")
    ask(gateway, "What is the largest planet in the solar system?")
    stats = httpx.get(gateway + "/admin/api/cache", headers=auth(ADMIN)).json()
    assert stats["entries"] >= 1
    assert stats["tenants"]["tenant-a"]["factual"]["exact"] >= 1
    assert httpx.get(gateway + "/admin/api/cache", headers=auth(KEY_A)).status_code == 403
    assert httpx.post(gateway + "/admin/api/cache/invalidate", json={}, headers=auth(ADMIN)).status_code == 400
    r = httpx.post(gateway + "/admin/api/cache/invalidate", json={"tenant": "tenant-a"}, headers=auth(ADMIN))
    assert r.json()["invalidated"] >= 1
    assert ask(gateway, "What is the largest planet in the solar system?").headers["x-tiergate-cache"] == "miss"
    assert "tiergate_cache" in httpx.get(gateway + "/metrics").text


def test_cli_stats_and_invalidate(gateway, up):
    from typer.testing import CliRunner

    from tiergate.cli import app

    ask(gateway, "How many bones are in the human body?")
    runner = CliRunner()
    out = runner.invoke(app, ["cache", "stats", "--url", gateway, "--admin-key", ADMIN, "--json"])
    assert out.exit_code == 0, out.output
    assert orjson.loads(out.output)["entries"] >= 1
    out = runner.invoke(app, ["cache", "invalidate", "--url", gateway, "--admin-key", ADMIN, "--category", "factual"])
    assert out.exit_code == 0 and "invalidated 1 entries" in out.output
    out = runner.invoke(app, ["cache", "stats", "--url", gateway, "--admin-key", KEY_A])
    assert out.exit_code == 1 and "403" in out.output
