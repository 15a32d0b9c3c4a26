"""`/metrics` of a real `aiva serve`, after demo traffic, held against Prometheus's own
tools: `promtool check metrics` reports nothing on the text exposition, and the
OpenMetrics exposition parses with prometheus_client's OpenMetrics parser."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from infra.prometheus import INSTALL_HINT as PROMETHEUS_INSTALL_HINT
from infra.require import require_binary
from infra.service import AivaService

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def demo_traffic(service: AivaService) -> None:
    """Every demo route (a 500 among them), an unmatched path and the probes: each kind
    of series /metrics can carry."""
    with service.client(timeout=10.0) as client:
        for item in range(3):
            assert client.get(f"/api/demo/items/{item}").status_code == 200
        assert client.get("/api/demo/work").status_code == 200
        # uvicorn closes the connection after an unhandled exception: no keep-alive.
        assert client.get("/api/demo/fail", headers={"Connection": "close"}).status_code == 500
        assert client.get("/no/such/path").status_code == 404
        for path in ("/", "/health", "/health/live", "/readyz", "/info", "/metrics"):
            client.get(path)


@pytest.fixture
def served(aiva_service: Callable[..., AivaService]) -> Iterator[AivaService]:
    service = aiva_service(env={"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false"})
    demo_traffic(service)
    yield service


@pytest.mark.fast_layer("metric_producers")
def test_promtool_check_metrics_reports_nothing(served: AivaService) -> None:
    promtool = require_binary("promtool", PROMETHEUS_INSTALL_HINT)
    with served.client() as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert "http_server_request_duration_seconds_bucket" in text
    assert "process_cpu_time_seconds_total" in text
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", ""), (
        checked.stdout + checked.stderr
    )


def test_promtool_flags_what_it_should(served: AivaService) -> None:
    """The check above can fail: promtool, fed aiva's exposition plus one series named the
    way the conventions' `process.thread.count` would be, names it."""
    promtool = require_binary("promtool", PROMETHEUS_INSTALL_HINT)
    with served.client() as client:
        text = client.get("/metrics").text
    bad = "# HELP process_thread_count Threads.\n# TYPE process_thread_count gauge\n"
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text + bad + "process_thread_count 8.0\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode != 0
    assert "process_thread_count" in checked.stdout + checked.stderr


@pytest.mark.fast_layer("metric_producers")
def test_openmetrics_exposition_parses(served: AivaService) -> None:
    with served.client() as client:
        answer = client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    # The parser raises on anything OpenMetrics does not allow (a missing # EOF, a counter
    # sample without _total, a unit the name does not end with, clashing names, ...).
    families = {family.name: family for family in text_string_to_metric_families(answer.text)}
    duration = families["http_server_request_duration_seconds"]
    assert (duration.type, duration.unit) == ("histogram", "seconds")
    routes = {sample.labels.get("http_route") for sample in duration.samples}
    assert "/api/demo/items/{item_id}" in routes
    assert families["process_cpu_time_seconds"].type == "counter"
    assert families["process_threads"].type == "gauge"
    assert families["system_memory_usage_bytes"].unit == "bytes"
