"""The Kubernetes example: probes on the contract's paths, a drain that fits, valid settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aiva.settings import load_settings

from ._repo import KUBERNETES, load_yaml


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    docs = [load_yaml(path) for path in sorted(KUBERNETES.glob("*.yaml"))]
    return {doc["kind"]: doc for doc in docs}


@pytest.fixture(scope="module")
def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return dict(manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0])


def mounted_config(manifests: dict[str, dict[str, Any]], folder: Path) -> Path:
    """Write the ConfigMap's and Secret's files into folder, as the projected volume does."""
    for item in manifests["ConfigMap"]["data"].items():
        (folder / item[0]).write_text(item[1], encoding="utf-8")
    for item in manifests["Secret"]["stringData"].items():
        (folder / item[0]).write_text(item[1], encoding="utf-8")
    return folder


def test_probes_use_the_contract_paths(container: dict[str, Any]) -> None:
    paths = {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": "/health/startup",
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
    }
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]


def test_settings_and_secrets_come_from_configmap_and_secret(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any], tmp_path: Path
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert env["AIVA_CONFIG_DIR"] == mount["mountPath"]
    sources = next(v for v in pod["volumes"] if v["name"] == "config")["projected"]["sources"]
    assert sources[0]["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    assert sources[1]["secret"]["name"] == manifests["Secret"]["metadata"]["name"]
    # The same files aiva would read in the pod: valid, and the secret layer applies.
    loaded = load_settings({}, env=env["AIVA_ENV"], config_dir=mounted_config(manifests, tmp_path))
    assert loaded.settings.database.password is not None
    assert loaded.settings.server.host == "0.0.0.0"


def test_drain_fits_in_the_grace_period(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any], tmp_path: Path
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pause >= 3, "a preStop pause lets endpoints drop the pod before SIGTERM"
    # The container's literal env (fieldRef values only name the pod), as aiva reads it.
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = load_settings(
        env, env=env["AIVA_ENV"], config_dir=mounted_config(manifests, tmp_path)
    ).settings
    # preStop pause, then SIGTERM: the drain, then the last OTLP flush, all before SIGKILL.
    needed = pause + settings.server.graceful_timeout_s + settings.telemetry.otlp.timeout_s
    assert pod["terminationGracePeriodSeconds"] > needed


def test_pod_runs_non_root(manifests: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_service_selects_the_pods(manifests: dict[str, dict[str, Any]]) -> None:
    service = manifests["Service"]["spec"]
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "http"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
