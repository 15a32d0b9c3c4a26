"""A deployment's OTEL_RESOURCE_ATTRIBUTES reach a real collector (rotel) unchanged on
traces, metrics and logs, and on /metrics' target_info; OTEL_SERVICE_NAME and explicit
aiva settings win over its service.name, as the specification orders them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.version import __version__ as sdk_version

from infra.rotel import Rotel
from infra.service import AivaService

POD_ATTRIBUTES = {
    "service.name": "x",
    "service.instance.id": "pod-1",
    "k8s.pod.name": "p",
    "deployment.environment.name": "staging",
    "host.name": "h",
}


def pod_env(collector: Rotel, **more: str) -> dict[str, str]:
    return {
        "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
        "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
        "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
        "OTEL_RESOURCE_ATTRIBUTES": ",".join(f"{k}={v}" for k, v in POD_ATTRIBUTES.items()),
        **more,
    }


def resources_of_every_signal(collector: Rotel, service: AivaService) -> dict[str, Any]:
    """The resource of a request's span, of its log line and of its duration metric."""
    with service.client() as client:
        assert client.get("/api/demo/work").status_code == 200
    [span] = collector.wait_for_spans(lambda s: s["name"] == "GET /api/demo/work")
    [line] = collector.wait_for_log_records(lambda r: str(r["body"]).startswith("processed "))
    metric = collector.wait_for_metric("http.server.request.duration")[0]
    return {"traces": span["resource"], "logs": line["resource"], "metrics": metric["resource"]}


def test_pod_identity_reaches_every_signal_unchanged(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(env=pod_env(collector))
    for signal, resource in resources_of_every_signal(collector, service).items():
        given = {key: resource.get(key) for key in POD_ATTRIBUTES}
        assert given == POD_ATTRIBUTES, signal
        assert resource["telemetry.sdk.version"] == sdk_version, signal
        assert resource["telemetry.sdk.language"] == "python", signal
        assert resource["telemetry.sdk.name"] == "opentelemetry", signal
        assert resource["process.pid"] == service.pid, signal  # detected, nothing replaced it

    # Prometheus gets the same resource as target_info.
    exposition = httpx.get(f"{service.base_url}/metrics", timeout=5).text
    [target_info] = [line for line in exposition.splitlines() if line.startswith("target_info{")]
    for label in ('service_name="x"', 'service_instance_id="pod-1"', 'k8s_pod_name="p"'):
        assert label in target_info


@pytest.mark.parametrize(
    ("more", "name"),
    [
        ({"OTEL_SERVICE_NAME": "y"}, "y"),
        ({"OTEL_SERVICE_NAME": "y", "AIVA_SERVICE__NAME": "z"}, "z"),
    ],
)
def test_otel_service_name_then_aiva_settings_win_over_the_pod_attributes(
    rotel: Callable[[], Rotel],
    aiva_service: Callable[..., AivaService],
    more: dict[str, str],
    name: str,
) -> None:
    collector = rotel()
    service = aiva_service(env=pod_env(collector, **more))
    for signal, resource in resources_of_every_signal(collector, service).items():
        assert resource["service.name"] == name, signal
        # The rest of the pod's identity is untouched.
        assert resource["service.instance.id"] == "pod-1", signal
        assert resource["k8s.pod.name"] == "p", signal
    info = httpx.get(f"{service.base_url}/info", timeout=5)
    assert info.json()["service"]["name"] == name
