"""The resource's sources in the specification's order: detected values, then
OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME, then explicit aiva settings."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.version import __version__ as sdk_version

from aiva import __version__
from aiva.settings import LoadedSettings, load_settings
from aiva.telemetry.resource import build_resource

POD = (
    "service.name=x,service.instance.id=pod-1,k8s.pod.name=p,"
    "deployment.environment.name=staging,host.name=h,service.version=2.0.0"
)


def loaded(
    tmp_path: Path, environ: Mapping[str, str], settings_yaml: str | None = None
) -> LoadedSettings:
    """Settings from `environ`, with config/settings.yaml when given."""
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    if settings_yaml is not None:
        (folder / "settings.yaml").write_text(settings_yaml, encoding="utf-8")
    return load_settings(environ, config_dir=folder)


def attributes(
    tmp_path: Path, environ: Mapping[str, str], settings_yaml: str | None = None
) -> dict[str, Any]:
    """The resource's attributes built from those settings."""
    return dict(build_resource(loaded(tmp_path, environ, settings_yaml).settings).attributes)


def test_detected_values_and_the_sdk_when_nothing_is_given(tmp_path: Path) -> None:
    resource = attributes(tmp_path, {})
    assert resource["host.name"] == socket.gethostname()
    assert resource["process.pid"] == os.getpid()
    assert uuid.UUID(str(resource["service.instance.id"])).version == 4
    assert resource["service.name"] == "aiva"
    assert resource["service.version"] == __version__
    assert resource["deployment.environment.name"] == "development"
    assert {k: v for k, v in resource.items() if k.startswith("telemetry.sdk.")} == {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
    }


def test_otel_resource_attributes_pass_unchanged_over_detected_and_default_values(
    tmp_path: Path,
) -> None:
    resource = attributes(tmp_path, {"OTEL_RESOURCE_ATTRIBUTES": POD})
    assert {k: resource[k] for k in resource if not k.startswith(("telemetry.", "process."))} == {
        "service.name": "x",
        "service.instance.id": "pod-1",
        "k8s.pod.name": "p",
        "deployment.environment.name": "staging",
        "host.name": "h",
        "service.version": "2.0.0",
    }
    assert resource["process.pid"] == os.getpid()  # detected where nothing replaces it
    assert resource["telemetry.sdk.version"] == sdk_version


@pytest.mark.parametrize(
    ("environ", "settings_yaml", "name", "source"),
    [
        ({}, None, "x", "environment variable OTEL_RESOURCE_ATTRIBUTES"),
        ({"OTEL_SERVICE_NAME": "y"}, None, "y", "environment variable OTEL_SERVICE_NAME"),
        (
            {"OTEL_SERVICE_NAME": "y", "AIVA_SERVICE__NAME": "z"},
            None,
            "z",
            "environment variable AIVA_SERVICE__NAME",
        ),
        # A settings file is explicit: it beats OTEL_RESOURCE_ATTRIBUTES ...
        ({}, "default:\n  service:\n    name: f\n", "f", "settings.yaml"),
        # ... and the layers put OTEL_SERVICE_NAME (layer 5) over the files.
        (
            {"OTEL_SERVICE_NAME": "y"},
            "default:\n  service:\n    name: f\n",
            "y",
            "environment variable OTEL_SERVICE_NAME",
        ),
    ],
)
def test_service_name_precedence(
    tmp_path: Path,
    environ: dict[str, str],
    settings_yaml: str | None,
    name: str,
    source: str,
) -> None:
    settings = loaded(tmp_path, {"OTEL_RESOURCE_ATTRIBUTES": POD, **environ}, settings_yaml)
    assert build_resource(settings.settings).attributes["service.name"] == name
    # Every reader agrees (/info, health reports), and `config show --sources` says why.
    assert settings.settings.service.name == name
    assert settings.sources["service.name"].endswith(source)


def test_version_and_environment_follow_the_same_rule(tmp_path: Path) -> None:
    from_pod = loaded(tmp_path, {"OTEL_RESOURCE_ATTRIBUTES": POD})
    assert from_pod.settings.service.version == "2.0.0"  # over the package version
    assert from_pod.settings.service.environment == "staging"  # over the active environment
    assert from_pod.sources["service.environment"] == (
        "environment variable OTEL_RESOURCE_ATTRIBUTES"
    )
    explicit = attributes(
        tmp_path,
        {
            "OTEL_RESOURCE_ATTRIBUTES": POD,
            "AIVA_SERVICE__VERSION": "3.1",
            "AIVA_SERVICE__ENVIRONMENT": "eu-prod",
        },
    )
    assert (explicit["service.version"], explicit["deployment.environment.name"]) == (
        "3.1",
        "eu-prod",
    )


def test_an_empty_value_does_not_replace_the_default(tmp_path: Path) -> None:
    resource = attributes(tmp_path, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=,team=core"})
    assert (resource["service.name"], resource["team"]) == ("aiva", "core")


def test_each_process_gets_its_own_instance_id(tmp_path: Path) -> None:
    first, second = attributes(tmp_path, {}), attributes(tmp_path, {})
    assert first["service.instance.id"] != second["service.instance.id"]


def test_each_worker_keeps_an_instance_id_of_its_own() -> None:
    """A pod's service.instance.id with several workers: one id per worker process."""
    environ = {
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-uid-1",
        "AIVA_SERVER__WORKERS": "2",
    }
    settings = load_settings(environ, config_dir="/nonexistent").settings
    resource = build_resource(settings)
    assert resource.attributes["service.instance.id"] == f"pod-uid-1-{os.getpid()}"
    single = load_settings(
        {"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-uid-1"}, config_dir="/nonexistent"
    ).settings
    assert build_resource(single).attributes["service.instance.id"] == "pod-uid-1"
