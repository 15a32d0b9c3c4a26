"""The six settings layers, their order, environment sections and merging, through the API."""

from __future__ import annotations

from pathlib import Path

import pytest

import aiva
from aiva.settings import load_settings
from tests.conftest import WriteConfig


def load(folder: Path, environ: dict[str, str] | None = None, env: str | None = None):  # type: ignore[no-untyped-def]
    return load_settings(environ or {}, env=env, config_dir=folder)


def test_defaults_hold_every_contract_key(tmp_path: Path) -> None:
    s = load(tmp_path).settings
    assert (s.server.host, s.server.port, s.server.workers) == ("127.0.0.1", 8000, 1)
    assert s.server.graceful_timeout_s == 10
    assert (s.service.name, s.service.version, s.service.environment) == (
        "aiva",
        aiva.__version__,
        "development",
    )
    assert s.telemetry.enabled is True
    assert s.telemetry.otlp.endpoint is None
    assert s.telemetry.otlp.protocol == "grpc"
    assert dict(s.telemetry.otlp.headers) == {}
    assert s.telemetry.otlp.timeout_s == 10
    assert (s.telemetry.traces.enabled, s.telemetry.traces.sampler_ratio) == (True, 1.0)
    assert "/metrics" in s.telemetry.traces.excluded_paths
    assert s.telemetry.metrics.export_interval_s == 15
    assert (s.telemetry.metrics.prometheus.enabled, s.telemetry.metrics.prometheus.path) == (
        True,
        "/metrics",
    )
    assert (s.telemetry.logs.level, s.telemetry.logs.format) == ("INFO", "json")
    assert s.telemetry.logs.otlp is False  # OTLP is off, so are OTLP logs
    assert s.telemetry.logs.file.path is None
    assert (s.telemetry.logs.file.max_bytes, s.telemetry.logs.file.backup_count) == (
        104857600,
        5,
    )
    assert (s.health.interval_s, s.health.timeout_s, s.health.cache_ttl_s) == (10, 2, 10)
    assert set(s.health.checks) == {"disk", "memory", "cpu"}
    assert all(not c.critical and c.probes == ("ready",) for c in s.health.checks.values())
    assert s.database.host is None
    assert (s.database.port, s.database.database, s.database.username) == (5432, "aiva", "aiva")
    assert (s.database.pool_size, s.database.ssl_mode) == (10, "prefer")
    assert s.redis.url is None
    assert s.security.api_key is None
    assert s.security.api_key_header == "X-API-Key"
    assert s.security.allowed_origins == ()
    assert s.security.max_request_body_bytes == 1048576


def test_settings_file_overrides_defaults(write_config: WriteConfig) -> None:
    folder = write_config({"settings.yaml": "default:\n  server:\n    port: 9001\n"})
    loaded = load(folder)
    assert loaded.settings.server.port == 9001
    assert loaded.sources["server.port"] == str(folder.resolve() / "settings.yaml")
    assert loaded.sources["server.host"] == "package defaults"


@pytest.mark.parametrize(
    ("env", "expected"),
    [(None, 8100), ("development", 8100), ("production", 8300), ("staging", 8000)],
)
def test_environment_section_picked_by_aiva_env(
    write_config: WriteConfig, env: str | None, expected: int
) -> None:
    folder = write_config(
        {
            "settings.yaml": (
                "default:\n  server:\n    port: 8000\n"
                "development:\n  server:\n    port: 8100\n"
                "testing:\n  server:\n    port: 8200\n"
                "production:\n  server:\n    port: 8300\n"
                "staging:\n  service:\n    name: staged\n"  # a section of its own, no port
            )
        }
    )
    environ = {"AIVA_ENV": env} if env else {}
    settings = load(folder, environ).settings
    assert settings.server.port == expected
    assert settings.service.environment == (env or "development")


def test_local_file_overrides_settings_file(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            "settings.yaml": "production:\n  server:\n    port: 9001\n",
            "settings.local.yaml": "default:\n  server:\n    port: 9002\n",
        }
    )
    loaded = load(folder, env="production")
    assert loaded.settings.server.port == 9002
    assert loaded.sources["server.port"].endswith("settings.local.yaml")


def test_secrets_file_overrides_local_file(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            "settings.local.yaml": "default:\n  database:\n    password: from-local\n",
            ".secrets.yaml": "default:\n  database:\n    password: from-secrets\n",
        }
    )
    loaded = load(folder)
    assert loaded.settings.database.password == "from-secrets"
    assert loaded.sources["database.password"].endswith(".secrets.yaml")


def test_otel_variables_override_files(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            ".secrets.yaml": (
                "default:\n  service:\n    name: from-secrets\n"
                "  telemetry:\n    otlp:\n      endpoint: http://file:4317\n"
            )
        }
    )
    environ = {
        "OTEL_SERVICE_NAME": "from-otel",
        "OTEL_RESOURCE_ATTRIBUTES": "team=core,region=eu%2Dwest",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-tenant=t1",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
        "OTEL_SDK_DISABLED": "TRUE",
    }
    loaded = load(folder, environ)
    s = loaded.settings
    assert s.service.name == "from-otel"
    assert dict(s.telemetry.resource_attributes) == {"team": "core", "region": "eu-west"}
    assert s.telemetry.otlp.endpoint == "http://collector:4318"
    assert s.telemetry.otlp.protocol == "http/protobuf"
    assert dict(s.telemetry.otlp.headers) == {"authorization": "Bearer abc", "x-tenant": "t1"}
    assert s.telemetry.traces.sampler_ratio == 0.5
    assert s.telemetry.enabled is False
    assert s.telemetry.logs.otlp is True  # derived: OTLP is on
    assert loaded.sources["service.name"] == "environment variable OTEL_SERVICE_NAME"


def test_otel_sdk_disabled_only_by_true() -> None:
    for value, enabled in (("true", False), ("false", True), ("1", True)):
        settings = load_settings({"OTEL_SDK_DISABLED": value}, config_dir="/nonexistent").settings
        assert settings.telemetry.enabled is enabled, value


def test_aiva_variables_override_otel_variables(tmp_path: Path) -> None:
    environ = {
        "OTEL_SERVICE_NAME": "from-otel",
        "AIVA_SERVICE__NAME": "from-aiva",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
        "AIVA_TELEMETRY__TRACES__SAMPLER_RATIO": "0.25",
        "AIVA_SERVER__PORT": "9100",
        "AIVA_SECURITY__ALLOWED_ORIGINS": '["https://a.example"]',
        "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    }
    loaded = load(tmp_path, environ)
    s = loaded.settings
    assert s.service.name == "from-aiva"
    assert s.telemetry.traces.sampler_ratio == 0.25
    assert s.server.port == 9100
    assert s.security.allowed_origins == ("https://a.example",)
    assert s.health.checks["cpu"].enabled is False
    assert loaded.sources["server.port"] == "environment variable AIVA_SERVER__PORT"


def test_nested_tables_merge_key_by_key(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            "settings.yaml": (
                "default:\n  telemetry:\n    otlp:\n      endpoint: http://c:4317\n"
                "      headers:\n        a: '1'\n"
                "production:\n  telemetry:\n    otlp:\n      timeout_s: 3\n"
            ),
            "settings.local.yaml": "default:\n  telemetry:\n    otlp:\n      headers:\n        b: '2'\n",
        }
    )
    environ = {"AIVA_TELEMETRY__OTLP__PROTOCOL": "http/protobuf"}
    otlp = load(folder, environ, env="production").settings.telemetry.otlp
    assert otlp.endpoint == "http://c:4317"
    assert otlp.timeout_s == 3
    assert otlp.protocol == "http/protobuf"
    assert dict(otlp.headers) == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("settings.toml", "[default.server]\nport = 9200\n[production.server]\nport = 9300\n"),
        (
            "settings.json",
            '{"default": {"server": {"port": 9200}}, "production": {"server": {"port": 9300}}}',
        ),
        (
            "settings.yml",
            "default:\n  server:\n    port: 9200\nproduction:\n  server:\n    port: 9300\n",
        ),
    ],
)
def test_every_file_format(write_config: WriteConfig, name: str, text: str) -> None:
    folder = write_config({name: text})
    assert load(folder).settings.server.port == 9200
    assert load(folder, env="production").settings.server.port == 9300


def test_app_section_is_free_form(write_config: WriteConfig) -> None:
    folder = write_config({"settings.yaml": "default:\n  app:\n    feature_x: true\n"})
    assert dict(load(folder).settings.app) == {"feature_x": True}


def test_derived_defaults_follow_their_keys(tmp_path: Path) -> None:
    environ = {"AIVA_HEALTH__INTERVAL_S": "4", "AIVA_ENV": "testing"}
    s = load(tmp_path, environ).settings
    assert s.health.cache_ttl_s == 4
    assert s.service.environment == "testing"
    assert all(c.timeout_s == 2 for c in s.health.checks.values())


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load(tmp_path).settings
    with pytest.raises(AttributeError):
        s.server.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.telemetry.otlp.headers["x"] = "y"  # type: ignore[index]


def test_aiva_variables_keep_text_where_a_string_is_declared(tmp_path: Path) -> None:
    environ = {
        "AIVA_DATABASE__PASSWORD": "123456",
        "AIVA_SERVICE__VERSION": "1.0",
        "AIVA_SERVICE__NAME": "true",
        "AIVA_TELEMETRY__OTLP__HEADERS__X_TENANT": "42",
        "AIVA_HEALTH__CHECKS__DISK__PATH": "2024",
        "AIVA_DATABASE__HOST": "@none",  # dynaconf's null marker still unsets an optional string
        # Other keys stay typed as TOML literals.
        "AIVA_SERVER__PORT": "9100",
        "AIVA_TELEMETRY__TRACES__SAMPLER_RATIO": "0.5",
        "AIVA_TELEMETRY__ENABLED": "false",
        "AIVA_APP__LIMIT": "7",
    }
    s = load(tmp_path, environ).settings
    assert s.database.password == "123456"
    assert s.service.version == "1.0"
    assert s.service.name == "true"
    assert dict(s.telemetry.otlp.headers) == {"x_tenant": "42"}
    assert s.health.checks["disk"].options["path"] == "2024"
    assert s.database.host is None
    assert s.server.port == 9100
    assert s.telemetry.traces.sampler_ratio == 0.5
    assert s.telemetry.enabled is False
    assert s.app["limit"] == 7
