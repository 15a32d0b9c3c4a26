"""The meter provider: Prometheus on its own registry, OTLP periodic export, self-metrics."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from aiva.settings import Settings
from aiva.telemetry.exporters import CountingMetricExporter, ExportStats, otlp_exporter

# The HTTP semantic conventions' advised boundaries for http.server.request.duration (s).
DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


def build_meter_provider(
    settings: Settings, resource: Resource, stats: ExportStats
) -> tuple[MeterProvider, CollectorRegistry]:
    """The provider and the Prometheus registry `/metrics` renders."""
    registry = CollectorRegistry(auto_describe=True)
    readers: list[MetricReader] = []
    metrics = settings.telemetry.metrics
    if metrics.prometheus.enabled:
        readers.append(PrometheusMetricReader(registry=registry))
    otlp = settings.telemetry.otlp
    if otlp.endpoint:
        readers.append(
            PeriodicExportingMetricReader(
                CountingMetricExporter(otlp_exporter(otlp, "metrics"), stats),
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
    return provider, registry


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
