"""`/metrics` as Prometheus sees it: a real Prometheus scraping the running service."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from infra.prometheus import Prometheus
from infra.service import AivaService


def series(text: str) -> set[str]:
    """The series (name and labels) in a text exposition, comments left out."""
    return {
        line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_prometheus_scrapes_http_duration_by_route(
    prometheus: Callable[..., Prometheus], aiva_service: Callable[..., AivaService]
) -> None:
    service = aiva_service()
    with service.client() as client:
        for item in range(5):
            client.get(f"/api/demo/items/{item}")
    server = prometheus(targets=[f"127.0.0.1:{service.port}"])
    result = server.wait_for_query(
        'http_server_request_duration_seconds_count{http_route="/api/demo/items/{item_id}"}'
    )
    [sample] = result
    assert sample["metric"]["http_request_method"] == "GET"
    assert sample["metric"]["http_response_status_code"] == "200"
    assert float(sample["value"][1]) >= 5
    # Counters of failures and drops exist from start-up, at 0.
    [dropped] = server.wait_for_query('aiva_telemetry_dropped_total{signal="spans"}')
    assert float(dropped["value"][1]) == 0
    assert server.wait_for_query("process_cpu_time_seconds_total")
    assert server.wait_for_query("system_memory_usage_bytes")


def test_unmatched_paths_never_become_series(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service()
    with service.client() as client:
        client.get("/api/demo/items/1")
        client.get(f"/{uuid.uuid4().hex}")
        client.get("/metrics")
        before = series(client.get("/metrics").text)
        for _ in range(2000):
            assert client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status_code == 404
        after = series(client.get("/metrics").text)
    assert after == before
    unmatched = [s for s in after if s.startswith("http_server_request_duration_seconds_count")]
    # (the exporter gives a series without the attribute an empty label)
    assert any('status_code="404"' in s and 'http_route=""' in s for s in unmatched)


def test_openmetrics_when_asked(aiva_service: Callable[..., AivaService]) -> None:
    service = aiva_service()
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = httpx.get(f"{service.base_url}/metrics", headers={"Accept": accept}, timeout=5)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    plain = httpx.get(f"{service.base_url}/metrics", timeout=5)
    assert plain.headers["content-type"].startswith("text/plain")
