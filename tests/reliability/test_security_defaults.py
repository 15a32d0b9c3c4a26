"""Security defaults against a real `aiva serve`: an empty API key is a settings error,
`/info`'s detail needs the key, and the service's own secrets under `app.*` are masked
on /info, by `aiva config show` and in a reload's log lines (issue #12, "Security gaps")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.service import AivaService, service_env
from infra.wait import wait_for

KEY = "k3y-for-the-tests"
IDENTITY = {"service", "version", "environment"}
# The app's own secrets (by name), a nested one and a DSN's password. Each holds a
# unique token: finding the token anywhere means the secret leaked.
SECRETS = {
    "db_password": "pw-db-7f3a",
    "stripe_key": "sk_live_4c9e",
    "client_secret": "cs-91b2",
    "auth_token": "tok-5d6e",
    "gcp_credentials_json": "cred-1a2b",
}
NESTED, DSN_PASSWORD = "nested-sk-3c3c", "dsn-pw-8e8e"
PLAIN = "plain-value-visible"


def _settings_yaml(suffix: str = "") -> str:
    values = {name: f"{token}{suffix}" for name, token in SECRETS.items()}
    values["gcp_credentials_json"] = f'{{"private_key": "{values["gcp_credentials_json"]}"}}'
    app = "".join(f"    {name}: '{value}'\n" for name, value in values.items())
    return (
        "default:\n  app:\n"
        f"{app}"
        f"    database_url: 'postgres://app:{DSN_PASSWORD}{suffix}@db:5432/app'\n"
        f"    stripe:\n      key: '{NESTED}{suffix}'\n"
        f"    greeting: '{PLAIN}'\n"
    )


def _leaks(text: str, suffix: str = "") -> list[str]:
    """The secrets' tokens found in the text."""
    tokens = [*SECRETS.values(), NESTED, DSN_PASSWORD]
    return [f"{token}{suffix}" for token in tokens if f"{token}{suffix}" in text]


def _aiva(
    *args: str, config_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiva", *args],
        env=service_env(env or {}, config_dir),
        cwd=config_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_api_key_is_a_settings_error(
    aiva_service: Callable[..., AivaService], value: str
) -> None:
    # It used to turn the key check off: /metrics and /health details open to anyone.
    service = aiva_service(env={"AIVA_SECURITY__API_KEY": value}, start=False)
    service.spawn()
    assert service.wait(timeout=30) == 2
    lines = service.log_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("settings error: security.api_key: must not be empty")
    assert "AIVA_SECURITY__API_KEY" in lines[0]
    validate = _aiva(
        "config", "validate", config_dir=service.config_dir, env={"AIVA_SECURITY__API_KEY": value}
    )
    assert validate.returncode == 2
    assert validate.stderr.count("\n") == 1 and "security.api_key" in validate.stderr


def test_info_detail_needs_the_key(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service(
        env={"AIVA_SECURITY__API_KEY": KEY, "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false"}
    )
    with service.client() as client:
        identity = client.get("/").json()
        assert set(identity) == IDENTITY
        # Without the key, or with a wrong one: the identity only, as `/` answers it.
        for headers in ({}, {"X-API-Key": "wrong"}):
            response = client.get("/info", headers=headers)
            assert response.status_code == 200
            assert response.json() == identity
        detail = client.get("/info", headers={"X-API-Key": KEY})
        assert detail.status_code == 200
        body = detail.json()
        assert {"build", "runtime", "settings"} <= set(body)
        assert body["settings"]["security"]["api_key"] == "****"
        assert KEY not in detail.text


def test_app_secrets_are_masked_on_info_config_show_and_reload_logs(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service(
        config_files={"settings.yaml": _settings_yaml()},
        env={"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false"},
    )
    with service.client() as client:
        info = client.get("/info")
    app = info.json()["settings"]["app"]
    assert _leaks(info.text) == [], info.text
    for name in (
        "db_password",
        "stripe_key",
        "client_secret",
        "auth_token",
        "gcp_credentials_json",
    ):
        assert app[name] == "****", name
    assert app["stripe"] == {"key": "****"}
    assert app["database_url"] == "postgres://app:****@db:5432/app"
    assert app["greeting"] == PLAIN  # what is no secret stays readable

    for args in (("config", "show"), ("config", "show", "--sources")):
        shown = _aiva(*args, config_dir=service.config_dir)
        assert shown.returncode == 0, shown.stderr
        assert _leaks(shown.stdout + shown.stderr) == [], shown.stdout
        assert PLAIN in shown.stdout and "postgres://app:****@db:5432/app" in shown.stdout

    # A reload that changes every secret: its log lines name the keys, never the values.
    mark = len(service.log_text())
    (service.config_dir / "settings.yaml").write_text(_settings_yaml("-new"), encoding="utf-8")
    assert service.pid is not None
    os.kill(service.pid, signal.SIGHUP)
    wait_for(lambda: "app.stripe_key" in service.log_text()[mark:], timeout=10)
    log = service.log_text()
    assert _leaks(log) == [] and _leaks(log, "-new") == [], log[mark:]
