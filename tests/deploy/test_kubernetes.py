"""The Kubernetes example: probes on the contract's paths, a drain that fits, valid settings,
environment references Kubernetes can expand, and an autoscaler that can work."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiva.settings import load_settings
from aiva.telemetry.resource import build_resource

from ._repo import KUBERNETES, REPO, load_yaml

DEPLOY = REPO / "deploy"
# Kubernetes' expansion syntax: `$$` is a literal `$`, `$(NAME)` a reference.
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


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


def references(text: str) -> list[str]:
    """The variables `$(NAME)` in text refers to, as Kubernetes reads it (`$$(X)` is none)."""
    return [match[1] for match in _REFERENCE.finditer(text) if match[1] is not None]


def containers(node: Any, where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, container) for every container, init container and ephemeral container."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("containers", "initContainers", "ephemeralContainers"):
                for container in value or []:
                    yield f"{where}: {container.get('name')}", container
            else:
                yield from containers(value, where)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item, where)


def every_container() -> list[tuple[str, Mapping[str, Any]]]:
    """Every container of every manifest under deploy/ (all documents of each file)."""
    found = []
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, Mapping):
                name = (doc.get("metadata") or {}).get("name")
                where = f"{path.relative_to(REPO)} {doc.get('kind')}/{name}"
                found.extend(containers(doc.get("spec"), where))
    return found


def test_every_env_reference_names_a_variable_defined_before_it() -> None:
    # Kubernetes expands $(VAR) in an env value only from the entries above it in the
    # same container's list, and in command/args from the whole list; anything else is
    # left as written (the pod's identity would reach the collector as "$(POD_NAME)").
    checked = 0
    for where, container in every_container():
        defined: list[str] = []
        for entry in container.get("env", []):
            for name in references(str(entry.get("value", ""))):
                assert name in defined, f"{where}: {entry['name']} uses $({name}) before it"
                checked += 1
            defined.append(entry["name"])
        for field in ("command", "args"):
            for argument in container.get(field) or []:
                for name in references(str(argument)):
                    assert name in defined, f"{where}: {field} uses undefined $({name})"
                    checked += 1
    assert checked >= 5, "the Deployment's OTEL_RESOURCE_ATTRIBUTES references the pod"


def test_references_follow_kubernetes_syntax() -> None:
    assert references("a=$(A),b=$$(B),c=$$$(C),$(D") == ["A", "C"]


def expanded_env(container: Mapping[str, Any], downward: Mapping[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it, downward-API fields given."""
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            env[entry["name"]] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
            continue

        def expand(match: re.Match[str]) -> str:
            return "$" if match[1] is None else env.get(match[1], match[0])

        env[entry["name"]] = _REFERENCE.sub(expand, entry["value"])
    return env


def test_pod_identity_becomes_the_resource(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any], tmp_path: Path
) -> None:
    downward = {
        "metadata.name": "aiva-7d9c4-x2x8q",
        "metadata.namespace": "shop",
        "metadata.uid": "0b3c3a4e-5d0f-4c1e-9a51-3f0b9f1c2d7e",
        "spec.nodeName": "node-3",
    }
    env = expanded_env(container, downward)
    settings = load_settings(
        env, env=env["AIVA_ENV"], config_dir=mounted_config(manifests, tmp_path)
    ).settings
    resource = build_resource(settings).attributes
    assert {key: resource[key] for key in resource if key.startswith("k8s.")} == {
        "k8s.pod.name": "aiva-7d9c4-x2x8q",
        "k8s.pod.uid": "0b3c3a4e-5d0f-4c1e-9a51-3f0b9f1c2d7e",
        "k8s.namespace.name": "shop",
        "k8s.node.name": "node-3",
        "k8s.deployment.name": manifests["Deployment"]["metadata"]["name"],
        "k8s.container.name": container["name"],
    }
    assert resource["service.instance.id"] == downward["metadata.uid"]
    assert resource["service.name"] == "aiva"
    assert resource["deployment.environment.name"] == "production"


def cpu_millicores(quantity: str) -> float:
    """A Kubernetes CPU quantity (`250m`, `0.5`, `2`) in millicores."""
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def test_autoscaler_scales_the_deployment_on_cpu(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = manifests["Deployment"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    target = metric["resource"]["target"]
    assert target["type"] == "Utilization" and 0 < target["averageUtilization"] <= 100
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Utilization is a share of the request: without requests.cpu the HPA does nothing.
    assert cpu_millicores(str(container["resources"]["requests"]["cpu"])) > 0
    # A replica count in the Deployment would be reapplied over the HPA's on every apply.
    assert "replicas" not in deployment["spec"]


def test_cpu_quantities_read_as_kubernetes_writes_them() -> None:
    assert [cpu_millicores(q) for q in ("250m", "0.5", "2")] == [250, 500, 2000]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_example_with_the_autoscaler() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert set(by_kind) == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    }
    target = by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target["name"] == by_kind["Deployment"]["metadata"]["name"]
