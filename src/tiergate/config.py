"""One `Settings` model: an optional YAML file plus `TIERGATE_*` environment overrides.

Precedence, highest first: keyword arguments, environment (`TIERGATE_SERVER__PORT=9000`,
nested with `__`; lists and dicts as JSON), the YAML file (`--config FILE` or
`TIERGATE_CONFIG`), then the defaults below. With no configuration at all the gateway serves
the packaged local model on 127.0.0.1:8080 with its data under `./var`.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError, YamlConfigSettingsSource

from tiergate.cache.config import CacheConfig
from tiergate.errors import ConfigError
from tiergate.kvstore.config import KVConfig
from tiergate.service.dashboard.config import DashboardConfig
from tiergate.tiers import StoreConfig

PACKAGED_GENERATOR = "smollm2-135m-instruct"
PACKAGED_EMBEDDER = "all-minilm-l6-v2"


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class ServerConfig(_Section):
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8080, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Larger request bodies get 413.")
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON logs or plain text.")
    log_level: str = "info"
    cors_origins: list[str] = Field(default_factory=list, description="CORS is off unless origins are listed.")
    drain_delay_s: float = Field(
        0.0, ge=0, description="On SIGTERM, report not-ready this long before closing the listener."
    )
    drain_timeout_s: float = Field(30.0, ge=0, description="Then wait this long for in-flight requests.")
    index_source_dirs: list[Path] = Field(
        default_factory=list, description="Folders whose files index builds may read by server-side path."
    )


class ModelsConfig(_Section):
    generator: str | None = Field(
        None, description="Local Hugging Face model folder; unset = the packaged SmolLM2-135M-Instruct."
    )
    embedder: str | None = Field(
        None, description="Local sentence-transformers folder; unset = the packaged all-MiniLM-L6-v2."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on CUDA, float32 on CPU."
    )
    embedder_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="What runs the embedder's forward pass: auto = ONNX Runtime on CPU (same "
        "vectors, ~2.5x faster per short query), torch on CUDA.",
    )


class EngineConfig(_Section):
    workers: int = Field(1, ge=1, le=64, description="Worker threads running generations.")
    queue_size: int = Field(16, ge=1, description="Waiting requests beyond the workers; more get 429.")
    max_tokens_limit: int = Field(1024, ge=1, description="Upper bound on a request's max_tokens.")
    default_max_tokens: int = Field(256, ge=1)
    max_prompt_tokens: int = Field(8192, ge=1, description="Longer prompts are rejected with 400.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; unset = torch default.")


class BackendConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    kind: Literal["local", "openai"]
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1.")
    api_key_env: str | None = Field(None, description="Environment variable holding the upstream's key.")
    models: list[str] = Field(default_factory=list, description="Model names this backend serves.")
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10, description="Retries on connect errors and 5xx before the first byte.")
    retry_backoff_s: float = Field(0.1, ge=0)
    max_connections: int = Field(512, ge=1)
    cache: bool = Field(True, description="Serve this backend's models through the semantic response cache.")

    @model_validator(mode="after")
    def _check_kind(self) -> BackendConfig:
        if self.kind == "openai":
            if not self.base_url:
                raise ValueError(f"backend {self.name!r}: kind 'openai' needs base_url")
            if not self.models:
                raise ValueError(f"backend {self.name!r}: kind 'openai' needs a models list")
        return self


class RateLimit(_Section):
    requests_per_minute: int | None = Field(None, ge=1, description="Per API key; unset = unlimited.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Prompt + completion tokens per API key.")


class AuthConfig(_Section):
    api_keys: dict[str, str] = Field(default_factory=dict, description="API key -> tenant name.")
    admin_key_env: str = Field("TIERGATE_ADMIN_KEY", description="Environment variable holding the admin key.")
    rate_limit: RateLimit = Field(default_factory=RateLimit, description="Default limits for every key.")
    tenant_rate_limits: dict[str, RateLimit] = Field(
        default_factory=dict, description="Limits for the keys of one tenant, replacing the default."
    )

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        for key, tenant in keys.items():
            if len(key) < 8:
                raise ValueError("auth.api_keys: every key must have at least 8 characters")
            if not tenant:
                raise ValueError("auth.api_keys: every key needs a tenant name")
        return keys

    def admin_key(self) -> str | None:
        return os.environ.get(self.admin_key_env) or None


def _default_backends() -> list[BackendConfig]:
    return [BackendConfig(name="local", kind="local")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TIERGATE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    config_file: Path | None = Field(None, description="The YAML file these settings were read from.")
    data_dir: Path = Field(Path("var"), description="Everything persistent lives here.")
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    backends: list[BackendConfig] = Field(default_factory=_default_backends)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tiers: StoreConfig = Field(default_factory=StoreConfig, description="The tiered store under every cache.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The semantic response cache.")
    kv: KVConfig = Field(default_factory=KVConfig, description="Chunk-level KV reuse in the local engine.")
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig, description="The admin dashboard.")

    @model_validator(mode="after")
    def _place_under_data_dir(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.tiers.disk.path is None:
            self.tiers.disk.path = self.data_dir / "tiers"
        return self

    @model_validator(mode="after")
    def _check_backends(self) -> Settings:
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backends: names must be unique, got {names}")
        if sum(b.kind == "local" for b in self.backends) > 1:
            raise ValueError("backends: at most one 'local' backend (one in-process engine)")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):  # noqa: E501
        path = init_settings.init_kwargs.get("config_file") or os.environ.get("TIERGATE_CONFIG")
        sources: list[Any] = [init_settings, env_settings]
        if path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path, yaml_file_encoding="utf-8"))
        return tuple(sources)

    # Derived locations, all under data_dir.
    def path(self, *parts: str) -> Path:
        return self.data_dir.joinpath(*parts)

    def local_backend(self) -> BackendConfig | None:
        return next((b for b in self.backends if b.kind == "local"), None)

    def is_loopback_only(self) -> bool:
        host = self.server.host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the one Settings object, turning every problem into a ConfigError that names it."""
    path = config_file or os.environ.get("TIERGATE_CONFIG")
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
        except (yaml.YAMLError, RecursionError) as exc:  # nesting too deep to parse is not valid YAML here
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        if loaded is not None and (bad := [k for k in loaded if not isinstance(k, str)]):
            raise ConfigError(f"config file {path}: top-level keys must be names, got {bad[0]!r}")
        overrides["config_file"] = path
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    except SettingsError as exc:  # a TIERGATE_* value that is not the JSON a list or mapping needs
        raise ConfigError(f"invalid configuration: {exc} (lists and mappings in the environment are JSON)") from exc
    return settings


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        problems.append(f"{loc}: {err['msg']}")
    return f"invalid configuration{where}: " + "; ".join(problems)
