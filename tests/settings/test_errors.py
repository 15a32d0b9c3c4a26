"""Every settings error path: one problem a line, with key, masked value, rule and layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiva.errors import SettingsError
from aiva.settings import load_settings
from tests.conftest import WriteConfig


def problems(folder: Path | str | None, environ: dict[str, str] | None = None) -> list[str]:
    """The problem lines of loading from `folder` (None: the folder the environment names)."""
    with pytest.raises(SettingsError) as caught:
        load_settings(environ or {}, config_dir=folder)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AIVA_SERVER__PORT", "70000", "server.port: must be between 1 and 65535, got 70000"),
        ("AIVA_SERVER__PORT", "0", "server.port: must be between 1 and 65535, got 0"),
        ("AIVA_SERVER__PORT", "abc", "server.port: must be a whole number, got 'abc'"),
        ("AIVA_SERVER__WORKERS", "0", "server.workers: must be at least 1, got 0"),
        (
            "AIVA_TELEMETRY__TRACES__SAMPLER_RATIO",
            "1.5",
            "telemetry.traces.sampler_ratio: must be between 0 and 1, got 1.5",
        ),
        ("AIVA_HEALTH__INTERVAL_S", "0", "health.interval_s: must be greater than 0, got 0"),
        (
            "AIVA_TELEMETRY__OTLP__PROTOCOL",
            "udp",
            "telemetry.otlp.protocol: must be one of grpc, http/protobuf, got 'udp'",
        ),
        (
            "AIVA_TELEMETRY__LOGS__LEVEL",
            "LOUD",
            "telemetry.logs.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ),
        ("AIVA_TELEMETRY__ENABLED", "yes", "telemetry.enabled: must be true or false, got 'yes'"),
        (
            "AIVA_TELEMETRY__OTLP__ENDPOINT",
            "ftp://collector:4317",
            "telemetry.otlp.endpoint: must be a URL (http, https), or host:port for gRPC",
        ),
        ("AIVA_REDIS__URL", "http://x", "redis.url: must be a URL (redis, rediss, unix)"),
        (
            "AIVA_TELEMETRY__METRICS__PROMETHEUS__PATH",
            "metrics",
            "telemetry.metrics.prometheus.path: must be a path starting with /",
        ),
        ("AIVA_DATABASE__SSL_MODE", "maybe", "database.ssl_mode: must be one of disable"),
    ],
)
def test_rule_violations_name_key_value_rule_and_layer(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    [line] = problems(tmp_path, {variable: value})
    assert line.startswith(expected), line
    assert line.endswith(f"(from environment variable {variable})")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    lines = problems(tmp_path, {"AIVA_SERVER__PORT": "0", "AIVA_HEALTH__TIMEOUT_S": "-1"})
    assert [line.split(":")[0] for line in lines] == ["server.port", "health.timeout_s"]


def test_unknown_keys_are_reported(write_config: WriteConfig) -> None:
    folder = write_config(
        {"settings.yaml": "default:\n  telemetry:\n    otlp:\n      endpiont: http://c:4317\n"}
    )
    [line] = problems(folder, {"AIVA_SERVER_PORT": "1"})[:1]
    assert line == (
        "telemetry.otlp.endpiont: is not a known setting (a typo?) "
        f"(from {folder.resolve() / 'settings.yaml'})"
    )
    lines = problems(folder, {"AIVA_SERVER_PORT": "1"})
    assert "server_port: is not a known setting (a typo?) " in lines[1]
    assert lines[1].endswith("(from environment variable AIVA_SERVER_PORT)")


def test_yaml_syntax_error_names_file_and_line(write_config: WriteConfig) -> None:
    folder = write_config({"settings.yaml": "default:\n  server:\n    port: 1\n   host: x\n"})
    [line] = problems(folder)
    assert line.startswith("settings.yaml: cannot be parsed")
    assert "line 4" in line
    assert line.endswith(f"(from {folder.resolve() / 'settings.yaml'})")


def test_toml_syntax_error_names_file_and_line(write_config: WriteConfig) -> None:
    folder = write_config({"settings.local.toml": "[default.server]\nport = \n"})
    [line] = problems(folder)
    assert line.startswith("settings.local.toml: cannot be parsed")
    assert "line 2" in line


def test_two_formats_of_one_file_is_an_error(write_config: WriteConfig) -> None:
    folder = write_config({"settings.yaml": "default: {}\n", "settings.toml": "[default]\n"})
    [line] = problems(folder)
    assert line.startswith(
        "settings: one format per settings file, found settings.toml, settings.yaml"
    )


def test_settings_outside_an_environment_section_are_refused(write_config: WriteConfig) -> None:
    folder = write_config({"settings.yaml": "server:\n  port: 9000\n"})
    [line] = problems(folder)
    assert line.startswith("server: must sit inside an environment section")


def test_secret_values_are_masked_in_errors(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            ".secrets.yaml": "default:\n  database:\n    password: 123456\n  security:\n    api_key: 42\n"
        }
    )
    lines = problems(folder, {"AIVA_REDIS__URL": "http://user:hunter2@host"})
    text = "\n".join(lines)
    assert "database.password: must be a string or null, got '****'" in text
    assert "security.api_key: must be a string or null, got '****'" in text
    assert "redis.url: must be a URL (redis, rediss, unix), got 'http://user:****@host'" in text
    assert "123456" not in text and "hunter2" not in text


def test_malformed_otel_headers_are_refused_without_showing_them(tmp_path: Path) -> None:
    environ = {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer ok,Bearer supersecret"}
    [line] = problems(tmp_path, environ)
    assert line == (
        "telemetry.otlp.headers: malformed entry at position 2 (not shown: secret), "
        "want k=v,... (from environment variable OTEL_EXPORTER_OTLP_HEADERS)"
    )
    assert "supersecret" not in line


def test_malformed_resource_attribute_is_shown(tmp_path: Path) -> None:
    [line] = problems(tmp_path, {"OTEL_RESOURCE_ATTRIBUTES": "team=core,oops"})
    assert line.startswith("telemetry.resource_attributes: malformed entry 'oops', want k=v")


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("AIVA_REDIS__URL", "redis//u:pw@h/0", "'redis//u:****@h/0'"),
        ("AIVA_HEALTH__CHECKS__DB__DSN", "postgres//u:pw@h/db", "'postgres//u:****@h/db'"),
    ],
)
def test_malformed_dsn_password_is_masked(
    tmp_path: Path, variable: str, value: str, shown: str
) -> None:
    environ = {variable: value, "AIVA_HEALTH__CHECKS__DB__TYPE": "postgres"}
    [line] = problems(tmp_path, environ)
    assert "must be a URL" in line and f"got {shown}" in line, line
    assert "pw" not in line


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AIVA_TELEMETRY__OTLP__HEADERS", "{a=1}", "telemetry.otlp.headers: must be a table"),
        ("AIVA_SERVER__PORT__X", "1", "server.port: must be a whole number, got {'x': 1}"),
    ],
)
def test_error_names_the_layer_that_set_a_table_or_its_keys(
    write_config: WriteConfig, variable: str, value: str, expected: str
) -> None:
    # The defaults set these keys; a file sets a sibling key; the variable supplies the bad value.
    folder = write_config(
        {"settings.yaml": "default:\n  telemetry:\n    otlp:\n      headers: {a: '1', b: '2'}\n"}
    )
    [line] = problems(folder, {variable: value})
    assert line.startswith(expected), line
    assert line.endswith(f"(from environment variable {variable})")


def test_error_names_the_file_that_set_a_key_under_a_value(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            "settings.yaml": "default:\n  server:\n    port: 9000\n",
            "settings.local.yaml": "default:\n  server:\n    port:\n      x: 1\n",
        }
    )
    [line] = problems(folder)
    assert line.endswith(f"(from {folder.resolve() / 'settings.local.yaml'})")


@pytest.mark.parametrize("kind", ["missing folder", "directory"])
def test_log_file_must_be_in_an_existing_folder(tmp_path: Path, kind: str) -> None:
    path = "/nonexistent/dir/x.log" if kind == "missing folder" else str(tmp_path)
    [line] = problems(tmp_path, {"AIVA_TELEMETRY__LOGS__FILE__PATH": path})
    assert line == (
        "telemetry.logs.file.path: must be a file path in an existing folder, "
        f"got {path!r} (from environment variable AIVA_TELEMETRY__LOGS__FILE__PATH)"
    )


def test_log_file_in_an_existing_folder_is_accepted(tmp_path: Path) -> None:
    path = str(tmp_path / "aiva.log")
    environ = {"AIVA_TELEMETRY__LOGS__FILE__PATH": path}
    assert load_settings(environ, config_dir=tmp_path).settings.telemetry.logs.file.path == path


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_explicit_config_dir_must_be_a_folder(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "settings.yaml"
    if kind == "file":
        folder.write_text("default: {}\n")
    [line] = problems(None, {"AIVA_CONFIG_DIR": str(folder)})
    assert line == (
        f"AIVA_CONFIG_DIR: must be an existing folder, got {str(folder)!r} "
        "(from environment variable AIVA_CONFIG_DIR)"
    )


def test_config_dir_argument_naming_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text("default: {}\n")
    [line] = problems(tmp_path / "settings.yaml")
    assert line.startswith("AIVA_CONFIG_DIR: must be an existing folder, got ")
    assert line.endswith("(from argument config_dir)")


def test_missing_default_config_folder_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config here: the embedded defaults apply
    assert load_settings({}).settings.server.port == 8000


def test_warn_threshold_must_not_exceed_fail_threshold(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            "settings.yaml": "default:\n  health:\n    checks:\n      disk:\n        warn_percent: 96\n"
        }
    )
    [line] = problems(folder)
    assert line == (
        "health.checks.disk.warn_percent: must not exceed fail_percent (95), got 96 "
        f"(from {folder.resolve() / 'settings.yaml'})"
    )
    # When a later layer set fail_percent, that is the one reported; a check of another
    # threshold type (cpu) with both set in one layer reports warn_percent.
    environ = {
        "AIVA_HEALTH__CHECKS__MEMORY__FAIL_PERCENT": "80",
        "AIVA_HEALTH__CHECKS__HOT__TYPE": "cpu",
        "AIVA_HEALTH__CHECKS__HOT__WARN_PERCENT": "50",
        "AIVA_HEALTH__CHECKS__HOT__FAIL_PERCENT": "40",
    }
    assert problems(write_config({}), environ) == [
        "health.checks.memory.fail_percent: must be at least warn_percent (90), got 80 "
        "(from environment variable AIVA_HEALTH__CHECKS__MEMORY__FAIL_PERCENT)",
        "health.checks.hot.warn_percent: must not exceed fail_percent (40), got 50 "
        "(from environment variable AIVA_HEALTH__CHECKS__HOT__WARN_PERCENT)",
    ]


def test_equal_thresholds_are_accepted(tmp_path: Path) -> None:
    environ = {"AIVA_HEALTH__CHECKS__CPU__WARN_PERCENT": "98"}
    assert load_settings(environ, config_dir=tmp_path).settings.health.checks["cpu"]


def test_health_check_rules(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            "settings.yaml": (
                "default:\n  health:\n    checks:\n"
                "      web:\n        type: http\n"
                "      odd:\n        type: sonar\n"
                "      db:\n        type: postgres\n        critical: maybe\n        colour: red\n"
                "      disk:\n        probes: [ready, sometimes]\n"
            )
        }
    )
    text = "\n".join(problems(folder))
    assert "health.checks.web.url: is required for this check type" in text
    assert "health.checks.odd.type: must be one of postgres, redis, http" in text
    assert "health.checks.db.colour: is not a known setting" in text
    assert "health.checks.db.critical: must be true or false, got 'maybe'" in text
    assert "health.checks.disk.probes: must be a list (one of live, ready, startup each)" in text


def test_an_environment_no_file_names_is_refused(write_config: WriteConfig) -> None:
    # A typo must not run production on the development defaults without a word.
    folder = write_config({"settings.yaml": "default: {}\nstaging:\n  server:\n    port: 9001\n"})
    assert problems(folder, {"AIVA_ENV": "prodution"}) == [
        "AIVA_ENV: names no settings section (known: development, production, staging, "
        "testing), got 'prodution' (from environment variable AIVA_ENV)"
    ]
    with pytest.raises(SettingsError) as caught:
        load_settings({}, env="stagin", config_dir=folder)
    assert str(caught.value).endswith("got 'stagin' (from --env / env argument)")


@pytest.mark.parametrize("env", ["development", "testing", "production", "staging"])
def test_standard_environments_and_file_sections_are_known(
    write_config: WriteConfig, env: str
) -> None:
    folder = write_config({"settings.local.yaml": "staging:\n  server:\n    port: 9001\n"})
    assert load_settings({"AIVA_ENV": env}, config_dir=folder).env == env
