"""What the stack's configs tell users about the service holds against a real `aiva serve`.

- A dashboard target asks Grafana for exemplars only when the service's OpenMetrics
  exposition (what Prometheus scrapes) carries `# {trace_id=...}` exemplars.
- Every `GET /path?query` an alert annotation sends an operator to is an endpoint
  the service answers in the form the annotation promises.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from infra.service import AivaService

from ._repo import ALERTS, exemplar_targets, load_yaml

# What Prometheus sends first (COMPONENTS.md): the only format that can carry exemplars.
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def annotation_requests() -> dict[str, str]:
    """path?query -> alertname of every `GET /...` an alert annotation tells operators to run."""
    found: dict[str, str] = {}
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            for text in rule.get("annotations", {}).values():
                for path in re.findall(r"GET (/[\w/?=&.-]*\w)", text):
                    found[path] = rule["alert"]
    return found


@pytest.mark.fast_layer("metric_producers", "prometheus_translation")
def test_dashboards_ask_for_exemplars_only_when_the_service_emits_them(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service()  # development: every trace sampled, so any exemplar could appear
    with service.client(timeout=10.0) as client:
        for i in range(5):
            assert client.get(f"/api/demo/items/{i}").status_code == 200
            assert client.get("/api/demo/work").status_code == 200
        response = client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "http_server_request_duration_seconds_bucket{" in response.text
    # An exemplar after a bucket: `# {span_id="…",trace_id="…"} value timestamp`, in any label order.
    emits = re.search(r' # \{[^}]*\btrace_id="[0-9a-f]{32}"', response.text) is not None
    asking = exemplar_targets()
    assert emits or not asking, (
        "these dashboard targets ask for exemplars, but aiva's /metrics has none:\n  "
        + "\n  ".join(asking)
    )


def test_alert_annotations_point_at_endpoints_the_service_answers(
    aiva_service: Callable[..., AivaService],
) -> None:
    requests = annotation_requests()
    assert requests, "the alerts name no endpoint for operators"
    service = aiva_service()
    with service.client(timeout=10.0) as client:
        for path, alert in requests.items():
            response = client.get(path)
            status = response.status_code
            assert status in (200, 503), f"{alert}: GET {path} answered {status}"
            if "verbose" in path:
                # The Kubernetes-style verbose view: one `[+]name ok` / `[-]name ...` line a check.
                lines = response.text.strip().splitlines()
                checks = [line for line in lines if re.match(r"\[[+-]\]\S", line)]
                assert checks, f"{alert}: GET {path} lists no check:\n{response.text[:300]}"
