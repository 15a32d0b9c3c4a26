"""Exemplars on the OpenMetrics exposition of `/metrics`: on the bucket their value falls
into, kept until a newer one replaces them, never in the 0.0.4 text format, and stored
by a real Prometheus (`--enable-feature=exemplar-storage`) with the trace ids of spans
a real collector received, with one worker and with two."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from aiva.settings import load_settings
from aiva.telemetry.exposition import family_name
from aiva.telemetry.metrics import ProducingPrometheusReader
from aiva.web.app import create_reference_app
from infra.prometheus import Prometheus
from infra.rotel import Rotel
from infra.service import AivaService
from infra.wait import wait_for

RESOURCE = Resource({"service.name": "exemplar-test"})
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
BOUNDS = [0.1, 0.5, 1.0]


@pytest.fixture
def instrumented() -> Iterator[tuple[CollectorRegistry, MeterProvider, TracerProvider]]:
    registry = CollectorRegistry()
    reader = ProducingPrometheusReader(registry, [], RESOURCE)
    provider = MeterProvider(
        metric_readers=[reader], resource=RESOURCE, exemplar_filter=TraceBasedExemplarFilter()
    )
    yield registry, provider, TracerProvider()
    provider.shutdown()


def _bucket_exemplars(text: str, family: str) -> dict[str, tuple[str, str, float]]:
    """le -> (trace id, span id, value) of the family's bucket samples with an exemplar."""
    found = {}
    for parsed in text_string_to_metric_families(text):
        if parsed.name == family:
            for sample in parsed.samples:
                if sample.exemplar is not None:
                    labels = sample.exemplar.labels
                    found[sample.labels["le"]] = (
                        labels["trace_id"],
                        labels["span_id"],
                        sample.exemplar.value,
                    )
    return found


def test_an_exemplar_sits_on_its_bucket_and_stays_until_replaced(
    instrumented: tuple[CollectorRegistry, MeterProvider, TracerProvider],
) -> None:
    registry, provider, tracers = instrumented
    duration = provider.get_meter("aiva.operation").create_histogram(
        "aiva.operation.duration", unit="s", explicit_bucket_boundaries_advisory=BOUNDS
    )
    tracer = tracers.get_tracer("test")
    with tracer.start_as_current_span("slow") as span:
        duration.record(0.3, {"operation": "demo"})
    duration.record(0.05, {"operation": "demo"})  # no span: no exemplar (trace_based)
    context = span.get_span_context()
    expected = (format(context.trace_id, "032x"), format(context.span_id, "016x"), 0.3)
    name = family_name("aiva.operation.duration", "s")

    first = generate_openmetrics(registry).decode()
    assert _bucket_exemplars(first, name) == {"0.5": expected}
    # The SDK's reservoir emptied at that collection; the exposition still has it.
    second = generate_openmetrics(registry).decode()
    assert _bucket_exemplars(second, name) == {"0.5": expected}
    # A newer one in the same bucket replaces it.
    with tracer.start_as_current_span("newer") as newer:
        duration.record(0.4, {"operation": "demo"})
    replaced = _bucket_exemplars(generate_openmetrics(registry).decode(), name)
    assert replaced["0.5"][1] == format(newer.get_span_context().span_id, "016x")
    # The 0.0.4 text format has no exemplars.
    assert " # {" not in generate_latest(registry).decode()


# ---------------------------------------------------------------------------------------
# A real Prometheus with exemplar storage, a real collector


def _service_env(collector: Rotel) -> dict[str, str]:
    return {
        "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
        "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
        "AIVA_TELEMETRY__OTLP__PROTOCOL": "grpc",
        "AIVA_TELEMETRY__METRICS__EXEMPLAR_FILTER": "trace_based",
        "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "5",
    }


def _exemplar_trace_ids(server: Prometheus, promql: str, since: float) -> set[str]:
    found = server.query_exemplars(promql, since, time.time() + 60)
    return {
        exemplar["labels"]["trace_id"]
        for series in found
        for exemplar in series.get("exemplars", [])
        if "trace_id" in exemplar.get("labels", {})
    }


@pytest.mark.fast_layer("metric_producers", "prometheus_translation")
@pytest.mark.parametrize("workers", [1, 2])
def test_prometheus_stores_exemplars_of_traces_the_collector_received(
    workers: int,
    rotel: Callable[[], Rotel],
    prometheus: Callable[..., Prometheus],
    aiva_service: Callable[..., AivaService],
) -> None:
    collector = rotel()
    service = aiva_service(
        env=_service_env(collector), args=["--workers", str(workers)], ready_path="/livez"
    )
    if workers > 1:
        wait_for(lambda: service.log_text().count(" started (environment ") >= workers, 60)
    server = prometheus(targets=[f"127.0.0.1:{service.port}"], exemplars=True)
    since = time.time() - 5
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        for _ in range(20):  # a fresh connection each time: every worker takes some
            answer = client.get("/api/demo/work", headers={"Connection": "close"})
            assert answer.status_code == 200
    spans = collector.wait_for_spans(
        lambda s: s["name"] == "GET /api/demo/work", count=20, timeout=30
    )
    received = {span["trace_id"] for span in spans}
    for promql in (
        "aiva_operation_duration_seconds_bucket",
        'http_server_request_duration_seconds_bucket{http_route="/api/demo/work"}',
    ):
        trace_ids = wait_for(
            lambda promql=promql: _exemplar_trace_ids(server, promql, since),
            30,
            message=lambda promql=promql: f"no exemplars of {promql}",
        )
        assert trace_ids <= received, (promql, trace_ids - received)


@pytest.mark.fast_layer("metric_producers", "prometheus_translation")
@pytest.mark.parametrize("exemplar_filter", ["always_off", "trace_based"])
def test_the_exemplar_filter_setting_rules_aivas_own_histograms(exemplar_filter: str) -> None:
    """The request duration aiva aggregates itself follows the setting as the SDK's
    histograms do (those are the process's global provider's: one per test process, so
    the real-process test above covers them)."""
    environ = {"AIVA_TELEMETRY__METRICS__EXEMPLAR_FILTER": exemplar_filter}
    app = create_reference_app(load_settings(environ, config_dir="/nonexistent").settings)
    with TestClient(app) as client:
        assert client.get("/api/demo/items/1").status_code == 200
        text = client.get("/metrics", headers={"Accept": OPENMETRICS}).text
    exemplars = [
        sample.exemplar
        for family in text_string_to_metric_families(text)
        if family.name == "http_server_request_duration_seconds"
        for sample in family.samples
        if sample.exemplar is not None
    ]
    assert len(exemplars) == (0 if exemplar_filter == "always_off" else 1)
