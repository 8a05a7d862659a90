"""Schemathesis against the gateway's own OpenAPI schema, served by a real gateway.

Every documented operation is called with generated valid and invalid input (bounded examples):
no answer may be a 5xx, and each status, content type and body must be one the schema documents.
Chat completions go to a real upstream on loopback, embeddings to the packaged embedder, and the
API and admin keys are sent, so requests get past authentication into the code behind it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.conftest import run_gateway
from tests.upstream_server import UpstreamServer
from tiergate.config import PACKAGED_EMBEDDER, Settings, load_settings
from tiergate.service.app import create_app

TENANT_KEY = "sk-fuzz-tenant-0123456"
ADMIN_KEY = "sk-fuzz-admin-0123456"
MODEL = "m"  # served by the loopback upstream
INDEX = "docs"  # built before the run, so index routes reach a real index
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 12  # per operation and generation mode: the file stays well under two minutes

pytestmark = pytest.mark.slow  # the packaged embedder loads, and every operation runs a few dozen requests

def gateway_settings(root: Path, upstream_url: str, sources: list[Path]) -> Settings:
    return load_settings(
        data_dir=root / "data",
        backends=[{"name": "up", "kind": "openai", "base_url": upstream_url, "models": [MODEL]}],
        auth={"api_keys": {TENANT_KEY: "tenant-a"}},
        server={"index_source_dirs": sources},
    )

def app_schema() -> dict[str, Any]:
    """The document the gateway serves at /openapi.json; building the app opens nothing."""
    unused = Path(tempfile.gettempdir()) / "tiergate-schema-only"
    return create_app(gateway_settings(unused, "http://127.0.0.1:9/v1", [])).openapi()

# Placeholders the hooks draw beside generated values; the test swaps in what exists at run time.
# Path parameters are URL-quoted after the hooks, so the placeholders are URL-safe.
REAL_JOB = "the-job-that-built-the-index"
REAL_SOURCE = "a-file-inside-index-source-dirs"

SCHEMA_DOCUMENT = app_schema()
schema = schemathesis.openapi.from_dict(
    SCHEMA_DOCUMENT,
    config=schemathesis.Config.from_dict({
        "seed": 20261122,  # the same cases every run, so CI is repeatable
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
    }),
)

def either(value: Any, real: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from([real, value]) if isinstance(value, str) else st.just(value)

@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Half the generated bodies name a model or file that exists, so they get past the lookup."""
    path = context.operation.path
    if not isinstance(body, dict):
        return st.just(body)
    if path in ("/v1/chat/completions", "/v1/embeddings") and "model" in body:
        real = MODEL if path.endswith("completions") else PACKAGED_EMBEDDER
        return either(body["model"], real).map(lambda model: {**body, "model": model})
    if path == "/v1/indexes" and "path" in body:
        return either(body["path"], REAL_SOURCE).map(lambda source: {**body, "path": source})
    return st.just(body)

@schema.hook
def flatmap_path_parameters(context: schemathesis.HookContext, params: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Half the generated names and job ids are real ones (the index itself is never deleted)."""
    operation = context.operation
    if not isinstance(params, dict):
        return st.just(params)
    if "job_id" in params:
        return either(params["job_id"], REAL_JOB).map(lambda job: {**params, "job_id": job})
    if "name" in params and not (operation.method == "delete" and operation.path == "/v1/indexes/{name}"):
        return either(params["name"], INDEX).map(lambda name: {**params, "name": name})
    return st.just(params)

@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    sources = root / "sources"
    sources.mkdir()
    (sources / "notes.txt").write_text("Redis is an in-memory data store.\n\nFAISS searches dense vectors.\n")
    up = UpstreamServer().start()
    mp = pytest.MonkeyPatch()
    mp.setenv("TIERGATE_ADMIN_KEY", ADMIN_KEY)
    try:
        with run_gateway(gateway_settings(root, up.base_url, [sources])) as url:
            yield {"url": url, REAL_JOB: _build_index(url), REAL_SOURCE: str(sources / "notes.txt")}
    finally:
        mp.undo()
        up.stop()

def _build_index(url: str) -> str:
    documents = [{"id": "everest", "text": "Mount Everest is the highest mountain above sea level."},
                 {"id": "nile", "text": "The Nile is a major north-flowing river in Africa."}]
    r = httpx.post(url + "/v1/indexes", json={"name": INDEX, "documents": documents}, headers=_auth("/v1"))
    assert r.status_code == 202, r.text
    job = r.json()["job"]["id"]
    deadline = time.monotonic() + 120
    while (state := httpx.get(f"{url}/v1/indexes/jobs/{job}", headers=_auth("/v1")).json()["state"]) != "done":
        assert state in ("queued", "running") and time.monotonic() < deadline, state
        time.sleep(0.1)
    return job

def _auth(path: str) -> dict[str, str]:
    key = ADMIN_KEY if path.startswith("/admin/") else TENANT_KEY
    return {"Authorization": f"Bearer {key}"}

def _swap_placeholders(case: schemathesis.Case, real: dict[str, str]) -> None:
    if case.path_parameters and case.path_parameters.get("job_id") == REAL_JOB:
        case.path_parameters["job_id"] = real[REAL_JOB]
    if isinstance(case.body, dict) and case.body.get("path") == REAL_SOURCE:
        case.body["path"] = real[REAL_SOURCE]

def test_the_served_schema_is_the_one_fuzzed(gateway):
    assert httpx.get(gateway["url"] + "/openapi.json").json() == SCHEMA_DOCUMENT

def test_the_schema_documents_every_public_operation():
    operations = {(m, p) for p, ops in SCHEMA_DOCUMENT["paths"].items() for m in ops}
    assert {("post", "/v1/chat/completions"), ("post", "/v1/embeddings"), ("get", "/v1/models"),
            ("post", "/v1/indexes"), ("post", "/v1/indexes/{name}/search"), ("get", "/admin/api/status"),
            ("post", "/admin/api/cache/invalidate"), ("get", "/healthz"), ("get", "/readyz"),
            ("get", "/metrics")} <= operations

@schema.parametrize()
# Derandomized like the schema's seed; raise MAX_EXAMPLES locally to explore more.
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case, gateway):
    _swap_placeholders(case, gateway)
    case.call_and_validate(base_url=gateway["url"], headers=_auth(case.path), checks=CHECKS, timeout=60)

def test_gateway_still_healthy_after_the_run(gateway):
    assert httpx.get(gateway["url"] + "/readyz").status_code == 200
    r = httpx.post(gateway["url"] + "/v1/chat/completions", headers=_auth("/v1"),
                   json={"model": MODEL, "messages": [{"role": "user", "content": "still there?"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]

def test_the_schema_documents_errors_in_openai_shape():
    error = SCHEMA_DOCUMENT["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    build = SCHEMA_DOCUMENT["paths"]["/v1/indexes"]["post"]["responses"]
    assert {"202", "400", "401", "413", "429"} <= set(build)
    assert "text/plain" in SCHEMA_DOCUMENT["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    chat = SCHEMA_DOCUMENT["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "404", "429", "502", "504"} <= set(chat)
    assert "text/event-stream" in chat["200"]["content"]

# What json.loads lets through but nothing downstream can encode, and paths the OS refuses: each
# was a 500 before the gateway checked it at the boundary.
ODD_INPUT = [
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1' + b"0" * 25
     + b"}", {}, "seed"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi", "x": -1' + b"0" * 25
     + b"}]}", {}, "messages.0.x"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}', {},
     "messages.0.content"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
     {"X-Tiergate-Cache-TTL": "nan"}, "X-Tiergate-Cache-TTL"),
    ("/v1/embeddings", b'{"model": "all-minilm-l6-v2", "input": ["ok", "\\udfff"]}', {}, "input.1"),
    ("/v1/indexes", b'{"name": "x", "path": "notes\\u0000.txt"}', {}, "NUL"),
    ("/v1/indexes", b'{"name": "x", "path": "SOURCES/' + b"a" * 300 + b'"}', {}, "too long"),
    ("/v1/indexes/docs/search", b'{"query": "\\udbff?"}', {}, "query"),
    ("/admin/api/cache/invalidate", b'{"entry_id": "not hex"}', {}, "entry_id"),
]

@pytest.mark.parametrize(("path", "body", "headers", "named"), ODD_INPUT, ids=[f"{p} {n}" for p, _, _, n in ODD_INPUT])
def test_odd_input_is_a_400_naming_what_is_wrong(gateway, path, body, headers, named):
    body = body.replace(b"SOURCES", str(Path(gateway[REAL_SOURCE]).parent).encode())
    r = httpx.post(gateway["url"] + path, content=body,
                   headers={**_auth(path), **headers, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert named in r.json()["error"]["message"]


def test_a_build_reading_a_streamed_source_may_not_know_its_total_yet():
    total = SCHEMA_DOCUMENT["components"]["schemas"]["JobOut"]["properties"]["total"]
    assert {"type": "null"} in total.get("anyOf", [])
