"""The repository's own settings files validate in every environment they define."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiva.settings import load_settings

CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("env", ["development", "testing", "production"])
def test_repo_settings_validate(env: str) -> None:
    loaded = load_settings({}, env=env, config_dir=CONFIG)
    assert loaded.settings.service.environment == env


def test_production_configures_every_check_type() -> None:
    checks = load_settings({}, env="production", config_dir=CONFIG).settings.health.checks
    assert {c.type for c in checks.values()} == {
        "postgres",
        "redis",
        "http",
        "disk",
        "memory",
        "cpu",
        "telemetry",
    }
    assert checks["redis"].critical and checks["postgres"].critical
    assert checks["redis"].probes == ("ready",)


def test_development_runs_on_loopback_without_otlp() -> None:
    settings = load_settings({}, env="development", config_dir=CONFIG).settings
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)
    assert settings.telemetry.otlp.endpoint is None
