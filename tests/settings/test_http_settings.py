"""telemetry.http: the known methods (and OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS), proxy
trust and body size metrics, through the settings layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiva.errors import SettingsError
from aiva.settings import load_settings
from aiva.telemetry.http import KNOWN_METHODS

VARIABLE = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"


def test_defaults_are_the_conventions_methods_and_nothing_switched_on(tmp_path: Path) -> None:
    http = load_settings({}, config_dir=tmp_path).settings.telemetry.http
    assert frozenset(http.known_methods) == KNOWN_METHODS
    assert (http.trust_proxy_headers, http.body_size_metrics) == (False, False)


def test_the_standard_variable_replaces_the_known_methods(tmp_path: Path) -> None:
    loaded = load_settings({VARIABLE: "GET, HEAD,PROPFIND,"}, config_dir=tmp_path)
    assert loaded.settings.telemetry.http.known_methods == ("GET", "HEAD", "PROPFIND")
    assert loaded.sources["telemetry.http.known_methods"] == f"environment variable {VARIABLE}"


def test_an_empty_variable_is_unset(tmp_path: Path) -> None:
    # The specification: an empty variable is treated as if unset, not as "no method known".
    loaded = load_settings({VARIABLE: " "}, config_dir=tmp_path)
    assert frozenset(loaded.settings.telemetry.http.known_methods) == KNOWN_METHODS
    assert loaded.sources["telemetry.http.known_methods"] == "package defaults"


def test_an_aiva_variable_wins_over_the_standard_one(tmp_path: Path) -> None:
    environ = {VARIABLE: "GET", "AIVA_TELEMETRY__HTTP__KNOWN_METHODS": '["GET", "POST"]'}
    assert load_settings(environ, config_dir=tmp_path).settings.telemetry.http.known_methods == (
        "GET",
        "POST",
    )


@pytest.mark.parametrize("value", ["GET,BAD METHOD", "GET,PROP(FIND)"])
def test_a_method_that_is_no_http_token_is_refused_naming_the_variable(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({VARIABLE: value}, config_dir=tmp_path)
    [problem] = [str(p) for p in caught.value.problems]
    assert problem.startswith("telemetry.http.known_methods: must be a list of HTTP method names")
    assert problem.endswith(f"(from environment variable {VARIABLE})")


def test_switches_are_booleans(tmp_path: Path) -> None:
    environ = {
        "AIVA_TELEMETRY__HTTP__TRUST_PROXY_HEADERS": "true",
        "AIVA_TELEMETRY__HTTP__BODY_SIZE_METRICS": "true",
    }
    http = load_settings(environ, config_dir=tmp_path).settings.telemetry.http
    assert (http.trust_proxy_headers, http.body_size_metrics) == (True, True)
    with pytest.raises(SettingsError) as caught:
        load_settings({"AIVA_TELEMETRY__HTTP__TRUST_PROXY_HEADERS": "yes"}, config_dir=tmp_path)
    assert "telemetry.http.trust_proxy_headers: must be true or false" in str(caught.value)
