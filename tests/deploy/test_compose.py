"""docker-compose.yml validates offline (Debian's docker-compose 1.29) and is internally consistent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aiva.settings import load_settings
from infra.require import require_binary

from ._repo import COMPOSE, REPO, load_yaml

USER_FACING = {"aiva": 8000, "grafana": 3000, "jaeger": 16686, "prometheus": 9090}
STACK = {"aiva", "otel-collector", "jaeger", "prometheus", "grafana", "loki", "postgres", "redis"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(load_yaml(COMPOSE)["services"])


def test_compose_config_validates() -> None:
    binary = require_binary(
        "docker-compose", "apt-get install -y --no-install-recommends docker-compose"
    )
    done = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_stack_has_every_service(services: dict[str, Any]) -> None:
    assert set(services) == STACK


def test_every_mounted_file_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert re.match(r"v?\d+\.\d+", tag), f"{name}: image {image} is not pinned to a version"


def test_depends_on_conditions_are_satisfiable(services: dict[str, Any]) -> None:
    # config -q does not catch a depends_on naming an undefined service.
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on undefined {dependency}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )
    aiva = services["aiva"]["depends_on"]
    assert aiva["postgres"]["condition"] == aiva["redis"]["condition"] == "service_healthy"
    assert "otel-collector" in aiva


def test_dependents_wait_for_health_wherever_there_is_a_healthcheck(
    services: dict[str, Any],
) -> None:
    # Only the distroless images (the collector's, Loki's since 3.6) have nothing to
    # probe with (see their comments).
    no_probe = {"otel-collector", "loki"}
    assert {name for name, s in services.items() if "healthcheck" not in s} == no_probe
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if "healthcheck" in services[dependency]:
                assert spec["condition"] == "service_healthy", (
                    f"{name} only waits for {dependency} to start, though it has a healthcheck"
                )


def test_only_user_facing_ports_are_published_on_loopback(services: dict[str, Any]) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            host, host_port, container_port = port.split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            assert host_port == container_port
            published[name] = int(container_port)
    assert published == USER_FACING


def test_aiva_binds_all_interfaces_and_exports_to_the_collector(services: dict[str, Any]) -> None:
    env = services["aiva"]["environment"]
    assert env["AIVA_SERVER__HOST"] == "0.0.0.0"
    assert env["AIVA_TELEMETRY__OTLP__ENDPOINT"] == "http://otel-collector:4317"
    assert "aiva health --probe live" in " ".join(services["aiva"]["healthcheck"]["test"])


def compose_seconds(duration: str) -> float:
    """A Compose duration ('40s', '1m30s', '1500ms') in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def interpolated(environment: dict[str, Any]) -> dict[str, str]:
    """The service's environment as Compose passes it, `${VAR:-default}` taking its default."""
    return {
        key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for key, value in environment.items()
    }


def container_config_dir(service: dict[str, Any], env: dict[str, str], folder: Path) -> Path:
    """The files the container sees in $AIVA_CONFIG_DIR: the compose mounts into it."""
    inside = env["AIVA_CONFIG_DIR"].rstrip("/") + "/"
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(".") and target.startswith(inside):
            shutil.copy(REPO / source, folder / target[len(inside) :])
    return folder


def test_stop_grace_period_covers_the_drain_and_the_flush(
    services: dict[str, Any], tmp_path: Path
) -> None:
    # docker stop sends SIGTERM, then SIGKILL after stop_grace_period: aiva must be
    # able to drain (server.graceful_timeout_s) and then flush its last OTLP export
    # (up to telemetry.otlp.timeout_s) within it, with some margin to spare.
    aiva = services["aiva"]
    env = interpolated(aiva["environment"])
    settings = load_settings(
        env, env=env["AIVA_ENV"], config_dir=container_config_dir(aiva, env, tmp_path)
    ).settings
    assert env["AIVA_ENV"] == "production"
    needed = settings.server.graceful_timeout_s + settings.telemetry.otlp.timeout_s
    assert compose_seconds(aiva["stop_grace_period"]) > needed
