"""Settings: defaults, YAML file, environment overrides, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiergate.config import load_settings
from tiergate.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("TIERGATE_"):
            monkeypatch.delenv(name)


def test_defaults_serve_local_model_on_loopback(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8080)
    assert s.data_dir == tmp_path / "var"
    assert [(b.name, b.kind, b.models) for b in s.backends] == [("local", "local", [])]
    assert s.auth.api_keys == {} and s.is_loopback_only()


def test_yaml_file_with_an_upstream_in_three_lines(tmp_path):
    cfg = tmp_path / "tiergate.yaml"
    cfg.write_text(
        "backends:\n"
        "  - {name: local, kind: local}\n"
        "  - name: vllm\n"
        "    kind: openai\n"
        "    base_url: http://10.0.0.5:8000/v1\n"
        "    models: [llama-3-8b]\n"
        "auth:\n"
        "  api_keys: {sk-team-a-0001: team-a}\n"
    )
    s = load_settings(cfg)
    assert s.config_file == cfg
    assert s.backends[1].base_url == "http://10.0.0.5:8000/v1" and s.backends[1].models == ["llama-3-8b"]
    assert s.auth.api_keys == {"sk-team-a-0001": "team-a"}


def test_env_overrides_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server: {port: 9000, host: 127.0.0.1}\ndata_dir: /tmp/from-yaml\n")
    monkeypatch.setenv("TIERGATE_CONFIG", str(cfg))
    monkeypatch.setenv("TIERGATE_SERVER__PORT", "9100")
    s = load_settings()
    assert s.server.port == 9100  # env beats the file
    assert s.data_dir == Path("/tmp/from-yaml")  # the file beats the default
    monkeypatch.setenv("TIERGATE_DATA_DIR", str(tmp_path / "d"))
    assert load_settings().data_dir == tmp_path / "d"


def test_admin_key_from_named_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_ADMIN", "sk-admin-xyz-000")
    s = load_settings(data_dir=tmp_path, auth={"admin_key_env": "MY_ADMIN"})
    assert s.auth.admin_key() == "sk-admin-xyz-000"
    assert load_settings(data_dir=tmp_path).auth.admin_key() is None


@pytest.mark.parametrize(("yaml_text", "needle"), [
    ("server: {port: 99999}", "server.port"),
    ("backends: [{name: up, kind: openai, models: [m]}]", "needs base_url"),
    ("backends: [{name: up, kind: openai, base_url: 'http://x'}]", "needs a models list"),
    ("backends: [{name: a, kind: local}, {name: a, kind: openai, base_url: 'http://x', models: [m]}]", "unique"),
    ("backends: [{name: a, kind: local}, {name: b, kind: local}]", "at most one 'local'"),
    ("backends: [{name: '../x', kind: local}]", "backends.0.name"),
    ("auth: {api_keys: {short: t}}", "at least 8 characters"),
    ("no_such_section: 1", "no_such_section"),
    ("server: {port: 80, colour: blue}", "server.colour"),
])
def test_invalid_config_names_the_problem(tmp_path, yaml_text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert needle in str(err.value) and str(cfg) in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(bad)


def test_cli_reports_config_errors(tmp_path):
    from typer.testing import CliRunner

    from tiergate.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: -1}")
    result = CliRunner().invoke(app, ["serve", "--config", str(bad)])
    assert result.exit_code == 2
    assert "server.port" in result.output


def test_cli_refuses_public_bind_without_keys(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tiergate.cli import app

    monkeypatch.setenv("TIERGATE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without API keys" in result.output
