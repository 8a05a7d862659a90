"""Properties of config parsing: YAML file plus TIERGATE_* environment (nested with `__`).

Settings survive a round trip through YAML; the environment beats the file, which beats the
defaults; a bad value gives a ConfigError naming the field; and any file or environment value at
all gives Settings or a ConfigError, never another exception.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiergate.config import load_settings
from tiergate.errors import ConfigError

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TIERGATE_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "tiergate.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# ------------------------------------------------------------------ strategies

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
hosts = st.sampled_from(["127.0.0.1", "::1", "localhost", "0.0.0.0", "gateway.internal"])
server = st.fixed_dictionaries({}, optional={
    "host": hosts,
    "port": st.integers(0, 65535),
    "max_body_bytes": st.integers(1, 2**40),
    "log_format": st.sampled_from(["json", "text"]),
    "cors_origins": st.lists(st.sampled_from(["https://a.example", "http://localhost:3000"]), max_size=2),
    "drain_timeout_s": st.floats(0, 1e6),
})
engine = st.fixed_dictionaries({}, optional={
    "workers": st.integers(1, 64),
    "queue_size": st.integers(1, 10_000),
    "max_tokens_limit": st.integers(1, 1 << 20),
    "threads": st.none() | st.integers(1, 256),
})
upstream = st.builds(lambda name, port, models: {"name": name, "kind": "openai",
                                                 "base_url": f"http://10.0.0.5:{port}/v1", "models": models},
                     names.map(lambda n: "up-" + n), st.integers(1, 65535), st.lists(names, min_size=1, max_size=3))
backends = st.lists(upstream, max_size=3, unique_by=lambda b: b["name"]).flatmap(
    lambda ups: st.sampled_from([ups, [{"name": "local", "kind": "local"}, *ups]]))
api_keys = st.dictionaries(st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=8, max_size=20),
                           names, max_size=3)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    config: dict[str, Any] = {"server": draw(server), "engine": draw(engine), "auth": {"api_keys": draw(api_keys)}}
    chosen = draw(backends)
    if chosen:
        config["backends"] = chosen
    return config


def comparable(settings_obj) -> dict[str, Any]:
    return settings_obj.model_dump(mode="json", exclude={"config_file"})


# ------------------------------------------------------------------ round trips and precedence


@FAST
@given(configs())
def test_yaml_round_trip_is_a_fixed_point(tmp_path, config):
    """What a file says is what loads, and the loaded settings written out load the same again."""
    first = load_settings(write(tmp_path, {**config, "data_dir": str(tmp_path / "data")}))
    for section in ("server", "engine"):
        for key, value in config[section].items():
            assert getattr(getattr(first, section), key) == value
    assert [b.name for b in first.backends] == [b["name"] for b in config.get("backends", [{"name": "local"}])]
    second = load_settings(write(tmp_path, comparable(first)))
    assert comparable(second) == comparable(first)


@FAST
@given(configs(), st.integers(0, 65535), st.integers(1, 64), hosts)
def test_environment_beats_the_file_which_beats_the_defaults(tmp_path, config, port, workers, host):
    path = write(tmp_path, {**config, "data_dir": str(tmp_path / "data")})
    env = {"TIERGATE_SERVER__PORT": str(port), "TIERGATE_ENGINE__WORKERS": str(workers)}
    with mock.patch.dict(os.environ, env):
        s = load_settings(path)
    assert (s.server.port, s.engine.workers) == (port, workers)
    # Fields the environment does not name keep the file's value, or the default.
    assert s.server.host == config["server"].get("host", "127.0.0.1")
    assert s.engine.queue_size == config["engine"].get("queue_size", 16)
    with mock.patch.dict(os.environ, {"TIERGATE_SERVER": orjson.dumps({"host": host}).decode()}):
        assert load_settings(path).server.host == host


@FAST
@given(backends, st.lists(st.sampled_from(["https://a.example", "http://b.example"]), max_size=2))
def test_lists_in_the_environment_are_json(tmp_path, chosen, origins):
    env = {"TIERGATE_BACKENDS": orjson.dumps(chosen).decode(),
           "TIERGATE_SERVER__CORS_ORIGINS": orjson.dumps(origins).decode(),
           "TIERGATE_DATA_DIR": str(tmp_path)}
    with mock.patch.dict(os.environ, env):
        s = load_settings()
    assert [(b.name, b.kind, b.base_url) for b in s.backends] == [(c["name"], c["kind"], c.get("base_url"))
                                                                  for c in chosen]
    assert s.server.cors_origins == origins


# ------------------------------------------------------------------ bad values name the field

BAD_VALUES = st.sampled_from([
    ("server", "port", st.integers(65536, 2**70) | st.integers(max_value=-1) | st.text(st.characters(
        categories=["L"]), min_size=1, max_size=5)),
    ("server", "max_body_bytes", st.integers(max_value=0)),
    ("server", "log_format", st.text(max_size=8).filter(lambda t: t not in ("json", "text"))),
    ("server", "drain_timeout_s", st.floats(max_value=-1e-9, allow_nan=False)),
    ("engine", "workers", st.integers(max_value=0) | st.integers(65, 2**40)),
    ("engine", "queue_size", st.integers(max_value=0)),
    ("models", "device", st.text(max_size=8).filter(lambda t: t not in ("auto", "cpu", "cuda"))),
    ("tiers", "policy", st.text(max_size=8).filter(lambda t: t not in ("lru", "gdsf"))),
    ("server", "no_such_field", st.integers() | st.text(max_size=5)),
])


@FAST
@given(BAD_VALUES.flatmap(lambda bad: st.tuples(st.just(bad[0]), st.just(bad[1]), bad[2])))
def test_a_bad_value_in_the_file_names_the_field_and_the_file(tmp_path, bad):
    section, field, value = bad
    path = write(tmp_path, {section: {field: value}})
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert f"{section}.{field}" in str(err.value) and str(path) in str(err.value)


@FAST
@given(st.sampled_from([("SERVER__PORT", "server.port"), ("ENGINE__WORKERS", "engine.workers"),
                        ("ENGINE__QUEUE_SIZE", "engine.queue_size"), ("SERVER__LOG_FORMAT", "server.log_format")]),
       st.text(st.characters(categories=["L", "P"]), min_size=1, max_size=8).filter(
           lambda t: t not in ("json", "text")))
def test_a_bad_value_in_the_environment_names_the_field(tmp_path, where, value):
    env_suffix, field = where
    env = {"TIERGATE_" + env_suffix: value, "TIERGATE_DATA_DIR": str(tmp_path)}
    with mock.patch.dict(os.environ, env), pytest.raises(ConfigError) as err:
        load_settings()
    assert field in str(err.value)


# ------------------------------------------------------------------ junk never escapes as another error

int64 = st.integers(-(2**63), 2**63 - 1)
yaml_scalars = st.none() | st.booleans() | int64 | st.floats(allow_nan=False) | st.text(max_size=10)
yaml_values = st.recursive(yaml_scalars,
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                               st.text(max_size=10) | int64 | st.none(), kids, max_size=4),
                           max_leaves=15)
section_names = st.sampled_from(["server", "engine", "models", "backends", "auth", "tiers", "cache", "kv",
                                 "dashboard", "data_dir"])


@settings(FAST, max_examples=100)
@given(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    yaml_values.map(lambda v: yaml.safe_dump(v).encode()),
    st.dictionaries(section_names | st.text(max_size=6) | st.integers(), yaml_values, max_size=4).map(
        lambda v: yaml.safe_dump(v).encode()),
))
def test_any_file_gives_settings_or_a_config_error(tmp_path, content):
    path = tmp_path / "junk.yaml"
    path.write_bytes(content)
    with contextlib.suppress(ConfigError):  # anything else fails the test
        load_settings(path, data_dir=tmp_path)


@settings(FAST, max_examples=100)
@given(st.dictionaries(st.sampled_from(["SERVER", "SERVER__PORT", "SERVER__CORS_ORIGINS", "BACKENDS", "ENGINE",
                                        "ENGINE__WORKERS", "AUTH__API_KEYS", "TIERS__HOST__BUDGET_BYTES",
                                        "CACHE__CATEGORIES", "MODELS__DEVICE", "NO_SUCH_FIELD"]),
                       st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
                       | yaml_values.map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()),
                       min_size=1, max_size=3))
def test_any_environment_gives_settings_or_a_config_error(tmp_path, env):
    environment = {"TIERGATE_" + k: v for k, v in env.items()}
    with mock.patch.dict(os.environ, environment), contextlib.suppress(ConfigError):  # anything else fails
        load_settings(data_dir=tmp_path)
