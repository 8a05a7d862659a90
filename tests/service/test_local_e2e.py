"""End to end through HTTP against the real SmolLM2-135M-Instruct and MiniLM embedder."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.service.conftest import run_gateway
from tiergate.config import load_settings

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gateway(generator_dir, tmp_path_factory) -> Iterator[str]:
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("gw"),
        models={"generator": str(generator_dir)},
        engine={"workers": 1, "queue_size": 1, "max_tokens_limit": 600},
        cache={"enabled": False},  # these tests are about the engine; the cache has its own
    )
    with run_gateway(settings) as url:
        yield url


def complete(url: str, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 12, "temperature": 0, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


def stream_text(url: str, **extra) -> tuple[str, list[dict]]:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 12, "temperature": 0, "stream": True, **extra}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [orjson.loads(x) for x in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return text, chunks


def test_greedy_completion_has_text_and_usage(gateway):
    r = complete(gateway)
    assert r.status_code == 200
    data = r.json()
    text = data["choices"][0]["message"]["content"]
    assert text.strip()
    assert "paris" in text.lower()
    usage = data["usage"]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] >= 0
    assert data["choices"][0]["finish_reason"] in {"stop", "length"}


def test_streaming_matches_non_streaming(gateway):
    text, chunks = stream_text(gateway)
    assert text == complete(gateway).json()["choices"][0]["message"]["content"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    assert len({c["id"] for c in chunks}) == 1


def test_stream_usage_on_request(gateway):
    _, chunks = stream_text(gateway, stream_options={"include_usage": True})
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_seeded_sampling_is_reproducible(gateway):
    a = complete(gateway, temperature=1.2, top_p=0.95, seed=42, max_tokens=16).json()
    b = complete(gateway, temperature=1.2, top_p=0.95, seed=42, max_tokens=16).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]


def test_max_tokens_and_stop(gateway):
    data = complete(gateway, max_tokens=3, messages=[{"role": "user", "content": "Count from 1 to 20."}]).json()
    assert data["usage"]["completion_tokens"] == 3 and data["choices"][0]["finish_reason"] == "length"
    full = complete(gateway).json()["choices"][0]["message"]["content"]
    cut = complete(gateway, stop=[full[2:5]]).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["message"]["content"] == full[: full.index(full[2:5])]


def test_limits_are_enforced_with_400(gateway):
    r = complete(gateway, max_tokens=601)
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = complete(gateway, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    assert r.status_code == 400 and "text content only" in r.json()["error"]["message"]


def test_full_queue_answers_429_with_retry_after(gateway):
    # One worker and one queue slot: of five long requests sent at once, some must be refused.
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=300) as client:
            body = {"model": MODEL, "messages": ASK, "max_tokens": 200, "temperature": 0,
                    "stop": ["never-appears-xyz"]}
            return await asyncio.gather(*[client.post(gateway + "/v1/chat/completions", json=body)
                                          for _ in range(5)])

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} <= {200, 429}
    refused = [r for r in responses if r.status_code == 429]
    assert refused
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].json()["error"]["type"] == "rate_limit_error"
    assert complete(gateway).status_code == 200  # the engine is still serving afterwards


def test_embeddings(gateway):
    r = httpx.post(gateway + "/v1/embeddings", json={"model": "all-minilm-l6-v2",
                                                      "input": ["the cat sat", "a cat was sitting", "stock prices"]})
    assert r.status_code == 200
    vectors = np.array([d["embedding"] for d in r.json()["data"]])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]  # paraphrases sit closer than unrelated text
    b64 = httpx.post(gateway + "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "the cat sat",
                                                        "encoding_format": "base64"}).json()
    import base64

    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-5)


def test_models_and_readiness(gateway):
    ids = [m["id"] for m in httpx.get(gateway + "/v1/models").json()["data"]]
    assert MODEL in ids and "all-minilm-l6-v2" in ids
    ready = httpx.get(gateway + "/readyz").json()
    assert ready["ready"] and ready["backends"][0]["model_id"].startswith(MODEL + "@")


DOC_A = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
         "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
         "for the 1889 World's Fair.")
DOC_B = ("The Colosseum is an elliptical amphitheatre in the centre of the city of Rome, Italy. "
         "Built of travertine limestone, tuff and brick-faced concrete, it was the largest "
         "amphitheatre ever built at the time.")


def test_documents_reuse_chunk_kv_in_any_order(gateway):
    def ask(docs: list[str], question: str, **headers) -> dict:
        body = {"model": MODEL, "temperature": 0, "max_tokens": 8,
                "documents": [{"id": str(i), "text": d} for i, d in enumerate(docs)],
                "messages": [{"role": "user", "content": question}]}
        r = httpx.post(gateway + "/v1/chat/completions", json=body, headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    ask([DOC_A, DOC_B], "Where is the Eiffel Tower?")
    reordered = ask([DOC_B, DOC_A], "Who built the Colosseum?")
    assert reordered["usage"]["prompt_tokens_details"]["cached_tokens"] > 40  # both chunks reused
    off = ask([DOC_B, DOC_A], "Who built the Colosseum?", **{"X-Tiergate-KV": "off"})
    assert off["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert off["choices"][0]["message"]["content"].strip()


def test_kv_chunks_are_never_shared_across_tenants(generator_dir, tmp_path):
    settings = load_settings(
        data_dir=tmp_path, models={"generator": str(generator_dir)},
        engine={"workers": 1}, cache={"enabled": False},
        auth={"api_keys": {"key-alpha": "alpha", "key-beta": "beta"}},
    )

    def cached_tokens(url: str, key: str, docs: list[str]) -> int:
        body = {"model": MODEL, "temperature": 0, "max_tokens": 4,
                "documents": [{"id": str(i), "text": d} for i, d in enumerate(docs)],
                "messages": [{"role": "user", "content": "Which of these is in Rome?"}]}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120,
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    with run_gateway(settings) as url:
        assert cached_tokens(url, "key-alpha", [DOC_A, DOC_B]) == 0
        assert cached_tokens(url, "key-alpha", [DOC_B, DOC_A]) > 40  # alpha reuses its own chunks
        assert cached_tokens(url, "key-beta", [DOC_B, DOC_A]) == 0  # beta computes everything itself
        assert cached_tokens(url, "key-beta", [DOC_A, DOC_B]) > 40
