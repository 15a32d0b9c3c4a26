"""telemetry.metrics.buckets applied on both readers: `le` on /metrics, explicit_bounds at
the collector, for aiva's own histograms and the SDK's alike."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aiva.settings import Settings, load_settings
from aiva.telemetry.exporters import ExportStats
from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.metrics import (
    DURATION_BUCKETS_S,
    ProducingPeriodicReader,
    bucket_views,
    build_metrics,
    request_duration_histogram,
)
from aiva.telemetry.resource import build_resource
from infra.rotel import Rotel
from infra.service import AivaService
from infra.wait import wait_for

VARIABLE = "AIVA_TELEMETRY__METRICS__BUCKETS"
SERVER_BOUNDS = (0.0001, 0.3, 3.0)
OPERATION_BOUNDS = (0.0005, 0.25, 4.0)
# The SDK's own default boundaries: what a histogram nobody configured keeps.
SDK_DEFAULT_BOUNDS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0)
SDK_DEFAULT_BOUNDS += (2500.0, 5000.0, 7500.0, 10000.0)


def _settings(**environ: str) -> Settings:
    return load_settings(environ, config_dir="/nonexistent").settings


def _le_bounds(exposition: str) -> dict[str, set[tuple[float, ...]]]:
    """Per histogram family of a text exposition, the boundaries (`le`, +Inf left out) of
    each series, as the parser of prometheus_client reads them."""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = defaultdict(list)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                others = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                series[(family.name, others)].append(float(sample.labels["le"]))
    found: dict[str, set[tuple[float, ...]]] = defaultdict(set)
    for (name, _), bounds in series.items():
        found[name].add(tuple(bounds))
    return found


def test_configured_boundaries_on_prometheus_for_aivas_and_the_sdks_histograms() -> None:
    settings = _settings(
        **{
            VARIABLE: (
                '{"http.server.request.duration" = [0.0001, 0.3, 3], '
                '"AIVA.Operation.Duration" = [0.0005, 0.25, 4]}'  # names are case-insensitive
            )
        }
    )
    built = build_metrics(settings, build_resource(settings), ExportStats())
    assert built.request_duration is not None
    built.request_duration.record("k", {"http.route": "/x"}, 0.2)
    meter = built.provider.get_meter("aiva.operation")
    # As aiva.api creates it: advisory boundaries, which the configured view overrides.
    operation = meter.create_histogram(
        "aiva.operation.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S
    )
    operation.record(0.2, {"operation": "o"})
    meter.create_histogram("other.size").record(3)
    text = generate_latest(built.registry).decode()
    built.provider.shutdown()

    bounds = _le_bounds(text)
    assert bounds["http_server_request_duration_seconds"] == {SERVER_BOUNDS}
    assert bounds["aiva_operation_duration_seconds"] == {OPERATION_BOUNDS}
    assert bounds["other_size"] == {SDK_DEFAULT_BOUNDS}
    assert 'le="3.0"' in text and 'le="4.0"' in text  # floats, as for the default list


def test_unconfigured_durations_keep_the_http_boundaries() -> None:
    settings = _settings()
    built = build_metrics(settings, build_resource(settings), ExportStats())
    assert built.request_duration is not None and built.client_duration is not None
    built.request_duration.record("k", {"http.route": "/x"}, 0.2)
    built.client_duration.record("k", {"server.address": "a"}, 0.2)
    text = generate_latest(built.registry).decode()
    built.provider.shutdown()
    bounds = _le_bounds(text)
    assert bounds["http_server_request_duration_seconds"] == {DURATION_BUCKETS_S}
    assert bounds["http_client_request_duration_seconds"] == {DURATION_BUCKETS_S}


class _Exponential(MetricExporter):
    """An exporter that prefers exponential histograms, keeping what it is given."""

    def __init__(self) -> None:
        super().__init__(
            preferred_aggregation={SdkHistogram: ExponentialBucketHistogramAggregation()}
        )
        self.batches: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_configured_boundaries_win_over_an_exporters_exponential_preference() -> None:
    exporter = _Exponential()
    reader = ProducingPeriodicReader(
        exporter, [], Resource.create({}), export_interval_millis=3_600_000
    )
    provider = MeterProvider(
        metric_readers=[reader], views=bucket_views({"configured": OPERATION_BOUNDS})
    )
    meter = provider.get_meter("t")
    meter.create_histogram("configured").record(1.0)
    meter.create_histogram("left.alone").record(1.0)
    reader.collect()
    provider.shutdown()
    batch = exporter.batches[0]  # (shutdown exports once more)
    data = {
        metric.name: metric.data
        for resource in batch.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    [point] = data["configured"].data_points
    assert tuple(point.explicit_bounds) == OPERATION_BOUNDS  # type: ignore[union-attr]
    assert isinstance(data["left.alone"], ExponentialHistogram)


def test_a_view_takes_histograms_only() -> None:
    reader = InMemoryMetricReader()
    views = bucket_views({"configured": OPERATION_BOUNDS})
    provider = MeterProvider(metric_readers=[reader], views=views)
    provider.get_meter("t").create_counter("configured").add(1)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    [metric] = data.resource_metrics[0].scope_metrics[0].metrics
    assert isinstance(metric.data, Sum)


def test_an_exponential_preference_keeps_aivas_histogram_when_configured() -> None:
    settings = _settings(
        OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION="base2_exponential_bucket_histogram",
        AIVA_TELEMETRY__OTLP__ENDPOINT="http://127.0.0.1:9",
        AIVA_TELEMETRY__OTLP__TIMEOUT_S="1",
        **{VARIABLE: '{"http.server.request.duration" = [0.0001, 0.3, 3]}'},
    )
    built = build_metrics(settings, build_resource(settings), ExportStats())
    built.provider.shutdown()
    assert built.request_duration is not None  # configured: explicit, aggregated by aiva
    assert built.client_duration is None  # not configured: the exporter's preference
    built.request_duration.attach("r", AggregationTemporality.CUMULATIVE)
    built.request_duration.record("k", {}, 0.2)
    metric = built.request_duration.collect("r")
    assert metric is not None
    [point] = metric.data.data_points  # type: ignore[union-attr]
    assert tuple(point.explicit_bounds) == SERVER_BOUNDS  # type: ignore[union-attr]


@pytest.mark.parametrize("bounds", [(1.0, 0.5), (0.5, 0.5), (0.1, math.nan), (0.1, math.inf)])
def test_aivas_histogram_refuses_what_the_sdk_refuses(bounds: tuple[float, ...]) -> None:
    scope = request_duration_histogram().scope
    with pytest.raises(ValueError, match="bucket boundaries must be"):
        ProducedHistogram("d", unit="s", description="", boundaries=bounds, scope=scope)


# --- live: aiva serve, a real rotel, /metrics -----------------------------------------

SETTINGS_FILE = """\
default:
  telemetry:
    metrics:
      buckets:
        "aiva.operation.duration": [0.0005, 0.25, 4]
"""
_NAME = re.compile(r"-> Name: (\S+)")
_BOUND = re.compile(r"^ExplicitBounds #\d+: (\S+)$", re.MULTILINE)


def _collector_bounds(dump: str) -> dict[str, set[tuple[float, ...]]]:
    """Per histogram metric in rotel's dump, the explicit_bounds of each data point."""
    found: dict[str, set[tuple[float, ...]]] = defaultdict(set)
    for block in re.split(r"^Metric #\d+$", dump, flags=re.MULTILINE)[1:]:
        name = _NAME.search(block)
        if name is None or "DataType: Histogram" not in block:
            continue
        for point in block.split("HistogramDataPoints #")[1:]:
            found[name.group(1)].add(tuple(float(b) for b in _BOUND.findall(point)))
    return found


def test_configured_boundaries_reach_metrics_and_the_collector(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(
        env={
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
            "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
            "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
            # One instrument from a variable (a TOML inline table), one from the file.
            VARIABLE: '{"http.server.request.duration" = [0.0001, 0.3, 3]}',
        },
        config_files={"settings.yaml": SETTINGS_FILE},
    )
    with service.client() as client:
        assert client.get("/api/demo/items/1").status_code == 200
        assert client.get("/api/demo/work").status_code == 200  # aiva.operation spans

    def scraped() -> dict[str, set[tuple[float, ...]]]:
        bounds = _le_bounds(httpx.get(f"{service.base_url}/metrics", timeout=5).text)
        wanted = ("http_server_request_duration_seconds", "aiva_operation_duration_seconds")
        return bounds if all(bounds.get(name) for name in wanted) else {}

    on_metrics = wait_for(scraped, 10.0, interval=0.2)
    assert on_metrics["http_server_request_duration_seconds"] == {SERVER_BOUNDS}
    assert on_metrics["aiva_operation_duration_seconds"] == {OPERATION_BOUNDS}
    assert on_metrics["aiva_demo_batch_size"] == {SDK_DEFAULT_BOUNDS}  # not configured

    def exported() -> dict[str, set[tuple[float, ...]]]:
        bounds = _collector_bounds(collector.output())
        wanted = ("http.server.request.duration", "aiva.operation.duration")
        return bounds if all(bounds.get(name) for name in wanted) else {}

    at_collector = collector.wait_for(lambda _: exported(), timeout=15.0)
    assert at_collector["http.server.request.duration"] == {SERVER_BOUNDS}
    assert at_collector["aiva.operation.duration"] == {OPERATION_BOUNDS}
    assert at_collector["aiva.demo.batch.size"] == {SDK_DEFAULT_BOUNDS}
