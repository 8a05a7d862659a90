"""The dashboard in a real headless Chromium against a real gateway (real embedder, real upstream):
log in, see the numbers the API returns after a scripted workload, invalidate, log out."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import run_gateway, upstream_settings
from tests.upstream_server import UpstreamServer
from tiergate.service.app import create_app
from tiergate.service.dashboard.formats import fmt
from tiergate.service.dashboard.timeseries import Series

pytestmark = pytest.mark.slow

ADMIN = "sk-admin-000000003"
KEY_A = "sk-tenant-a-000001"
KEY_B = "sk-tenant-b-000002"
SCREENSHOT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "dashboard.png"


class Gateway:
    def __init__(self, settings) -> None:
        self.settings = settings
        self._stack = contextlib.ExitStack()
        self.url = self._stack.enter_context(run_gateway(settings))

    def stop(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    up = UpstreamServer().start()
    mp = pytest.MonkeyPatch()
    mp.setenv("TIERGATE_ADMIN_KEY", ADMIN)
    settings = upstream_settings(
        tmp_path_factory.mktemp("gw"),
        {"name": "up", "kind": "openai", "base_url": up.base_url, "models": ["m"], "read_timeout_s": 10},
        auth={"api_keys": {KEY_A: "tenant-a", KEY_B: "tenant-b"}},
        cache={"enabled": True, "budget": {"sample_rate": 0, "warmup_sample_rate": 0}},  # deterministic hits
        dashboard={"sample_interval_s": 0.5, "cost_per_1k_tokens": {"m": 0.5}},
    )
    gw = Gateway(settings)
    yield gw
    gw.stop()
    mp.undo()
    up.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(url: str, text: str, key: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0}
    r = httpx.post(url + "/v1/chat/completions", json=body, headers=bearer(key), timeout=30)
    r.raise_for_status()
    return r.headers["x-tiergate-cache"]


def overview(url: str) -> dict:
    r = httpx.get(url + "/admin/api/overview", headers=bearer(ADMIN))
    r.raise_for_status()
    return r.json()


def build_small_index(settings) -> None:
    from transformers import AutoTokenizer

    from tests.index.conftest import HashEmbedder
    from tiergate.config import ModelsConfig
    from tiergate.index import build_index
    from tiergate.models import embedder_dir

    tok = AutoTokenizer.from_pretrained(embedder_dir(ModelsConfig()), local_files_only=True)
    records = [{"id": f"d{i}", "text": f"Passage {i} is about topic {i % 7} and gateway caching."} for i in range(40)]
    build_index(settings, "docs", [records], embedder=HashEmbedder(tok))


def test_refuses_access_without_the_key(gateway, browser):
    url = gateway.url
    assert httpx.get(url + "/admin/api/overview").status_code == 401
    assert httpx.get(url + "/admin/api/series").status_code == 401
    assert httpx.get(url + "/admin/api/overview", headers=bearer(KEY_A)).status_code == 403
    assert httpx.post(url + "/admin/api/actions/invalidate", json={"all": True}).status_code == 401
    forged = {"tiergate_session": "9999999999.abc.forged"}
    assert httpx.get(url + "/admin/api/overview", cookies=forged).status_code == 401
    page = browser.new_page()
    page.goto(url + "/admin")
    assert page.url.endswith("/admin/login")
    page.fill("#key", "not-the-admin-key")
    page.click("button[type=submit]")
    assert page.url.endswith("/admin/login")
    assert "not the admin key" in page.inner_text(".error")
    assert not [c for c in browser.cookies() if c["name"] == "tiergate_session"]
    page.close()


def test_session_cookie_flags(gateway):
    r = httpx.post(gateway.url + "/admin/login", data={"key": ADMIN}, headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    cookie = r.headers["set-cookie"].lower()
    for flag in ("httponly", "samesite=strict", "secure", "path=/admin"):
        assert flag in cookie
    plain = httpx.post(gateway.url + "/admin/login", data={"key": ADMIN}).headers["set-cookie"].lower()
    assert "secure" not in plain and "httponly" in plain  # plain http: a Secure cookie would never come back


def test_dashboard_shows_the_workload_and_invalidates(gateway, browser):
    url = gateway.url
    assert [ask(url, "How do I reverse a list in Python?", KEY_A) for _ in range(3)] == ["miss", "exact", "exact"]
    assert ask(url, "How can I reverse a list in Python?", KEY_A) == "semantic"
    assert [ask(url, "Who painted the Mona Lisa?", KEY_B) for _ in range(2)] == ["miss", "exact"]
    build_small_index(gateway.settings)
    job = httpx.post(url + "/v1/indexes", headers=bearer(KEY_A), timeout=30,
                     json={"name": "over-http", "documents": [{"id": "1", "text": "a passage"},
                                                              {"id": "2", "text": "another passage"}]}).json()["job"]
    while httpx.get(f"{url}/v1/indexes/jobs/{job['id']}", headers=bearer(KEY_A)).json()["state"] in ("queued",
                                                                                                    "running"):
        time.sleep(0.2)

    page = browser.new_page()
    page.goto(url + "/admin/login")
    page.fill("#key", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/admin$"))
    session = next(c for c in browser.cookies() if c["name"] == "tiergate_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/admin"

    o = overview(url)
    assert (o["cache"]["exact"], o["cache"]["semantic"], o["cache"]["miss"]) == (3, 1, 2)
    assert o["cache"]["saved"]["hits"] == 4 and o["cache"]["saved"]["tokens"] > 0  # every hit, with its usage
    page.wait_for_function("Number(document.body.dataset.loaded || 0) >= 1")
    for path, kind in (("cache.exact", "int"), ("cache.semantic", "int"), ("cache.miss", "int"),
                       ("cache.hit_rate", "pct"), ("cache.saved.hits", "int"), ("cache.entries", "int"),
                       ("indexes.count", "int"), ("indexes.passages", "int")):
        part, key = path.split(".", 1)
        expected = o[part]
        for k in key.split("."):
            expected = expected[k]
        assert page.inner_text(f'[data-k="{path}"] >> nth=0') == fmt(expected, kind), path

    rows = {r["name"]: r for r in o["cache"]["tenants"]}
    tenant_row = page.locator('table[data-rows="cache.tenants"] tbody tr', has_text="tenant-a")
    assert tenant_row.locator("td").nth(2).inner_text() == fmt(rows["tenant-a"]["exact"], "int")
    code = next(c for c in o["cache"]["categories"] if c["name"] == "code")
    code_row = page.locator('table[data-rows="cache.categories"] tbody tr', has_text="code").first
    assert code_row.locator("td").nth(1).inner_text() == fmt(code["hit_rate"], "pct")
    assert code_row.locator("td").nth(6).inner_text() == fmt(code["threshold"], "thr")
    index_row = page.locator('table[data-rows="indexes.indexes"] tbody tr', has_text="docs")
    assert index_row.locator("td").nth(2).inner_text() == fmt(o["indexes"]["indexes"][0]["passages"], "int")
    assert page.locator('[data-reason="kv"]').inner_text().startswith("no local engine")
    assert not page.locator('[data-k="indexes.jobs_reason"]').is_visible()  # the jobs API is wired in
    job_row = page.locator('table[data-rows="indexes.jobs"] tbody tr', has_text="over-http")
    assert "done" in job_row.inner_text()
    page.wait_for_selector("#chart-lookups canvas")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # An action with the cookie but without the page's CSRF token is refused.
    assert browser.request.post(url + "/admin/api/actions/invalidate", data={"all": True}).status == 403

    entries_a = rows["tenant-a"]["entries"]
    assert entries_a >= 1
    page.fill('#invalidate input[name="tenant"]', "tenant-a")
    page.click("#invalidate button[type=submit]")
    page.wait_for_selector("#invalidate-result.ok")
    assert page.inner_text("#invalidate-result") == f"Removed {entries_a} entr{'y' if entries_a == 1 else 'ies'}."
    after = {r["name"]: r for r in overview(url)["cache"]["tenants"]}
    assert after["tenant-a"]["entries"] == 0 and after["tenant-b"]["entries"] == rows["tenant-b"]["entries"]
    assert tenant_row.locator("td").nth(6).inner_text() == "0"
    assert ask(url, "How do I reverse a list in Python?", KEY_A) == "miss"

    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/admin/login$"))
    page.goto(url + "/admin")
    assert page.url.endswith("/admin/login")
    page.close()


def test_series_is_saved_at_shutdown_and_restored(gateway):
    before = httpx.get(gateway.url + "/admin/api/series", headers=bearer(ADMIN)).json()
    assert before["t"] and max(v or 0 for v in before["series"]["cache.exact"]) >= 1
    gateway.stop()
    path = gateway.settings.path("dashboard", "series.json")
    assert len(Series.load(path, 10_000)) >= len(before["t"])
    restored = create_app(gateway.settings).state.dashboard.sampler.series.to_dict()
    assert restored["t"][: len(before["t"])] == before["t"]
    assert sum(v or 0 for v in restored["series"]["cache.exact"]) == 3
