"""aiva's own request-duration histogram against the SDK's: same points, every reader."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    NoOpTracerProvider,
    Span,
    SpanContext,
    TraceFlags,
)
from prometheus_client import CollectorRegistry, generate_latest

from aiva.settings import Settings, load_settings
from aiva.telemetry.exporters import ExportStats
from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.http import HttpTelemetry
from aiva.telemetry.metrics import (
    DURATION_BUCKETS_S,
    ProducingPeriodicReader,
    ProducingPrometheusReader,
    build_metrics,
    request_duration_histogram,
)
from aiva.telemetry.resource import build_resource

GET_200 = {"http.request.method": "GET", "http.response.status_code": 200, "url.scheme": "http"}
POST_500 = {
    "http.request.method": "POST",
    "http.response.status_code": 500,
    "url.scheme": "http",
    "error.type": "500",
}


def _points(metrics_data: MetricsData | None, name: str) -> list[HistogramDataPoint]:
    assert metrics_data is not None
    return [
        point
        for resource in metrics_data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points  # type: ignore[union-attr]
    ]


def _shape(point: HistogramDataPoint) -> tuple[Any, ...]:
    return (
        dict(point.attributes or {}),
        tuple(point.bucket_counts),
        tuple(point.explicit_bounds),
        point.count,
        round(point.sum, 9),
        point.min,
        point.max,
    )


def test_points_equal_the_sdk_histograms_for_the_same_measurements() -> None:
    sdk_reader = InMemoryMetricReader()
    sdk_histogram = (
        MeterProvider(metric_readers=[sdk_reader])
        .get_meter("t")
        .create_histogram("d", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S)
    )
    ours = request_duration_histogram()
    ours.attach("reader", AggregationTemporality.CUMULATIVE)
    rng = random.Random(7)
    # Values on the boundaries too: bucket i holds (bounds[i-1], bounds[i]].
    values = [*DURATION_BUCKETS_S, 0.0, 11.0, *(rng.uniform(0, 12) for _ in range(500))]
    for index, value in enumerate(values):
        attributes = GET_200 if index % 3 else POST_500
        sdk_histogram.record(value, attributes)
        ours.record(index % 3 != 0, attributes, value)

    metric = ours.collect("reader")
    assert metric is not None
    assert metric.name == "http.server.request.duration" and metric.unit == "s"
    assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE  # type: ignore[union-attr]
    expected = sorted(map(_shape, _points(sdk_reader.get_metrics_data(), "d")), key=repr)
    assert sorted(map(_shape, metric.data.data_points), key=repr) == expected  # type: ignore[arg-type]
    assert sum(p.count for p in metric.data.data_points) == len(values)  # type: ignore[attr-defined]


def _span(rng: random.Random, sampled: bool) -> Span:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(rng.getrandbits(128), rng.getrandbits(64), False, trace_flags=flags)
    return NonRecordingSpan(context)


def _exemplar_shapes(points: Any, spanless: set[float]) -> list[tuple[Any, ...]]:
    """Each point's exemplars, their time left out (each side reads its own clock).

    `spanless`: values measured with no span. The SDK (1.45) gives their exemplar the ids
    of an earlier measurement in the same bucket (ExemplarBucket.offer leaves them set);
    aiva's has none, as the specification means: compared as none.
    """
    return sorted(
        (
            repr(sorted((p.attributes or {}).items())),
            tuple(
                (e.filtered_attributes, e.value, None, None)
                if e.value in spanless
                else (e.filtered_attributes, e.value, e.span_id, e.trace_id)
                for e in p.exemplars
            ),
        )
        for p in points
    )


class _OddValues(ExemplarFilter):
    """A filter of the user's own: asked for every measurement."""

    def should_sample(
        self, value: float, time_unix_nano: int, attributes: Any, context: Any
    ) -> bool:
        return int(value * 1000) % 2 == 1


@pytest.mark.parametrize(
    "exemplar_filter",
    [TraceBasedExemplarFilter, AlwaysOnExemplarFilter, AlwaysOffExemplarFilter, _OddValues],
)
@pytest.mark.parametrize(
    "temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]
)
def test_exemplars_equal_the_sdk_histograms_for_the_same_measurements(
    exemplar_filter: type[ExemplarFilter], temporality: AggregationTemporality
) -> None:
    sdk_reader = InMemoryMetricReader(preferred_temporality={SdkHistogram: temporality})
    sdk_histogram = (
        MeterProvider(metric_readers=[sdk_reader], exemplar_filter=exemplar_filter())
        .get_meter("t")
        .create_histogram("d", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S)
    )
    ours = request_duration_histogram()
    ours = ProducedHistogram(
        "d",
        unit="s",
        description="",
        boundaries=DURATION_BUCKETS_S,
        scope=ours.scope,
        exemplar_filter=exemplar_filter(),
    )
    ours.attach("reader", temporality)
    rng = random.Random(13)
    started_ns = time.time_ns()
    rounds = []
    spanless: set[float] = set()
    # Three collections: many measurements per bucket (the last one stays), then a few
    # (buckets not offered again are empty after a collection), then none at all.
    for measurements in (400, 6, 0):
        for index in range(measurements):
            attributes = GET_200 if index % 3 else POST_500
            kind = index % 4  # a sampled span, an unsampled one, none, the current one
            # Values on the boundaries too (bucket i holds (bounds[i-1], bounds[i]]); a
            # value measured with no span is unique, to be told apart (_exemplar_shapes).
            value = rng.uniform(0, 12)
            if kind != 2 and index % 5 == 0:
                value = rng.choice((0.0, 0.005, 0.1, 11.0))
            span = _span(rng, sampled=kind != 1) if kind != 2 else INVALID_SPAN
            if kind == 2:
                spanless.add(value)
            if kind == 3:  # passed as None: ProducedHistogram looks the context up
                token = otel_context.attach(trace.set_span_in_context(span))
                sdk_histogram.record(value, attributes)
                ours.record(index % 3 != 0, attributes, value)
                otel_context.detach(token)
            else:
                context = trace.set_span_in_context(span)
                sdk_histogram.record(value, attributes, context=context)
                ours.record(index % 3 != 0, attributes, value, span)
        sdk_data = sdk_reader.get_metrics_data()
        sdk_points = _points(sdk_data, "d") if sdk_data is not None else []
        metric = ours.collect("reader")
        our_points = metric.data.data_points if metric is not None else []  # type: ignore[union-attr]
        rounds.append(
            (
                measurements,
                _exemplar_shapes(sdk_points, spanless),
                _exemplar_shapes(our_points, set()),
            )
        )
        for point in our_points:
            for exemplar in point.exemplars:
                assert started_ns <= exemplar.time_unix_nano <= time.time_ns()
                assert (exemplar.trace_id is None) == (exemplar.value in spanless)

    for measurements, sdk_shapes, our_shapes in rounds:
        assert our_shapes == sdk_shapes, f"after {measurements} measurements"
    offered = sum(len(exemplars) for _, exemplars in rounds[0][1])
    if exemplar_filter is AlwaysOffExemplarFilter:
        assert offered == 0
    else:  # something to compare: one exemplar per bucket offered
        assert offered >= 4


def test_each_reader_has_its_own_exemplars_since_its_previous_collection() -> None:
    histogram = ProducedHistogram(
        "d", unit="s", description="", boundaries=(1.0,), scope=request_duration_histogram().scope
    )
    histogram.attach("prometheus", AggregationTemporality.CUMULATIVE)
    histogram.attach("otlp", AggregationTemporality.CUMULATIVE)
    rng = random.Random(3)
    first, second = _span(rng, sampled=True), _span(rng, sampled=True)
    histogram.record("k", GET_200, 0.5, first)
    scraped = histogram.collect("prometheus")
    histogram.record("k", GET_200, 0.7, second)
    pushed = histogram.collect("otlp")
    scraped_again = histogram.collect("prometheus")

    assert scraped is not None and pushed is not None and scraped_again is not None
    [p1] = scraped.data.data_points  # type: ignore[union-attr]
    [o] = pushed.data.data_points  # type: ignore[union-attr]
    [p2] = scraped_again.data.data_points  # type: ignore[union-attr]
    assert [e.span_id for e in p1.exemplars] == [first.get_span_context().span_id]
    assert [e.span_id for e in o.exemplars] == [second.get_span_context().span_id]  # the last
    assert [e.span_id for e in p2.exemplars] == [second.get_span_context().span_id]
    assert p2.count == 2


def test_each_reader_sees_every_measurement_in_its_own_temporality() -> None:
    histogram = ProducedHistogram(
        "d",
        unit="s",
        description="",
        boundaries=(1.0, 2.0),
        scope=request_duration_histogram().scope,
    )
    histogram.attach("cumulative", AggregationTemporality.CUMULATIVE)
    histogram.attach("delta", AggregationTemporality.DELTA)
    assert histogram.collect("cumulative") is None  # nothing recorded yet

    histogram.record("k", GET_200, 0.5)
    histogram.record("k", GET_200, 1.5)
    first_delta = histogram.collect("delta")
    time.sleep(0.002)  # a later first measurement must not move the next delta's start
    histogram.record("k", GET_200, 3.0)
    cumulative = histogram.collect("cumulative")
    second_delta = histogram.collect("delta")
    empty_delta = histogram.collect("delta")

    assert first_delta is not None and cumulative is not None and second_delta is not None
    [d1] = first_delta.data.data_points  # type: ignore[union-attr]
    [c] = cumulative.data.data_points  # type: ignore[union-attr]
    [d2] = second_delta.data.data_points  # type: ignore[union-attr]
    assert (d1.count, tuple(d1.bucket_counts), d1.min, d1.max) == (2, (1, 1, 0), 0.5, 1.5)
    assert (c.count, tuple(c.bucket_counts), c.min, c.max) == (3, (1, 1, 1), 0.5, 3.0)
    assert (d2.count, tuple(d2.bucket_counts), d2.min, d2.max) == (1, (0, 0, 1), 3.0, 3.0)
    assert d2.start_time_unix_nano == d1.time_unix_nano  # each delta starts where the last ended
    assert c.start_time_unix_nano <= d1.start_time_unix_nano
    assert second_delta.data.aggregation_temporality is AggregationTemporality.DELTA  # type: ignore[union-attr]
    assert empty_delta is None


def test_the_prometheus_reader_renders_the_produced_histogram_beside_sdk_metrics() -> None:
    registry = CollectorRegistry(auto_describe=True)
    resource = Resource.create({"service.name": "t"})
    histogram = request_duration_histogram()
    reader = ProducingPrometheusReader(registry, [histogram], resource)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    # An SDK instrument in the same scope: the two must share one scope, not replace it.
    provider.get_meter("aiva.http", histogram.scope.version).create_counter("c").add(1)
    histogram.record("k", {**GET_200, "http.route": "/items/{id}"}, 0.02)
    histogram.record("k", {**GET_200, "http.route": "/items/{id}"}, 0.3)

    text = generate_latest(registry).decode()
    provider.shutdown()

    bucket = 'http_server_request_duration_seconds_bucket{http_request_method="GET"'
    lines = [line for line in text.splitlines() if line.startswith(bucket)]
    assert any('http_route="/items/{id}"' in line and 'le="0.025"' in line for line in lines)
    counts = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    assert counts["0.01"] == 0 and counts["0.025"] == 1 and counts["0.5"] == 2
    assert counts["+Inf"] == 2
    assert "http_server_request_duration_seconds_count" in text
    assert "c_total" in text


class _Keeping(MetricExporter):
    """Keeps what it is given: the periodic reader's seam, checked without a network."""

    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={SdkHistogram: temporality})
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


@pytest.mark.parametrize(
    ("temporality", "second_count"),
    [(AggregationTemporality.CUMULATIVE, 3), (AggregationTemporality.DELTA, 1)],
)
def test_the_periodic_reader_follows_its_exporters_temporality(
    temporality: AggregationTemporality, second_count: int
) -> None:
    exporter = _Keeping(temporality)
    resource = Resource.create({"service.name": "t"})
    histogram = request_duration_histogram()
    reader = ProducingPeriodicReader(
        exporter, [histogram], resource, export_interval_millis=3_600_000
    )
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    provider.get_meter("other").create_counter("c").add(1)
    histogram.record("k", GET_200, 0.1)
    histogram.record("k", GET_200, 0.2)
    reader.collect()
    histogram.record("k", GET_200, 0.3)
    reader.collect()
    provider.shutdown()

    first, second = (
        _points(batch, "http.server.request.duration") for batch in exporter.batches[:2]
    )
    assert [p.count for p in first] == [2]
    assert [p.count for p in second] == [second_count]
    [resource_metrics] = exporter.batches[0].resource_metrics
    assert resource_metrics.resource is resource


def _settings(**environ: str) -> Settings:
    return load_settings(environ, config_dir="/nonexistent").settings


def test_build_metrics_reports_the_duration_with_nothing_else_recorded() -> None:
    # The readers add aiva's histogram to the SDK's collection, which the SDK only hands
    # over when it has something: the self-metrics, observed from start-up, see to it.
    settings = _settings()
    built = build_metrics(settings, build_resource(settings), ExportStats())
    assert built.request_duration is not None
    built.request_duration.record("k", {**GET_200, "http.route": "/x"}, 0.2)
    text = generate_latest(built.registry).decode()
    built.provider.shutdown()
    assert 'http_server_request_duration_seconds_count{http_request_method="GET"' in text


def test_an_exponential_histogram_preference_leaves_the_duration_to_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        "base2_exponential_bucket_histogram",
    )
    settings = _settings(
        AIVA_TELEMETRY__OTLP__ENDPOINT="http://127.0.0.1:9", AIVA_TELEMETRY__OTLP__TIMEOUT_S="1"
    )
    built = build_metrics(settings, build_resource(settings), ExportStats())
    built.provider.shutdown()
    assert built.request_duration is None

    reader = InMemoryMetricReader()
    http = HttpTelemetry(
        NoOpTracerProvider(), MeterProvider(metric_readers=[reader]), [], built.request_duration
    )
    http.record("GET", "http", "/items/{id}", 200, 0.05)
    [point] = _points(reader.get_metrics_data(), "http.server.request.duration")
    assert point.count == 1 and point.attributes["http.route"] == "/items/{id}"
