"""The meter provider: Prometheus on its own registry, OTLP periodic export, self-metrics."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Counter,
    ExemplarFilter,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    TraceBasedExemplarFilter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
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
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from aiva import __version__
from aiva.settings import Settings
from aiva.settings.model import MetricsSettings
from aiva.telemetry.exporters import CountingMetricExporter, ExportStats, otlp_exporter
from aiva.telemetry.exposition import ExpositionCollector
from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.metrics_share import MetricsShare, SnapshotThread, worker_metrics_dir
from aiva.telemetry.otlp_target import otlp_target, within
from aiva.telemetry.system import PROMETHEUS_NAMES, system_views

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
    # The server's body sizes, when telemetry.http.body_size_metrics is on.
    body_sizes: BodySizeHistograms | None = None


REQUEST_DURATION = "http.server.request.duration"
REQUEST_DURATION_DESCRIPTION = "Duration of HTTP server requests."


def request_duration_histogram(
    boundaries: Sequence[float] = DURATION_BUCKETS_S,
    exemplar_filter: ExemplarFilter | None = None,
) -> ProducedHistogram:
    return ProducedHistogram(
        REQUEST_DURATION,
        unit="s",
        description=REQUEST_DURATION_DESCRIPTION,
        boundaries=boundaries,
        scope=InstrumentationScope("aiva.http", __version__),
        exemplar_filter=exemplar_filter,
    )


CLIENT_DURATION = "http.client.request.duration"


def client_duration_histogram(
    boundaries: Sequence[float] = DURATION_BUCKETS_S,
    exemplar_filter: ExemplarFilter | None = None,
) -> ProducedHistogram:
    return ProducedHistogram(
        CLIENT_DURATION,
        unit="s",
        description="Duration of HTTP client requests.",
        boundaries=boundaries,
        scope=InstrumentationScope("aiva.httpx", __version__),
        exemplar_filter=exemplar_filter,
    )


REQUEST_BODY_SIZE = "http.server.request.body.size"
RESPONSE_BODY_SIZE = "http.server.response.body.size"
# The conventions advise no boundaries for body sizes (the SDK's default ones end at
# 10000, 10 kB here): powers of 4 from 64 B to 16 MiB.
BODY_SIZE_BUCKETS_BY = tuple(float(4**n) for n in range(3, 13))


@dataclass(frozen=True)
class BodySizeHistograms:
    """http.server.request.body.size and .response.body.size, aggregated as the duration."""

    request: ProducedHistogram
    response: ProducedHistogram


def body_size_histograms(
    buckets: Mapping[str, Sequence[float]], exemplar_filter: ExemplarFilter | None = None
) -> BodySizeHistograms:
    request, response = (
        ProducedHistogram(
            name,
            unit="By",
            description=f"Size of HTTP server {kind} bodies.",
            boundaries=buckets.get(name, BODY_SIZE_BUCKETS_BY),
            scope=InstrumentationScope("aiva.http", __version__),
            exemplar_filter=exemplar_filter,
        )
        for name, kind in ((REQUEST_BODY_SIZE, "request"), (RESPONSE_BODY_SIZE, "response"))
    )
    return BodySizeHistograms(request, response)


def build_metrics(settings: Settings, resource: Resource, stats: ExportStats) -> Metrics:
    """The provider with its readers: Prometheus when on, OTLP push when an endpoint is set."""
    registry = CollectorRegistry(auto_describe=True)
    metrics = settings.telemetry.metrics
    target = otlp_target(settings.telemetry.otlp, "metrics")
    exporter = (
        CountingMetricExporter(
            # The reader passes its export timeout to export(), which the SDK's OTLP
            # exporters do not bound their requests by (1.45): the exporter applies it.
            otlp_exporter(
                within(target, metrics.export_timeout_s or target.timeout_s),
                **otlp_preferences(metrics),
            ),
            stats,
        )
        if target is not None and "otlp" in metrics.exporters
        else None
    )
    # aiva aggregates explicit buckets only: when the OTLP exporter asks for another
    # histogram aggregation (OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=
    # base2_exponential_bucket_histogram), the request duration goes through the SDK.
    explicit = exporter is None or takes_explicit_buckets(exporter)
    buckets = bucket_boundaries(settings.telemetry.metrics)
    # One filter for the SDK's histograms and aiva's own (OTEL_METRICS_EXEMPLAR_FILTER).
    exemplar_filter = _EXEMPLAR_FILTERS[metrics.exemplar_filter]()
    # Boundaries configured for an instrument are explicit buckets whatever the
    # exporter prefers (as the SDK's views are: see bucket_views).
    request_duration = (
        request_duration_histogram(
            buckets.get(REQUEST_DURATION, DURATION_BUCKETS_S), exemplar_filter
        )
        if explicit or REQUEST_DURATION in buckets
        else None
    )
    client_duration = (
        client_duration_histogram(buckets.get(CLIENT_DURATION, DURATION_BUCKETS_S), exemplar_filter)
        if explicit or CLIENT_DURATION in buckets
        else None
    )
    body_sizes = (
        body_size_histograms(buckets, exemplar_filter)
        if settings.telemetry.http.body_size_metrics and explicit
        else None
    )
    sizes = (body_sizes.request, body_sizes.response) if body_sizes is not None else ()
    producers = tuple(p for p in (request_duration, client_duration, *sizes) if p is not None)
    readers: list[MetricReader] = []
    if metrics.prometheus.enabled:
        readers.append(
            ProducingPrometheusReader(registry, producers, resource, worker_share(resource))
        )
    if exporter is not None:
        readers.append(
            ProducingPeriodicReader(
                exporter,
                producers,
                resource,
                export_interval_millis=metrics.export_interval_s * 1000,
                export_timeout_millis=(metrics.export_timeout_s or 30) * 1000,
            )
        )
    if "console" in metrics.exporters:  # the SDK's JSON on stdout, from the reader's thread
        readers.append(
            ProducingPeriodicReader(
                ConsoleMetricExporter(),
                producers,
                resource,
                export_interval_millis=metrics.export_interval_s * 1000,
                export_timeout_millis=(metrics.export_timeout_s or 30) * 1000,
            )
        )
    provider = MeterProvider(
        resource=resource,
        metric_readers=readers,
        # The contrib system-metrics instrumentor's scope dropped (aiva.telemetry.system).
        views=[*bucket_views(buckets), *system_views()],
        exemplar_filter=exemplar_filter,
        shutdown_on_exit=False,  # shut down by the lifespan, within its deadline
    )
    _register_self_metrics(provider, stats)
    return Metrics(provider, registry, request_duration, client_duration, body_sizes)


def worker_share(resource: Resource) -> MetricsShare | None:
    """With several workers, this worker's side of their shared metrics (None with one:
    then nothing of it runs at all)."""
    directory = worker_metrics_dir(os.environ)
    if directory is None:
        return None
    instance = str(resource.attributes.get(SERVICE_INSTANCE_ID, os.getpid()))
    return MetricsShare(directory, instance)


def bucket_boundaries(settings: MetricsSettings) -> dict[str, tuple[float, ...]]:
    """telemetry.metrics.buckets by instrument name, lower-cased as the SDK names
    instruments (names are case-insensitive), each boundary a float (Prometheus writes
    `le="1.0"` for a float, `le="1"` for an int)."""
    return {
        name.lower(): tuple(float(bound) for bound in bounds)
        for name, bounds in settings.buckets.items()
    }


def bucket_views(buckets: Mapping[str, Sequence[float]]) -> list[View]:
    """One view per configured histogram of the SDK (aiva.operation.duration, a service's
    own through aiva.meter(), ...): the provider applies it for every reader, over the
    instrument's advisory boundaries and the exporter's preferred aggregation."""
    return [
        View(
            instrument_type=SdkHistogram,
            instrument_name=name,
            aggregation=ExplicitBucketHistogramAggregation(bounds),
        )
        for name, bounds in buckets.items()
    ]


# OTEL_METRICS_EXEMPLAR_FILTER's names. aiva's default is trace_based, as the SDK's:
# exemplars of sampled requests, rendered on the OpenMetrics exposition of /metrics
# and pushed in OTLP points (aiva's own histograms follow the same filter).
_EXEMPLAR_FILTERS: dict[str, Callable[[], ExemplarFilter]] = {
    "always_off": AlwaysOffExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "trace_based": TraceBasedExemplarFilter,
}


def otlp_preferences(metrics: MetricsSettings) -> dict[str, Any]:
    """The OTLP metric exporter's temporality and histogram aggregation, from the settings
    (the specification's table for OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE)."""
    delta, cumulative = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
    kinds = (Counter, UpDownCounter, SdkHistogram, ObservableCounter, ObservableUpDownCounter,
             ObservableGauge)  # fmt: skip
    if metrics.temporality == "delta":
        deltas: tuple[type, ...] = (Counter, SdkHistogram, ObservableCounter)
    elif metrics.temporality == "lowmemory":
        deltas = (Counter, SdkHistogram)
    else:
        deltas = ()
    temporality = {kind: delta if kind in deltas else cumulative for kind in kinds}
    aggregation = (
        {SdkHistogram: ExponentialBucketHistogramAggregation()}
        if metrics.histogram_aggregation == "base2_exponential_bucket_histogram"
        else {}
    )
    return {"preferred_temporality": temporality, "preferred_aggregation": aggregation}


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
    """The Prometheus reader plus aiva's producers, rendered by aiva's own collector
    (aiva.telemetry.exposition: exemplars, and with several workers the merge of their
    snapshots, aiva.telemetry.metrics_share, written every second from a thread)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        producers: Sequence[ProducedHistogram],
        resource: Resource,
        share: MetricsShare | None = None,
    ) -> None:
        # The exporter registers a collector of its own, which collects by itself and
        # renders no exemplars: it gets a registry nothing renders.
        super().__init__(registry=CollectorRegistry())
        self._attach_producers(producers, resource, AggregationTemporality.CUMULATIVE)
        self._received: MetricsData | None = None
        self.exposition = ExpositionCollector(self._collected, share)
        self._exposed_on = registry
        registry.register(self.exposition)
        self._snapshots = SnapshotThread(self.exposition.publish) if share else None
        if self._snapshots is not None:
            self._snapshots.start()

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        renamed = _renamed(metrics_data, PROMETHEUS_NAMES)
        self._received = _with_produced(renamed, self, self._producers, self._resource)

    def _collected(self) -> MetricsData | None:
        """One collection (the SDK's and the producers'); ExpositionCollector serializes
        the calls."""
        self._received = None
        self.collect()
        received, self._received = self._received, None
        return received

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._snapshots is not None:
            self._snapshots.stop(timeout_millis / 2000)
            self.exposition.publish()  # a worker leaving: its last counts stay in the sums
        self._exposed_on.unregister(self.exposition)
        super().shutdown(timeout_millis, **kwargs)


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


def _renamed(data: MetricsData, names: Mapping[str, str]) -> MetricsData:
    """`data` with the metrics named in `names` renamed (the Prometheus names of
    aiva.telemetry.system.PROMETHEUS_NAMES; OTLP keeps the conventions' names)."""
    return MetricsData(
        [
            replace(
                resource_metrics,
                scope_metrics=[
                    replace(
                        scope_metrics,
                        metrics=[
                            replace(metric, name=names[metric.name])
                            if metric.name in names
                            else metric
                            for metric in scope_metrics.metrics
                        ],
                    )
                    for scope_metrics in resource_metrics.scope_metrics
                ],
            )
            for resource_metrics in data.resource_metrics
        ]
    )


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
