"""The collector `/metrics` renders: the Prometheus reader's collection, merged across
workers when there are several (aiva.telemetry.metrics_share), turned into
prometheus_client families, with histogram exemplars on their buckets.

The OpenTelemetry Prometheus exporter (0.66b1) renders no exemplars (its pull request
has been open for years), and its collector collects by itself when asked. aiva keeps
its translation from OpenTelemetry points to Prometheus families (names, units, scope
labels: the compatibility specification, which tests/conformance holds aiva to) and
drives it here: collect once, merge, translate, then put each point's exemplars on the
bucket samples of that point. prometheus_client's OpenMetrics encoder writes them as
`# {trace_id="...",span_id="..."} value timestamp`; the 0.0.4 text format has none.

The SDK's exemplar reservoirs empty at each collection, and with several workers the
snapshot thread collects every second: the newest exemplar of each bucket is remembered
here (ExemplarMemory), so a scrape shows it until a newer one replaces it (Prometheus
stores an exemplar it already has once).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.samples import Exemplar as PrometheusExemplar

from aiva.fast.prometheus import map_unit, sanitize_attribute, sanitize_full_name, translator
from aiva.telemetry.metrics_share import MetricsShare
from aiva.telemetry.metrics_snapshot import bucket_index

# (family name, the sample's labels without `le` and without empty values) -> exemplar by le
_ExemplarIndex = dict[tuple[str, frozenset[tuple[str, str]]], dict[str, PrometheusExemplar]]


class ExpositionCollector:
    """A prometheus_client collector: `collect_own` collects this worker's metrics
    (the reader's collection with aiva's producers); `share`, with several workers,
    merges them with the others'. Collections are serialized: a scrape and the snapshot
    thread never collect at the same time."""

    def __init__(
        self,
        collect_own: Callable[[], MetricsData | None],
        share: MetricsShare | None = None,
    ) -> None:
        self._collect_own = collect_own
        self._share = share
        self._lock = threading.Lock()
        self._translator = translator()
        self._exemplars = ExemplarMemory()

    def describe(self) -> list[Family]:
        # Without it an auto-describing registry would collect at registration.
        return []

    def collect(self) -> list[Family]:
        with self._lock:
            data = self._own()
            if data is None:
                return []
            if self._share is not None:
                data = self._share.merged(data)
            self._translator.add_metrics_data(data)
            families = list(self._translator.collect())
        return with_exemplars(families, data)

    def publish(self) -> None:
        """Write this worker's snapshot (the snapshot thread's tick)."""
        if self._share is None:
            return
        with self._lock:
            data = self._own()
            if data is not None:
                self._share.publish(data)

    def _own(self) -> MetricsData | None:
        data = self._collect_own()
        return None if data is None else self._exemplars.filled(data)


class ExemplarMemory:
    """The newest exemplar of each histogram bucket seen in this worker's collections."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str, str], dict[int, Exemplar]] = {}

    def filled(self, data: MetricsData) -> MetricsData:
        """`data` with each histogram point's exemplars completed from earlier
        collections (one per bucket, the newest); forgets series no longer collected."""
        kept: dict[tuple[str, str, str], dict[int, Exemplar]] = {}

        def fill(scope: InstrumentationScope, metric: Metric) -> Metric:
            if not isinstance(metric.data, Histogram):
                return metric
            points = []
            for point in metric.data.data_points:
                key = (scope.name, metric.name, _attributes_key(point.attributes))
                buckets = dict(self._kept.get(key, {}))
                for exemplar in point.exemplars:
                    index = bucket_index(exemplar.value, point.explicit_bounds)
                    known = buckets.get(index)
                    if known is None or exemplar.time_unix_nano >= known.time_unix_nano:
                        buckets[index] = exemplar
                if buckets:
                    kept[key] = buckets
                    point = replace(point, exemplars=[buckets[i] for i in sorted(buckets)])
                points.append(point)
            return replace(metric, data=replace(metric.data, data_points=points))

        filled = _map_metrics(data, fill)
        self._kept = kept
        return filled


def _map_metrics(
    data: MetricsData, change: Callable[[InstrumentationScope, Metric], Metric]
) -> MetricsData:
    return MetricsData(
        [
            ResourceMetrics(
                rm.resource,
                [
                    ScopeMetrics(sm.scope, [change(sm.scope, m) for m in sm.metrics], sm.schema_url)
                    for sm in rm.scope_metrics
                ],
                rm.schema_url,
            )
            for rm in data.resource_metrics
        ]
    )


def _attributes_key(attributes: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(attributes or {}), sort_keys=True, default=str)


def with_exemplars(families: Iterable[Family], data: MetricsData) -> list[Family]:
    """`families` with each histogram bucket sample carrying its point's exemplar for
    that bucket, if it has one with a trace id (an exemplar is there to link to one)."""
    index = _exemplar_index(data)
    if not index:
        return list(families)
    result = []
    for family in families:
        if family.type == "histogram":
            bucket = family.name + "_bucket"
            samples = []
            for sample in family.samples:
                if sample.name == bucket:
                    labels = frozenset(
                        (k, v) for k, v in sample.labels.items() if k != "le" and v != ""
                    )
                    found = index.get((family.name, labels), {}).get(sample.labels.get("le", ""))
                    if found is not None:
                        sample = sample._replace(exemplar=found)
                samples.append(sample)
            family.samples = samples
        result.append(family)
    return result


def _exemplar_index(data: MetricsData) -> _ExemplarIndex:
    index: _ExemplarIndex = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            scope_labels = _scope_labels(scope_metrics.scope)
            for metric in scope_metrics.metrics:
                if not isinstance(metric.data, Histogram):
                    continue
                name = family_name(metric.name, metric.unit or "")
                for point in metric.data.data_points:
                    by_le = _bucket_exemplars(point)
                    if by_le:
                        labels = {**scope_labels, **_point_labels(point.attributes)}
                        key = frozenset((k, v) for k, v in labels.items() if v != "")
                        index[(name, key)] = by_le
    return index


def family_name(name: str, unit: str) -> str:
    """The Prometheus family name the exporter gives a metric (prometheus_client's
    Metric appends the unit unless the name ends with it)."""
    full, suffix = sanitize_full_name(name), map_unit(unit)
    return full if not suffix or full.endswith("_" + suffix) else f"{full}_{suffix}"


def _bucket_exemplars(point: HistogramDataPoint) -> dict[str, PrometheusExemplar]:
    bounds = list(point.explicit_bounds)
    les = [f"{bound}" for bound in bounds] + ["+Inf"]  # as the exporter writes `le`
    found: dict[str, PrometheusExemplar] = {}
    for exemplar in point.exemplars:
        if not exemplar.trace_id or not exemplar.span_id:
            continue
        le = les[bucket_index(exemplar.value, bounds)]
        found[le] = PrometheusExemplar(
            {"trace_id": format(exemplar.trace_id, "032x"),
             "span_id": format(exemplar.span_id, "016x")},
            exemplar.value,
            exemplar.time_unix_nano / 1e9,
        )  # fmt: skip
    return found


def _scope_labels(scope: InstrumentationScope) -> dict[str, str]:
    """The exporter's scope labels (scope_info_enabled, its default)."""
    labels = {
        sanitize_attribute("otel_scope_" + key): _label_value(value)
        for key, value in (scope.attributes or {}).items()
    }
    labels["otel_scope_name"] = scope.name or ""
    labels["otel_scope_version"] = scope.version or ""
    labels["otel_scope_schema_url"] = scope.schema_url or ""
    return labels


def _point_labels(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    return {sanitize_attribute(k): _label_value(v) for k, v in (attributes or {}).items()}


def _label_value(value: object) -> str:
    # The exporter's _check_value: strings as they are, anything else as JSON.
    return value if isinstance(value, str) else json.dumps(value, default=str)
