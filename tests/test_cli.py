"""The real `aiva` command in a subprocess: every layer, environments, errors and masking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import WriteConfig


def aiva(
    *args: str, config: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m aiva ARGS` with a clean environment and the given settings folder."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIVA_", "OTEL_"))}
    environ |= {"AIVA_CONFIG_DIR": str(config), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "aiva", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def section(name: str) -> str:
    return f"default:\n  service:\n    name: {name}\n"


# Each layer sets service.name, the layer just below it does too: the upper one must win.
LAYERS = {
    "defaults": ({}, {}, "aiva", "package defaults"),
    "settings": ({"settings.yaml": section("from-settings")}, {}, "from-settings", "settings.yaml"),
    "local": (
        {"settings.yaml": section("from-settings"), "settings.local.yaml": section("from-local")},
        {},
        "from-local",
        "settings.local.yaml",
    ),
    "secrets": (
        {"settings.local.yaml": section("from-local"), ".secrets.yaml": section("from-secrets")},
        {},
        "from-secrets",
        ".secrets.yaml",
    ),
    "otel": (
        {".secrets.yaml": section("from-secrets")},
        {"OTEL_SERVICE_NAME": "from-otel"},
        "from-otel",
        "environment variable OTEL_SERVICE_NAME",
    ),
    "aiva": (
        {},
        {"OTEL_SERVICE_NAME": "from-otel", "AIVA_SERVICE__NAME": "from-aiva"},
        "from-aiva",
        "environment variable AIVA_SERVICE__NAME",
    ),
}


@pytest.mark.parametrize("layer", list(LAYERS))
def test_each_layer_overrides_the_one_below(write_config: WriteConfig, layer: str) -> None:
    files, env, value, source = LAYERS[layer]
    folder = write_config(files)
    result = aiva("config", "show", "--sources", config=folder, env=env)
    assert result.returncode == 0, result.stderr
    [line] = [x for x in result.stdout.splitlines() if x.startswith("service.name = ")]
    assert line.startswith(f"service.name = {value}    # ")
    assert line.endswith(source)


def test_env_option_and_aiva_env_pick_the_section(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            "settings.yaml": "default:\n  server:\n    port: 9000\nproduction:\n  server:\n    port: 9500\n"
        }
    )
    by_option = aiva("config", "show", "--env", "production", config=folder)
    by_variable = aiva("config", "show", config=folder, env={"AIVA_ENV": "production"})
    default = aiva("config", "show", config=folder)
    assert "port: 9500" in by_option.stdout
    assert "port: 9500" in by_variable.stdout
    assert "port: 9000" in default.stdout
    assert "environment: production" in by_option.stdout


def test_show_masks_every_secret(write_config: WriteConfig) -> None:
    folder = write_config(
        {
            ".secrets.yaml": "default:\n  database:\n    password: pg-secret\n  security:\n    api_key: key-secret\n"
        }
    )
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=header-secret",
        "AIVA_REDIS__URL": "redis://:redis-secret@localhost:6379/0",
    }
    for args in (("config", "show"), ("config", "show", "--sources")):
        result = aiva(*args, config=folder, env=env)
        assert result.returncode == 0, result.stderr
        for secret in ("pg-secret", "key-secret", "header-secret", "redis-secret"):
            assert secret not in result.stdout
        assert "****" in result.stdout
        assert "redis://:****@localhost:6379/0" in result.stdout


def test_validate_accepts_valid_settings(write_config: WriteConfig) -> None:
    folder = write_config({"settings.yaml": section("ok")})
    result = aiva("config", "validate", config=folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("settings valid (environment development; files: ")
    assert "settings.yaml" in result.stdout


@pytest.mark.parametrize("command", [("config", "validate"), ("config", "show"), ("serve",)])
def test_settings_errors_exit_2_one_line_each_no_traceback(
    write_config: WriteConfig, command: tuple[str, ...]
) -> None:
    folder = write_config(
        {
            "settings.yaml": "default:\n  server:\n    port: 70000\n",
            ".secrets.yaml": "default:\n  database:\n    password: 31337\n",
        }
    )
    result = aiva(*command, config=folder, env={"AIVA_TELEMETRY__OTLP__ENDPIONT": "x"})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [
        "settings error: telemetry.otlp.endpiont: is not a known setting (a typo?) "
        "(from environment variable AIVA_TELEMETRY__OTLP__ENDPIONT)",
        "settings error: server.port: must be between 1 and 65535, got 70000 "
        f"(from {folder.resolve() / 'settings.yaml'})",
        "settings error: database.password: must be a string or null, got '****' "
        f"(from {folder.resolve() / '.secrets.yaml'})",
    ]
    assert "Traceback" not in result.stderr
    assert "31337" not in result.stderr + result.stdout


def test_yaml_error_through_the_cli(write_config: WriteConfig) -> None:
    folder = write_config({"settings.local.yaml": "default:\n  server: [\n"})
    result = aiva("config", "validate", config=folder)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("settings error: settings.local.yaml: cannot be parsed")
    assert "line " in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--help",), ["serve", "config"]),
        (("serve", "--help"), ["--host", "--port", "--env", "--workers"]),
        (("config", "show", "--help"), ["--sources", "--env"]),
        (("config", "validate", "--help"), ["--env"]),
    ],
)
def test_help_explains_the_options(tmp_path: Path, args: tuple[str, ...], words: list[str]) -> None:
    result = aiva(*args, config=tmp_path)
    assert result.returncode == 0
    for word in words:
        assert word in result.stdout


def test_bad_log_file_path_is_a_settings_error_for_serve(tmp_path: Path) -> None:
    result = aiva(
        "serve",
        "--port",
        "1",  # never bound: the settings are refused first
        config=tmp_path,
        env={"AIVA_TELEMETRY__LOGS__FILE__PATH": "/nonexistent/dir/x.log"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "settings error: telemetry.logs.file.path: must be a file path in an existing folder, "
        "got '/nonexistent/dir/x.log' "
        "(from environment variable AIVA_TELEMETRY__LOGS__FILE__PATH)"
    ]


def test_missing_config_dir_is_a_settings_error(tmp_path: Path) -> None:
    result = aiva("config", "validate", config=tmp_path / "missing")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"settings error: AIVA_CONFIG_DIR: must be an existing folder, "
        f"got {str(tmp_path / 'missing')!r} (from environment variable AIVA_CONFIG_DIR)"
    ]


def test_malformed_otlp_header_is_not_printed(tmp_path: Path) -> None:
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer ok,Bearer supersecret"}
    result = aiva("config", "validate", config=tmp_path, env=env)
    assert result.returncode == 2
    assert "malformed entry at position 2 (not shown: secret)" in result.stderr
    assert "supersecret" not in result.stderr + result.stdout


def test_digit_only_secret_from_the_environment_is_a_string(tmp_path: Path) -> None:
    env = {"AIVA_DATABASE__PASSWORD": "123456", "AIVA_SERVICE__VERSION": "1.0"}
    result = aiva("config", "show", config=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "version: '1.0'" in result.stdout
    assert "password: '****'" in result.stdout
