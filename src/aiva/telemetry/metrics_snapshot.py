"""One worker's collected metrics as a snapshot file, and the rules that merge the
snapshots of every worker into the service's one exposition (aiva.telemetry.metrics_share
writes and reads the files; this module is pure logic).

A snapshot keeps what the OpenTelemetry data model knows and the Prometheus families
lose: whether a sum is monotonic. The merge rules follow from it:

- monotonic counters and histograms (buckets, count, sum): summed over every worker that
  ever wrote, a dead worker's last snapshot included, so that a worker's death or
  replacement never looks like a counter reset to `rate()` and `increase()`;
- per-process series (`process.*`, `cpython.*`: memory, CPU time, threads, file
  descriptors, uptime, GC): kept apart under `service.instance.id` (the worker's own
  resource id, which its OTLP points carry too, so a Prometheus series and the worker's
  traces and logs share one value), and gone with their worker;
- non-monotonic sums (`http.server.active_requests`, ...): summed over live workers;
- everything else (gauges such as `aiva.health.*`, host-wide `system.*`): the answering
  worker's own, so the service shows one status.

Histogram exemplars merge per bucket: the newest one across workers.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import orjson
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

FORMAT = 1
INSTANCE_ATTRIBUTE = "service.instance.id"
PER_PROCESS_PREFIXES = ("process.", "cpython.")
HOST_WIDE_PREFIXES = ("system.",)

Kind = Literal["counter", "updowncounter", "gauge", "histogram"]
Rule = Literal["ever", "live", "answering", "per_process"]
_KINDS: frozenset[str] = frozenset(("counter", "updowncounter", "gauge", "histogram"))


class SnapshotError(ValueError):
    """A snapshot file that is not one aiva wrote (torn, truncated, foreign)."""


@dataclass(frozen=True, slots=True)
class ExemplarSample:
    """A bucket's exemplar: the measurement and the span it was recorded in."""

    value: float
    time_unix_nano: int
    trace_id: int | None
    span_id: int | None


@dataclass(frozen=True, slots=True)
class NumberPoint:
    attributes: Mapping[str, Any]
    start: int | None  # None for a gauge's
    time: int
    value: float


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    attributes: Mapping[str, Any]
    start: int
    time: int
    count: int
    sum: float
    bucket_counts: tuple[int, ...]
    bounds: tuple[float, ...]
    min: float
    max: float
    exemplars: tuple[ExemplarSample, ...] = ()


Point = NumberPoint | HistogramPoint


@dataclass(frozen=True, slots=True)
class SharedMetric:
    scope: InstrumentationScope
    name: str
    description: str
    unit: str
    kind: Kind
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One worker's metrics: `started` (the process's start time) tells a live worker
    from another process that got the same pid later."""

    pid: int
    started: float
    instance: str
    metrics: tuple[SharedMetric, ...]


def rule_for(name: str, kind: Kind) -> Rule:
    if name.startswith(PER_PROCESS_PREFIXES):
        return "per_process"
    if name.startswith(HOST_WIDE_PREFIXES) or kind == "gauge":
        return "answering"
    return "live" if kind == "updowncounter" else "ever"


# ---------------------------------------------------------------------------------------
# MetricsData -> Snapshot, Snapshot <-> bytes


def snapshot_of(
    data: MetricsData, pid: int, started: float, instance: str
) -> tuple[Snapshot, list[tuple[InstrumentationScope, Metric]]]:
    """The shareable part of a collection, and what no snapshot can hold (an
    exponential histogram: the answering worker's own is shown as it is)."""
    shared: list[SharedMetric] = []
    unshared: list[tuple[InstrumentationScope, Metric]] = []
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                converted = _shared_metric(scope_metrics.scope, metric)
                if converted is None:
                    unshared.append((scope_metrics.scope, metric))
                else:
                    shared.append(converted)
    return Snapshot(pid, started, instance, tuple(shared)), unshared


def _shared_metric(scope: InstrumentationScope, metric: Metric) -> SharedMetric | None:
    data = metric.data
    kind: Kind
    points: tuple[Point, ...]
    if isinstance(data, Sum):
        if data.aggregation_temporality != AggregationTemporality.CUMULATIVE:
            return None
        kind = "counter" if data.is_monotonic else "updowncounter"
        points = tuple(_number_point(p) for p in data.data_points)
    elif isinstance(data, Gauge):
        kind, points = "gauge", tuple(_number_point(p) for p in data.data_points)
    elif isinstance(data, Histogram):
        kind, points = "histogram", tuple(_histogram_point(p) for p in data.data_points)
    else:
        return None
    return SharedMetric(scope, metric.name, metric.description or "", metric.unit or "", kind,
                        points)  # fmt: skip


def _number_point(point: NumberDataPoint) -> NumberPoint:
    return NumberPoint(
        dict(point.attributes or {}), point.start_time_unix_nano, point.time_unix_nano,
        point.value,
    )  # fmt: skip


def _histogram_point(point: HistogramDataPoint) -> HistogramPoint:
    return HistogramPoint(
        dict(point.attributes or {}),
        point.start_time_unix_nano,
        point.time_unix_nano,
        point.count,
        point.sum,
        tuple(point.bucket_counts),
        tuple(point.explicit_bounds),
        point.min,
        point.max,
        tuple(
            ExemplarSample(e.value, e.time_unix_nano, e.trace_id, e.span_id)
            for e in point.exemplars
        ),
    )


def encode(snapshot: Snapshot) -> bytes:
    """JSON (orjson: a snapshot of ~150 points encodes in well under a millisecond).
    Ids go as hex (128-bit trace ids exceed JSON's safe integers), infinities as null."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "pid": snapshot.pid,
            "started": snapshot.started,
            "instance": snapshot.instance,
            "metrics": [_metric_json(m) for m in snapshot.metrics],
        },
        default=str,  # an attribute value orjson cannot write (bytes): its text
    )


def _metric_json(metric: SharedMetric) -> dict[str, Any]:
    scope = metric.scope
    return {
        "scope": [scope.name, scope.version, scope.schema_url, dict(scope.attributes or {})],
        "name": metric.name,
        "description": metric.description,
        "unit": metric.unit,
        "kind": metric.kind,
        "points": [_point_json(p) for p in metric.points],
    }


def _point_json(point: Point) -> list[Any]:
    if isinstance(point, NumberPoint):
        return [point.attributes, point.start, point.time, point.value]
    exemplars = [
        [e.value, e.time_unix_nano, _hex(e.trace_id, 32), _hex(e.span_id, 16)]
        for e in point.exemplars
    ]
    return [
        point.attributes, point.start, point.time, point.count, point.sum,
        point.bucket_counts, point.bounds, _finite(point.min), _finite(point.max), exemplars,
    ]  # fmt: skip


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else format(value, f"0{width}x")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def decode(raw: bytes) -> Snapshot:
    """The snapshot in `raw`; SnapshotError for anything else (checked whole, so that a
    file a merge accepts cannot fail the merge later)."""
    try:
        document = orjson.loads(raw)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise SnapshotError("not an aiva metrics snapshot (format 1)")
        return Snapshot(
            _int(document["pid"]),
            float(document["started"]),
            _str(document["instance"]),
            tuple(_decoded_metric(m) for m in _list(document["metrics"])),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise SnapshotError(str(error) or type(error).__name__) from error


def _decoded_metric(raw: Any) -> SharedMetric:
    if not isinstance(raw, dict):
        raise SnapshotError("a metric is no object")
    kind = raw["kind"]
    if kind not in _KINDS:
        raise SnapshotError(f"unknown kind {kind!r}")
    name, version, schema_url, attributes = _list(raw["scope"])
    scope = InstrumentationScope(_str(name), version, schema_url, _dict(attributes) or None)
    decode_point = _decoded_histogram_point if kind == "histogram" else _decoded_number_point
    return SharedMetric(
        scope, _str(raw["name"]), _str(raw["description"]), _str(raw["unit"]), kind,
        tuple(decode_point(p) for p in _list(raw["points"])),
    )  # fmt: skip


def _decoded_number_point(raw: Any) -> NumberPoint:
    attributes, start, time, value = _list(raw)
    return NumberPoint(
        _dict(attributes), None if start is None else _int(start), _int(time), _number(value)
    )


def _decoded_histogram_point(raw: Any) -> HistogramPoint:
    attributes, start, time, count, total, counts, bounds, low, high, exemplars = _list(raw)
    bucket_counts = tuple(_int(c) for c in _list(counts))
    explicit = tuple(float(_number(b)) for b in _list(bounds))
    if len(bucket_counts) != len(explicit) + 1:
        raise SnapshotError("bucket counts do not match the boundaries")
    return HistogramPoint(
        _dict(attributes), _int(start), _int(time), _int(count), _number(total),
        bucket_counts, explicit,
        math.inf if low is None else _number(low), -math.inf if high is None else _number(high),
        tuple(_decoded_exemplar(e) for e in _list(exemplars)),
    )  # fmt: skip


def _decoded_exemplar(raw: Any) -> ExemplarSample:
    value, time, trace_id, span_id = _list(raw)
    return ExemplarSample(
        _number(value), _int(time),
        None if trace_id is None else int(_str(trace_id), 16),
        None if span_id is None else int(_str(span_id), 16),
    )  # fmt: skip


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise SnapshotError("a list expected")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnapshotError("an object expected")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise SnapshotError("a string expected")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SnapshotError("an integer expected")
    return value


def _number(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SnapshotError("a number expected")
    return value


# ---------------------------------------------------------------------------------------
# The merge


@dataclass
class _Merged:
    """One metric of the merged exposition, its points by attribute key."""

    metric: SharedMetric
    points: dict[str, Point] = field(default_factory=dict)


def merge(
    own: Snapshot,
    others: Iterable[Snapshot],
    alive: Callable[[Snapshot], bool],
    resource: Resource,
    unshared: Sequence[tuple[InstrumentationScope, Metric]] = (),
) -> MetricsData:
    """The service's metrics: `own` (the answering worker's fresh collection) with
    `others` (every other snapshot on disk) by the rules of the module docstring."""
    merged: dict[tuple[str, str], _Merged] = {}
    for snapshot, role in _roles(own, others, alive):
        for metric in snapshot.metrics:
            rule = rule_for(metric.name, metric.kind)
            if (rule == "answering" and role != "own") or (
                rule in ("live", "per_process") and role == "dead"
            ):
                continue
            key = (_scope_key(metric.scope), metric.name)
            target = merged.setdefault(key, _Merged(metric))
            if (target.metric.kind, target.metric.unit) != (metric.kind, metric.unit):
                continue  # a worker of another version of the service: cannot be added
            for point in metric.points:
                if rule == "per_process":
                    point = _with_instance(point, snapshot.instance)
                _add_point(target.points, point)
    return _metrics_data(merged.values(), resource, unshared)


def _roles(
    own: Snapshot, others: Iterable[Snapshot], alive: Callable[[Snapshot], bool]
) -> Iterable[tuple[Snapshot, Literal["own", "live", "dead"]]]:
    yield own, "own"
    for snapshot in others:
        if (snapshot.pid, snapshot.started) != (own.pid, own.started):
            yield snapshot, "live" if alive(snapshot) else "dead"


def _scope_key(scope: InstrumentationScope) -> str:
    attributes = dict(scope.attributes or {})
    return json.dumps([scope.name, scope.version, scope.schema_url, attributes],
                      sort_keys=True, default=str)  # fmt: skip


def _with_instance(point: Point, instance: str) -> Point:
    attributes = {**point.attributes, INSTANCE_ATTRIBUTE: instance}
    if isinstance(point, NumberPoint):
        return NumberPoint(attributes, point.start, point.time, point.value)
    return HistogramPoint(
        attributes, point.start, point.time, point.count, point.sum, point.bucket_counts,
        point.bounds, point.min, point.max, point.exemplars,
    )  # fmt: skip


def _add_point(points: dict[str, Point], point: Point) -> None:
    key = json.dumps(point.attributes, sort_keys=True, default=str)
    present = points.get(key)
    if present is None:
        points[key] = point
    elif isinstance(present, NumberPoint) and isinstance(point, NumberPoint):
        starts = [s for s in (present.start, point.start) if s is not None]
        points[key] = NumberPoint(
            present.attributes, min(starts) if starts else None,
            max(present.time, point.time), present.value + point.value,
        )  # fmt: skip
    elif (
        isinstance(present, HistogramPoint)
        and isinstance(point, HistogramPoint)
        and present.bounds == point.bounds
    ):
        points[key] = _added_histograms(present, point)
    # Histograms with other boundaries (a worker on other settings) cannot be added:
    # the first one stays.


def _added_histograms(a: HistogramPoint, b: HistogramPoint) -> HistogramPoint:
    return HistogramPoint(
        a.attributes,
        min(a.start, b.start),
        max(a.time, b.time),
        a.count + b.count,
        a.sum + b.sum,
        tuple(x + y for x, y in zip(a.bucket_counts, b.bucket_counts, strict=True)),
        a.bounds,
        min(a.min, b.min),
        max(a.max, b.max),
        newest_per_bucket((*a.exemplars, *b.exemplars), a.bounds),
    )


def bucket_index(value: float, bounds: Sequence[float]) -> int:
    """The bucket a value falls into: (bounds[i-1], bounds[i]], as the SDK counts."""
    return bisect_left(bounds, value)


def newest_per_bucket(
    exemplars: Iterable[ExemplarSample], bounds: Sequence[float]
) -> tuple[ExemplarSample, ...]:
    """At most one exemplar per bucket, the newest, in bucket order."""
    newest: dict[int, ExemplarSample] = {}
    for exemplar in exemplars:
        index = bucket_index(exemplar.value, bounds)
        kept = newest.get(index)
        if kept is None or exemplar.time_unix_nano > kept.time_unix_nano:
            newest[index] = exemplar
    return tuple(newest[i] for i in sorted(newest))


def _metrics_data(
    merged: Iterable[_Merged],
    resource: Resource,
    unshared: Sequence[tuple[InstrumentationScope, Metric]],
) -> MetricsData:
    scopes: dict[str, tuple[InstrumentationScope, list[Metric]]] = {}
    for entry in merged:
        scope = entry.metric.scope
        metrics = scopes.setdefault(_scope_key(scope), (scope, []))[1]
        metrics.append(_sdk_metric(entry.metric, list(entry.points.values())))
    for scope, metric in unshared:
        scopes.setdefault(_scope_key(scope), (scope, []))[1].append(metric)
    return MetricsData(
        [
            ResourceMetrics(
                resource,
                [ScopeMetrics(s, m, s.schema_url or "") for s, m in scopes.values()],
                resource.schema_url,
            )
        ]
    )


def _sdk_metric(metric: SharedMetric, points: list[Point]) -> Metric:
    cumulative = AggregationTemporality.CUMULATIVE
    numbers = [p for p in points if isinstance(p, NumberPoint)]
    data: Sum | Gauge | Histogram
    if metric.kind == "histogram":
        data = Histogram(
            [_sdk_histogram_point(p) for p in points if isinstance(p, HistogramPoint)],
            cumulative,
        )
    elif metric.kind == "gauge":
        data = Gauge([_sdk_number_point(p) for p in numbers])
    else:
        data = Sum([_sdk_number_point(p) for p in numbers], cumulative,
                   metric.kind == "counter")  # fmt: skip
    return Metric(metric.name, metric.description, metric.unit, data)


def _sdk_number_point(point: NumberPoint) -> NumberDataPoint:
    # The SDK's own gauge points carry None as their start (1.45), whatever the annotation.
    start = cast(int, point.start)
    return NumberDataPoint(dict(point.attributes), start, point.time, point.value)


def _sdk_histogram_point(point: HistogramPoint) -> HistogramDataPoint:
    return HistogramDataPoint(
        dict(point.attributes), point.start, point.time, point.count, point.sum,
        point.bucket_counts, point.bounds, point.min, point.max,
        [Exemplar(None, e.value, e.time_unix_nano, e.span_id, e.trace_id)
         for e in point.exemplars],
    )  # fmt: skip
