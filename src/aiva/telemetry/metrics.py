"""The meter provider: Prometheus on its own registry, OTLP periodic export, self-metrics."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from aiva import __version__
from aiva.fast.producers import (
    ProducingPeriodicReader,
    ProducingPrometheusReader,
    exporter_preferences,
    takes_explicit_buckets,
)
from aiva.settings import Settings
from aiva.settings.model import MetricsSettings
from aiva.telemetry.exporters import CountingMetricExporter, ExportStats, otlp_exporter
from aiva.telemetry.histogram import ProducedHistogram
from aiva.telemetry.instruments import LeanInstruments, LeanMeterProvider, ProducerRegistry
from aiva.telemetry.metrics_share import MetricsShare, worker_metrics_dir
from aiva.telemetry.otlp_target import otlp_target, within
from aiva.telemetry.system import system_views

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


def build_metrics(
    settings: Settings, resource: Resource, stats: ExportStats, *, fast: bool = True
) -> Metrics:
    """The provider with its readers: Prometheus when on, OTLP push when an endpoint is set.

    `fast`: aiva aggregates its request histograms and `aiva.meter()`'s instruments itself
    and adds them to its readers' collections (aiva.fast.producers); without it, every
    metric goes through the SDK's own instruments and readers (public API only).
    """
    registry = CollectorRegistry(auto_describe=True)
    metrics = settings.telemetry.metrics
    target = otlp_target(settings.telemetry.otlp, "metrics")
    preferences = otlp_preferences(metrics)
    exporter = None
    if target is not None and "otlp" in metrics.exporters:
        # The reader passes its export timeout to export(), which the SDK's OTLP
        # exporters do not bound their requests by (1.45): the exporter applies it.
        inner = otlp_exporter(
            within(target, metrics.export_timeout_s or target.timeout_s), **preferences
        )
        # What the exporter itself resolved (OTEL_* variables included), where the fast
        # layer may read it; else what it was given.
        preferred = exporter_preferences(inner) if fast else preferences
        exporter = CountingMetricExporter(inner, stats, **preferred)
    buckets = bucket_boundaries(settings.telemetry.metrics)
    # One filter for the SDK's histograms and aiva's own (OTEL_METRICS_EXEMPLAR_FILTER).
    exemplar_filter = _EXEMPLAR_FILTERS[metrics.exemplar_filter]()
    options: dict[str, Any] = {
        "resource": resource,
        # The contrib system-metrics instrumentor's scope dropped (aiva.telemetry.system).
        "views": [*bucket_views(buckets), *system_views()],
        "exemplar_filter": exemplar_filter,
        "shutdown_on_exit": False,  # shut down by the lifespan, within its deadline
    }
    if not fast:
        provider = MeterProvider(
            metric_readers=_plain_readers(settings, registry, exporter), **options
        )
        _register_self_metrics(provider, stats)
        return Metrics(provider, registry, None)
    # aiva aggregates explicit buckets only: when the OTLP exporter asks for another
    # histogram aggregation (OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=
    # base2_exponential_bucket_histogram), the request duration goes through the SDK.
    explicit = exporter is None or takes_explicit_buckets(exporter)
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
    # aiva's own histograms now; the instruments of aiva.meter() join as they are made.
    producers = ProducerRegistry(
        tuple(p for p in (request_duration, client_duration, *sizes) if p is not None)
    )
    provider = LeanMeterProvider(
        metric_readers=_producing_readers(settings, registry, exporter, producers, resource),
        lean=LeanInstruments(producers, exemplar_filter, buckets, explicit_histograms=explicit),
        **options,
    )
    _register_self_metrics(provider, stats)
    return Metrics(provider, registry, request_duration, client_duration, body_sizes)


def _producing_readers(
    settings: Settings,
    registry: CollectorRegistry,
    exporter: MetricExporter | None,
    producers: ProducerRegistry,
    resource: Resource,
) -> list[MetricReader]:
    metrics = settings.telemetry.metrics
    readers: list[MetricReader] = []
    if metrics.prometheus.enabled:
        readers.append(
            ProducingPrometheusReader(registry, producers, resource, worker_share(resource))
        )
    periodic = {
        "export_interval_millis": metrics.export_interval_s * 1000,
        "export_timeout_millis": (metrics.export_timeout_s or 30) * 1000,
    }
    if exporter is not None:
        readers.append(ProducingPeriodicReader(exporter, producers, resource, **periodic))
    if "console" in metrics.exporters:  # the SDK's JSON on stdout, from the reader's thread
        readers.append(
            ProducingPeriodicReader(ConsoleMetricExporter(), producers, resource, **periodic)
        )
    return readers


def _plain_readers(
    settings: Settings, registry: CollectorRegistry, exporter: MetricExporter | None
) -> list[MetricReader]:
    """The SDK's own readers: /metrics is its Prometheus exporter's rendering (no
    exemplars, no Prometheus names for the system metrics, and with several workers
    the answering worker's series only)."""
    metrics = settings.telemetry.metrics
    readers: list[MetricReader] = []
    if metrics.prometheus.enabled:
        readers.append(PrometheusMetricReader(registry=registry))
    periodic = {
        "export_interval_millis": metrics.export_interval_s * 1000,
        "export_timeout_millis": (metrics.export_timeout_s or 30) * 1000,
    }
    if exporter is not None:
        readers.append(PeriodicExportingMetricReader(exporter, **periodic))
    if "console" in metrics.exporters:
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), **periodic))
    return readers


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
