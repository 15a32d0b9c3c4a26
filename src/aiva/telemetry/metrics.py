"""The meter provider: Prometheus on its own registry, OTLP periodic export, self-metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import (
    DefaultAggregation,
    ExplicitBucketHistogramAggregation,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from aiva import __version__
from aiva.settings import Settings
from aiva.telemetry.exporters import CountingMetricExporter, ExportStats, otlp_exporter
from aiva.telemetry.histogram import ProducedHistogram

# The HTTP semantic conventions' advised boundaries for http.server.request.duration (s).
DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class Metrics:
    """The meter provider, the Prometheus registry `/metrics` renders, and the request
    duration histogram aiva aggregates itself (see aiva.telemetry.histogram)."""

    provider: MeterProvider
    registry: CollectorRegistry
    request_duration: ProducedHistogram | None  # None: recorded through the SDK instead
    # http.client.request.duration of aiva's httpx client spans, aggregated the same way.
    client_duration: ProducedHistogram | None = None


REQUEST_DURATION = "http.server.request.duration"
REQUEST_DURATION_DESCRIPTION = "Duration of HTTP server requests."


def request_duration_histogram() -> ProducedHistogram:
    return ProducedHistogram(
        REQUEST_DURATION,
        unit="s",
        description=REQUEST_DURATION_DESCRIPTION,
        boundaries=DURATION_BUCKETS_S,
        scope=InstrumentationScope("aiva.http", __version__),
    )


CLIENT_DURATION = "http.client.request.duration"


def client_duration_histogram() -> ProducedHistogram:
    return ProducedHistogram(
        CLIENT_DURATION,
        unit="s",
        description="Duration of HTTP client requests.",
        boundaries=DURATION_BUCKETS_S,
        scope=InstrumentationScope("aiva.httpx", __version__),
    )


def build_metrics(settings: Settings, resource: Resource, stats: ExportStats) -> Metrics:
    """The provider with its readers: Prometheus when on, OTLP push when an endpoint is set."""
    registry = CollectorRegistry(auto_describe=True)
    otlp = settings.telemetry.otlp
    exporter = (
        CountingMetricExporter(otlp_exporter(otlp, "metrics"), stats) if otlp.endpoint else None
    )
    # aiva aggregates explicit buckets only: when the OTLP exporter asks for another
    # histogram aggregation (OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=
    # base2_exponential_bucket_histogram), the request duration goes through the SDK.
    explicit = exporter is None or takes_explicit_buckets(exporter)
    request_duration = request_duration_histogram() if explicit else None
    client_duration = client_duration_histogram() if explicit else None
    producers = tuple(p for p in (request_duration, client_duration) if p is not None)
    readers: list[MetricReader] = []
    metrics = settings.telemetry.metrics
    if metrics.prometheus.enabled:
        readers.append(ProducingPrometheusReader(registry, producers, resource))
    if exporter is not None:
        readers.append(
            ProducingPeriodicReader(
                exporter,
                producers,
                resource,
                export_interval_millis=metrics.export_interval_s * 1000,
                export_timeout_millis=otlp.timeout_s * 1000,
            )
        )
    provider = MeterProvider(
        resource=resource,
        metric_readers=readers,
        # Exemplars are not rendered by the Prometheus exporter yet; offering every
        # measurement to a reservoir would cost each request for nothing.
        exemplar_filter=AlwaysOffExemplarFilter(),
        shutdown_on_exit=False,  # shut down by the lifespan, within its deadline
    )
    _register_self_metrics(provider, stats)
    return Metrics(provider, registry, request_duration, client_duration)


def takes_explicit_buckets(exporter: MetricExporter) -> bool:
    """Whether the exporter wants histograms as explicit buckets (the SDK's default)."""
    preferred = (exporter._preferred_aggregation or {}).get(SdkHistogram)
    return preferred is None or isinstance(
        preferred, ExplicitBucketHistogramAggregation | DefaultAggregation
    )


# The OpenTelemetry specification's MetricProducer (a source of pre-aggregated metrics
# a reader adds to each collection) is missing from the Python SDK; these two readers
# take producers and add their metrics in `_receive_metrics`, the method every reader
# implements to receive a collection. The SDK calls it only when its own instruments
# gave something: build_metrics registers aiva.telemetry.*, observed from start-up
# (at 0), so with its provider every collection has something.


class _WithProducers(MetricReader):
    """A reader that adds its producers' metrics to every collection it receives; mixed
    in before a concrete reader, which `_receive_metrics` hands the result to."""

    _producers: tuple[ProducedHistogram, ...]
    _resource: Resource

    def _attach_producers(
        self,
        producers: Sequence[ProducedHistogram],
        resource: Resource,
        temporality: AggregationTemporality,
    ) -> None:
        for producer in producers:
            producer.attach(self, temporality)
        self._producers = tuple(producers)
        self._resource = resource

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        produced = _with_produced(metrics_data, self, self._producers, self._resource)
        super()._receive_metrics(produced, timeout_millis, **kwargs)  # type: ignore[safe-super]


class ProducingPrometheusReader(_WithProducers, PrometheusMetricReader):
    """The Prometheus reader (own registry) plus aiva's producers."""

    def __init__(
        self,
        registry: CollectorRegistry,
        producers: Sequence[ProducedHistogram],
        resource: Resource,
    ) -> None:
        super().__init__(registry=registry)
        self._attach_producers(producers, resource, AggregationTemporality.CUMULATIVE)


class ProducingPeriodicReader(_WithProducers, PeriodicExportingMetricReader):
    """The periodic OTLP push plus aiva's producers."""

    def __init__(
        self,
        exporter: MetricExporter,
        producers: Sequence[ProducedHistogram],
        resource: Resource,
        **kwargs: Any,
    ) -> None:
        super().__init__(exporter, **kwargs)
        # What the exporter prefers for histograms (OTLP's exporter resolves
        # OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE into it); the SDK reads it too.
        preferred = exporter._preferred_temporality or {}
        temporality = preferred.get(SdkHistogram, AggregationTemporality.CUMULATIVE)
        self._attach_producers(producers, resource, temporality)


def _with_produced(
    data: MetricsData,
    reader: MetricReader,
    producers: Sequence[ProducedHistogram],
    resource: Resource,
) -> MetricsData:
    """`data` with each producer's metric added to its scope, under the provider's resource."""
    added: dict[InstrumentationScope, list[Any]] = {}
    for producer in producers:
        metric = producer.collect(reader)
        if metric is not None:
            added.setdefault(producer.scope, []).append(metric)
    if not added:
        return data
    resources = list(data.resource_metrics)
    index = next((i for i, r in enumerate(resources) if r.resource == resource), None)
    if index is None:
        resources.append(ResourceMetrics(resource, [], resource.schema_url))
        index = len(resources) - 1
    own = resources[index]
    scopes: list[ScopeMetrics] = []
    for scope_metrics in own.scope_metrics:
        extra = added.pop(scope_metrics.scope, [])
        scopes.append(
            ScopeMetrics(
                scope_metrics.scope, [*scope_metrics.metrics, *extra], scope_metrics.schema_url
            )
            if extra
            else scope_metrics
        )
    scopes += [
        ScopeMetrics(scope, metrics, scope.schema_url or "") for scope, metrics in added.items()
    ]
    resources[index] = ResourceMetrics(own.resource, scopes, own.schema_url)
    return MetricsData(resources)


def _register_self_metrics(provider: MeterProvider, stats: ExportStats) -> None:
    """aiva.telemetry.{exported,failed,dropped}: present from start-up, at 0."""
    meter = provider.get_meter("aiva.telemetry")
    for outcome in ("exported", "failed", "dropped"):
        meter.create_observable_counter(
            f"aiva.telemetry.{outcome}",
            callbacks=[_outcome_callback(stats, outcome)],
            unit="{item}",
            description=f"Telemetry items {outcome} by the OTLP pipeline, per signal.",
        )


def _outcome_callback(stats: ExportStats, outcome: str):  # type: ignore[no-untyped-def]
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        # Runs on the SDK's collection thread: reads a snapshot, schedules nothing.
        counts = stats.counts()
        return [
            Observation(value, {"signal": signal})
            for (signal, kind), value in counts.items()
            if kind == outcome
        ]

    return observe
