"""Auth, request ids, and bad input: every refusal in OpenAI's error shape with the right status."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.service.conftest import run_gateway, upstream_settings
from tests.upstream_server import UpstreamServer

TENANT_KEY = "sk-tenant-a-123456"
ADMIN_KEY = "sk-admin-987654321"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[str]:
    up = UpstreamServer().start()
    mp = pytest.MonkeyPatch()
    mp.setenv("TIERGATE_ADMIN_KEY", ADMIN_KEY)
    settings = upstream_settings(
        tmp_path_factory.mktemp("gw"),
        {"name": "up", "kind": "openai", "base_url": up.base_url, "models": ["m"]},
        auth={"api_keys": {TENANT_KEY: "tenant-a"}},
        server={"max_body_bytes": 4096},
    )
    with run_gateway(settings) as url:
        yield url
    mp.undo()
    up.stop()


def post(url: str, body=None, key: str | None = TENANT_KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kw.pop("headers", {}))
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, **kw)


GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def assert_error(r: httpx.Response, status: int, type_: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == type_
    assert error["message"]
    assert set(error) >= {"message", "type", "code"}
    return error


def test_valid_key_is_served(gateway):
    assert post(gateway, GOOD).status_code == 200


def test_missing_key_is_401(gateway):
    assert_error(post(gateway, GOOD, key=None), 401, "authentication_error")


def test_wrong_key_is_401(gateway):
    assert_error(post(gateway, GOOD, key="sk-not-a-real-key"), 401, "authentication_error")


def test_malformed_authorization_is_401(gateway):
    r = httpx.post(gateway + "/v1/chat/completions", json=GOOD, headers={"Authorization": "Basic abc"})
    assert_error(r, 401, "authentication_error")


def test_admin_route_needs_admin_key(gateway):
    assert_error(httpx.get(gateway + "/admin/api/status"), 401, "authentication_error")
    r = httpx.get(gateway + "/admin/api/status", headers={"Authorization": f"Bearer {TENANT_KEY}"})
    assert_error(r, 403, "permission_error")
    r = httpx.get(gateway + "/admin/api/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200 and r.json()["backends"][0]["name"] == "up"


def test_health_routes_are_open(gateway):
    assert httpx.get(gateway + "/healthz").status_code == 200
    assert httpx.get(gateway + "/readyz").status_code == 200
    assert "tiergate_requests_total" in httpx.get(gateway + "/metrics").text


def test_keys_never_logged(gateway, caplog):
    # The gateway logs in this process: a refused key must not appear in any record.
    with caplog.at_level("DEBUG"):
        post(gateway, GOOD, key="sk-secret-never-logged")
        post(gateway, GOOD)
    assert "sk-secret-never-logged" not in caplog.text and TENANT_KEY not in caplog.text


def test_bad_json_is_400(gateway):
    r = httpx.post(gateway + "/v1/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {TENANT_KEY}", "Content-Type": "application/json"})
    assert "not valid JSON" in assert_error(r, 400, "invalid_request_error")["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({**GOOD, "temperature": 5}, "temperature"),
    ({**GOOD, "max_tokens": 0}, "max_tokens"),
    ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ([1, 2, 3], "body"),
])
def test_invalid_fields_are_400_naming_the_field(gateway, body, field):
    error = assert_error(post(gateway, body), 400, "invalid_request_error")
    assert field in error["message"]


def test_unknown_model_is_404(gateway):
    error = assert_error(post(gateway, {**GOOD, "model": "nope"}), 404, "invalid_request_error")
    assert error["code"] == "model_not_found" and "'nope'" in error["message"]


def test_unknown_route_is_404_in_openai_shape(gateway):
    assert_error(httpx.get(gateway + "/v1/nothing"), 404, "invalid_request_error")


def test_body_over_limit_is_413(gateway):
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 10_000}]}
    assert_error(post(gateway, big), 413, "invalid_request_error")


def test_chunked_body_over_limit_is_413(gateway):
    def chunks():
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 512
        yield b'"}]}'

    r = httpx.post(gateway + "/v1/chat/completions", content=chunks(),
                   headers={"Authorization": f"Bearer {TENANT_KEY}", "Content-Type": "application/json"})
    assert_error(r, 413, "invalid_request_error")


def test_request_id_is_echoed_or_made(gateway):
    r = post(gateway, GOOD, headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = post(gateway, GOOD, headers={"X-Request-Id": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32


def test_curl_style_form_content_type_is_read_as_json(gateway):
    r = httpx.post(gateway + "/v1/chat/completions", content=httpx.Request("POST", "/", json=GOOD).content,
                   headers={"Authorization": f"Bearer {TENANT_KEY}",
                            "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200


def test_open_mode_refuses_non_loopback_bind(tmp_path):
    from tiergate.errors import ConfigError
    from tiergate.service.app import create_app

    settings = upstream_settings(tmp_path, {"name": "up", "kind": "openai", "base_url": "http://x/v1",
                                            "models": ["m"]}, server={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="without API keys"):
        create_app(settings)
    settings.auth.api_keys = {TENANT_KEY: "t"}
    settings_with_keys = settings.model_copy(update={"auth": settings.auth})
    create_app(settings_with_keys)  # with keys any address is allowed


def test_loopback_check_recognises_addresses(tmp_path):
    from tiergate.config import load_settings

    for host, loop in [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
                       (socket.gethostname(), False)]:
        assert load_settings(data_dir=tmp_path, server={"host": host}).is_loopback_only() is loop


def test_admin_tier_stats_and_metrics(gateway):
    r = httpx.get(gateway + "/admin/api/tiers", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200
    stats = r.json()
    assert {"host", "disk"} <= set(stats["tiers"]) and stats["tiers"]["disk"]["enabled"]
    assert "tiergate_tier_" in httpx.get(gateway + "/metrics").text
