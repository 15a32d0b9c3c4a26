"""Metric producers for the SDK's readers: aiva's own aggregations added to every collection.

The OpenTelemetry specification's MetricProducer (a source of pre-aggregated metrics a
reader adds to each collection) is missing from the Python SDK (1.45). aiva aggregates
its request histograms and the instruments of `aiva.meter()` itself (one lock, once for
all readers: ~2 µs a measurement against the SDK's ~20 µs with two readers,
benchmarks/instruments_inprocess.py), so its two readers take producers here, through
three private places of the SDK:
- `MetricReader._receive_metrics`, the method every reader implements to receive a
  collection: overridden to add the producers' metrics;
- `MetricReader._collect`, the provider's collecting function the reader calls: wrapped,
  as the SDK skips `_receive_metrics` when its own instruments gave nothing;
- `MetricExporter._preferred_temporality` and `_preferred_aggregation`, what an exporter
  prefers (the OTLP exporter resolves OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE
  and _DEFAULT_HISTOGRAM_AGGREGATION into them): the periodic reader's producers follow
  them, aiva's exporter wrapper passes them on, and an exporter wanting exponential
  histograms gets the SDK's.

`producers_work` checks all three on a private provider at start-up; without them
(or with `telemetry.fast_path: off`) every metric goes through the SDK's own instruments
and readers (aiva.telemetry.metrics.build_metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter as SdkCounter
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.view import DefaultAggregation, ExplicitBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from aiva.telemetry.exposition import ExpositionCollector
from aiva.telemetry.instruments import Producer, ProducerRegistry
from aiva.telemetry.metrics_share import MetricsShare, SnapshotThread
from aiva.telemetry.sums import ProducedSum
from aiva.telemetry.system import PROMETHEUS_NAMES

_NOTHING = MetricsData(resource_metrics=[])
Producers = Sequence[Producer] | ProducerRegistry


def exporter_preferences(exporter: MetricExporter) -> dict[str, Any]:
    """An exporter's preferred temporality and aggregation, as MetricExporter's keyword
    arguments (for a wrapper that must prefer the same)."""
    return {
        "preferred_temporality": exporter._preferred_temporality,
        "preferred_aggregation": exporter._preferred_aggregation,
    }


def takes_explicit_buckets(exporter: MetricExporter) -> bool:
    """Whether the exporter wants histograms as explicit buckets (the SDK's default)."""
    preferred = (exporter._preferred_aggregation or {}).get(SdkHistogram)
    return preferred is None or isinstance(
        preferred, ExplicitBucketHistogramAggregation | DefaultAggregation
    )


def _registry(producers: Producers) -> ProducerRegistry:
    return producers if isinstance(producers, ProducerRegistry) else ProducerRegistry(producers)


def _all_cumulative(kind: type) -> AggregationTemporality:
    return AggregationTemporality.CUMULATIVE


class _WithProducers(MetricReader):
    """A reader that adds its producers' metrics to every collection it receives; mixed
    in before a concrete reader, which `_receive_metrics` hands the result to."""

    _producer_registry: ProducerRegistry
    _resource: Resource

    def _attach_producers(
        self,
        producers: Producers,
        resource: Resource,
        temporality: Callable[[type], AggregationTemporality],
    ) -> None:
        self._producer_registry = _registry(producers)
        self._resource = resource
        self._producer_registry.attach_reader(self, temporality)

    # The provider sets `_collect` (MetricReader._set_collect_callback) and the reader's
    # `collect` skips `_receive_metrics` when it returns None: the SDK's instruments gave
    # nothing. Wrapped so that the producers' metrics still arrive then.
    @property  # type: ignore[override]
    def _collect(self) -> Callable[..., MetricsData] | None:
        collect: Callable[..., MetricsData] | None = self.__dict__.get("_aiva_collect")
        return collect

    @_collect.setter  # type: ignore[override]
    def _collect(self, collect: Callable[..., MetricsData | None] | None) -> None:
        self.__dict__["_aiva_collect"] = None if collect is None else _never_none(collect)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        produced = with_produced(
            metrics_data, self, self._producer_registry.producers(), self._resource
        )
        if produced.resource_metrics:  # as the SDK: nothing collected, nothing received
            super()._receive_metrics(produced, timeout_millis, **kwargs)  # type: ignore[safe-super]


def _never_none(collect: Callable[..., MetricsData | None]) -> Callable[..., MetricsData]:
    def collect_all(reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData:
        return collect(reader, timeout_millis=timeout_millis) or _NOTHING

    return collect_all


class ProducingPrometheusReader(_WithProducers, PrometheusMetricReader):
    """The Prometheus reader plus aiva's producers, rendered by aiva's own collector
    (aiva.telemetry.exposition: exemplars, and with several workers the merge of their
    snapshots, aiva.telemetry.metrics_share, written every second from a thread)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        producers: Producers,
        resource: Resource,
        share: MetricsShare | None = None,
    ) -> None:
        # The exporter registers a collector of its own, which collects by itself and
        # renders no exemplars: it gets a registry nothing renders.
        super().__init__(registry=CollectorRegistry())
        self._attach_producers(producers, resource, _all_cumulative)
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
        renamed = renamed_metrics(metrics_data, PROMETHEUS_NAMES)
        produced = with_produced(renamed, self, self._producer_registry.producers(), self._resource)
        self._received = produced if produced.resource_metrics else None

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
        producers: Producers,
        resource: Resource,
        **kwargs: Any,
    ) -> None:
        super().__init__(exporter, **kwargs)
        # What the exporter prefers, as the SDK's reader reads it (cumulative unless said).
        preferred: Mapping[type, AggregationTemporality] = exporter._preferred_temporality or {}
        self._attach_producers(
            producers,
            resource,
            lambda kind: preferred.get(kind, AggregationTemporality.CUMULATIVE),
        )


class ProducingInMemoryReader(_WithProducers, InMemoryMetricReader):
    """The SDK's in-memory reader plus producers (the self-test's, and tests')."""

    def __init__(
        self,
        producers: Producers,
        resource: Resource,
        preferred_temporality: Mapping[type, AggregationTemporality] | None = None,
    ) -> None:
        super().__init__(preferred_temporality=dict(preferred_temporality or {}))
        preferred = dict(preferred_temporality or {})
        self._attach_producers(
            producers,
            resource,
            lambda kind: preferred.get(kind, AggregationTemporality.CUMULATIVE),
        )


def renamed_metrics(data: MetricsData, names: Mapping[str, str]) -> MetricsData:
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


def with_produced(
    data: MetricsData,
    reader: MetricReader,
    producers: Sequence[Producer],
    resource: Resource,
) -> MetricsData:
    """`data` with each producer's metric added to its scope, under the provider's
    resource; in the order the producers were first measured, as the SDK lists its
    instruments (and new scopes after the SDK's)."""
    collected: list[tuple[int, InstrumentationScope, Metric]] = []
    for producer in producers:
        metric = producer.collect(reader)
        if metric is not None:
            collected.append((producer.order or 0, producer.scope, metric))
    if not collected:
        return data
    added: dict[InstrumentationScope, list[Metric]] = {}
    for _, scope, metric in sorted(collected, key=lambda item: item[0]):
        added.setdefault(scope, []).append(metric)
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


class _Kept(MetricExporter):
    """The self-test's exporter: keeps what it is given."""

    def __init__(self) -> None:
        self.preferred: dict[type, AggregationTemporality] = {
            SdkCounter: AggregationTemporality.DELTA
        }
        super().__init__(preferred_temporality=self.preferred, preferred_aggregation={})
        self.exported: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def producers_work() -> str | None:
    """None when a produced point arrives in an in-memory and a periodic reader's
    collections as expected (cumulative, and delta as the exporter prefers) with no SDK
    instrument measured; else what is missing or wrong. Never raises."""
    try:
        return _self_test()
    except Exception as error:  # noqa: BLE001 - a broken hook is reported, not raised
        return f"{type(error).__name__}: {error}"[:200]


def _self_test() -> str | None:
    exporter = _Kept()
    if exporter_preferences(exporter)["preferred_temporality"] != exporter.preferred:
        return "MetricExporter._preferred_temporality is not what the exporter was given"
    if not takes_explicit_buckets(exporter):
        return "MetricExporter._preferred_aggregation is not what the exporter was given"
    resource = Resource({"service.name": "aiva-fast-self-test"})
    registry = ProducerRegistry()
    memory = ProducingInMemoryReader(registry, resource)
    periodic = ProducingPeriodicReader(
        exporter, registry, resource, export_interval_millis=float("inf")
    )
    provider = MeterProvider(
        metric_readers=[memory, periodic], resource=resource, shutdown_on_exit=False
    )
    try:
        sums = ProducedSum(
            "aiva.fast.self_test",
            unit="{item}",
            description="",
            scope=InstrumentationScope("aiva.fast"),
            monotonic=True,
        )
        registry.add(sums)
        sums.add(("a",), {"a": "b"}, 2, None)
        cumulative = _value(memory.get_metrics_data(), resource)
        periodic.force_flush()
        delta = _value(exporter.exported[-1] if exporter.exported else None, resource)
    finally:
        provider.shutdown()
    if cumulative != (2, AggregationTemporality.CUMULATIVE):
        return f"the in-memory reader received {cumulative}, not the produced point"
    if delta != (2, AggregationTemporality.DELTA):
        return f"the periodic reader exported {delta}, not the produced delta point"
    return None


def _value(data: MetricsData | None, resource: Resource) -> Any:
    if data is None:
        return "nothing"
    for resource_metrics in data.resource_metrics:
        if resource_metrics.resource != resource:
            continue
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == "aiva.fast.self_test" and isinstance(metric.data, Sum):
                    point = metric.data.data_points[0]
                    return (point.value, metric.data.aggregation_temporality)
    return "no aiva.fast.self_test"
