"""/v1/indexes and chat retrieval through the gateway: real embedder, real index, real upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.service.conftest import run_gateway, upstream_settings
from tests.upstream_server import UpstreamServer

pytestmark = pytest.mark.slow

KEY_A = "sk-index-tenant-a-1"
KEY_B = "sk-index-tenant-b-2"
FACTS = [
    ("paris", "Paris is the capital and largest city of France, on the river Seine."),
    ("berlin", "Berlin is the capital of Germany and its most populous city."),
    ("everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    ("python", "Python is a high-level programming language created by Guido van Rossum."),
    ("photosynthesis", "Photosynthesis lets plants turn light, water and carbon dioxide into sugar."),
    ("nile", "The Nile is a major north-flowing river in northeastern Africa."),
] + [(f"filler-{i}", f"Filler passage number {i} about topic {i % 7} and item {i}.") for i in range(40)]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[tuple[str, UpstreamServer, object]]:
    up = UpstreamServer().start()
    src = tmp_path_factory.mktemp("sources")
    (src / "corpus.jsonl").write_text("\n".join(
        f'{{"id": "{i}", "text": "{t}"}}' for i, t in FACTS[:10]) + "\n")
    settings = upstream_settings(
        tmp_path_factory.mktemp("gw"),
        {"name": "up", "kind": "openai", "base_url": up.base_url, "models": ["m"]},
        auth={"api_keys": {KEY_A: "a", KEY_B: "b"}},
        server={"index_source_dirs": [str(src)]},
    )
    with run_gateway(settings) as url:
        yield url, up, src
    up.stop()


def call(method: str, url: str, key: str = KEY_A, **kw) -> httpx.Response:
    return httpx.request(method, url, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kw)


def wait_job(url: str, job_id: str, key: str = KEY_A) -> dict:
    deadline = time.monotonic() + 300
    while True:
        job = call("GET", f"{url}/v1/indexes/jobs/{job_id}", key).json()
        if job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


@pytest.fixture(scope="module")
def built(env) -> str:
    url, _, _ = env
    docs = [{"id": i, "text": t, "metadata": {"kind": "fact" if not i.startswith("filler") else "filler"}}
            for i, t in FACTS]
    r = call("POST", f"{url}/v1/indexes", json={"name": "facts", "documents": docs})
    assert r.status_code == 202
    job = wait_job(url, r.json()["job"]["id"])
    assert job["state"] == "done" and job["progress"] == 1.0
    return "facts"


def test_search_finds_the_passage(env, built):
    url, _, _ = env
    r = call("POST", f"{url}/v1/indexes/{built}/search", json={"query": "highest mountain in the world", "k": 3})
    assert r.status_code == 200
    assert r.json()["data"][0]["id"] == "everest"
    r = call("POST", f"{url}/v1/indexes/{built}/search", json={"query": "a big river", "k": 3,
                                                                   "filters": {"kind": "filler"}})
    assert all(h["id"].startswith("filler") for h in r.json()["data"])


def test_info_and_list(env, built):
    url, _, _ = env
    info = call("GET", f"{url}/v1/indexes/{built}").json()
    assert info["passages"] == len(FACTS) and info["index_bytes"] > 0 and info["raw_text_bytes"] > 0
    names = [i["name"] for i in call("GET", f"{url}/v1/indexes").json()["data"]]
    assert built in names


def test_other_tenant_cannot_see_it(env, built):
    url, _, _ = env
    assert call("GET", f"{url}/v1/indexes/{built}", KEY_B).status_code == 404
    r = call("POST", f"{url}/v1/indexes/{built}/search", KEY_B, json={"query": "x"})
    assert r.status_code == 404
    assert built not in [i["name"] for i in call("GET", f"{url}/v1/indexes", KEY_B).json()["data"]]


def test_chat_retrieval_puts_passages_into_the_prompt(env, built):
    url, up, _ = env
    body = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "Who created Python?"}],
            "retrieval": {"index": built, "k": 2}}
    r = call("POST", f"{url}/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.json()["retrieval"]["ids"][0] == "python"
    assert r.headers["x-tiergate-retrieved"] == "2"
    sent = up.bodies[-1]
    assert "retrieval" not in sent and "documents" not in sent  # tiergate's fields never go upstream
    assert any("Guido van Rossum" in m["content"] for m in sent["messages"] if m["role"] == "system")


def test_documents_update_without_rebuild(env, built):
    url, _, _ = env
    r = call("POST", f"{url}/v1/indexes/{built}/documents",
             json={"documents": [{"id": "danube", "text": "The Danube flows through Vienna and Budapest."}]})
    assert r.status_code == 200 and r.json()["inserted"] == 1
    hits = call("POST", f"{url}/v1/indexes/{built}/search", json={"query": "river through Vienna", "k": 1}).json()
    assert hits["data"][0]["id"] == "danube"
    r = call("DELETE", f"{url}/v1/indexes/{built}/documents", json={"ids": ["danube"]})
    assert r.json()["deleted"] == 1
    hits = call("POST", f"{url}/v1/indexes/{built}/search", json={"query": "river through Vienna", "k": 5}).json()
    assert "danube" not in [h["id"] for h in hits["data"]]


def test_build_from_allowed_server_path(env):
    url, _, src = env
    r = call("POST", f"{url}/v1/indexes", json={"name": "from-path", "path": str(src / "corpus.jsonl")})
    assert r.status_code == 202
    assert wait_job(url, r.json()["job"]["id"])["state"] == "done"


@pytest.mark.parametrize("path", ["/etc/passwd", "{src}/../../etc/passwd"])
def test_paths_outside_allowed_folders_are_refused(env, path):
    url, _, src = env
    r = call("POST", f"{url}/v1/indexes", json={"name": "bad", "path": path.format(src=src)})
    assert r.status_code == 400 and "outside the allowed folders" in r.json()["error"]["message"]


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_bad_index_names_are_refused(env, name):
    url, _, _ = env
    r = call("POST", f"{url}/v1/indexes", json={"name": name, "documents": [{"id": "1", "text": "x"}]})
    assert r.status_code == 400


def test_unknown_index_and_job(env):
    url, _, _ = env
    assert call("GET", f"{url}/v1/indexes/nope").status_code == 404
    assert call("GET", f"{url}/v1/indexes/jobs/nope").status_code == 404
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "retrieval": {"index": "nope"}}
    assert call("POST", f"{url}/v1/chat/completions", json=body).status_code == 404
