"""A histogram aggregated by aiva and handed to the SDK's metric readers at collection.

Written by hand for the one instrument recorded on every request,
`http.server.request.duration`. The SDK's synchronous `Histogram.record` hashes the
attribute dict (sorted, recursively), takes a lock per step and aggregates the
measurement once per reader: about 15 µs a request with the Prometheus and OTLP
readers, more than Starlette's own work. Here a measurement is keyed by a tuple the
caller already has (method, route template, status, scheme: bounded by construction),
aggregated once under one lock, and turned into the SDK's own point types when a
reader collects. The OpenTelemetry specification calls such a source a
MetricProducer; the Python SDK (1.45) has none, so `aiva.telemetry.metrics` gives its
two readers one.

Exemplars follow the SDK's explicit-bucket histogram under the same ExemplarFilter:
its AlignedHistogramBucketExemplarReservoir keeps, per reader, per point and per bucket,
the last measurement offered since that reader's previous collection (cumulative and
delta alike: a collection empties the reservoir). The caller hands over the span it
already holds, so the filter costs no context lookup on the request path. One
difference, on purpose: a measurement taken with no span (always_on) gives an exemplar
without ids, where the SDK's bucket keeps those of an earlier measurement in the same
bucket (1.45's ExemplarBucket.offer leaves them set), linking it to a trace it is not in.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Exemplar,
    ExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN, Span

# How `record` treats a measurement for the exemplar reservoir: the three filters of
# OTEL_METRICS_EXEMPLAR_FILTER by a test of one int, any other ExemplarFilter asked.
_OFF, _ON, _TRACE_BASED, _ASK = range(4)
# One bucket's exemplar: (value, time_unix_nano, span_id, trace_id), ids None without a span.
_Sample = tuple[float, int, int | None, int | None]
# A point's exemplar slots (one per bucket, None while none was offered), by series key.
_Reservoirs = dict[Hashable, list[_Sample | None]]


def _check_boundaries(boundaries: Sequence[float]) -> None:
    """Refuse what the SDK's explicit-bucket aggregation refuses: `record` bisects the
    boundaries, which would count unsorted ones silently wrong."""
    if not all(math.isfinite(bound) for bound in boundaries):
        raise ValueError(f"bucket boundaries must be finite: {list(boundaries)}")
    if any(low >= high for low, high in itertools.pairwise(boundaries)):
        raise ValueError(f"bucket boundaries must be strictly increasing: {list(boundaries)}")


class _Series:
    """One attribute set's counts: the explicit buckets, count, sum, min and max."""

    __slots__ = (
        "attributes", "bucket_counts", "count", "exemplars", "max", "min", "start_ns", "sum",
    )  # fmt: skip

    def __init__(self, attributes: Mapping[str, Any], buckets: int, start_ns: int) -> None:
        self.attributes = attributes
        self.bucket_counts = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.start_ns = start_ns
        # Only on a series recorded since the last collection: the last exemplar per bucket.
        self.exemplars: list[_Sample | None] | None = None

    def add(self, other: _Series) -> None:
        for index, count in enumerate(other.bucket_counts):
            self.bucket_counts[index] += count
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def point(
        self,
        start_ns: int,
        now_ns: int,
        bounds: Sequence[float],
        samples: list[_Sample | None] | None,
    ) -> HistogramDataPoint:
        return HistogramDataPoint(
            attributes=self.attributes,
            start_time_unix_nano=start_ns,
            time_unix_nano=now_ns,
            count=self.count,
            sum=self.sum,
            bucket_counts=tuple(self.bucket_counts),
            explicit_bounds=bounds,
            min=self.min,
            max=self.max,
            exemplars=_exemplars(samples, self.attributes),
        )


def _exemplars(
    samples: list[_Sample | None] | None, attributes: Mapping[str, Any]
) -> list[Exemplar]:
    """The SDK's exemplars of one point, by bucket. Their filtered_attributes are the
    measurement's attributes the point lacks: none here, as the SDK's bucket gives them
    (an empty dict, or None for a measurement without attributes)."""
    if samples is None:
        return []
    return [
        Exemplar({} if attributes else None, value, time_ns, span_id, trace_id)
        for value, time_ns, span_id, trace_id in filter(None, samples)
    ]


class _DeltaState:
    """What one delta-temporality reader has not collected yet."""

    def __init__(self, start_ns: int) -> None:
        self.series: dict[Hashable, Any] = {}  # _Series (or instruments' _SumSeries)
        self.seen: set[Hashable] = set()  # reported before: their points start at since_ns
        self.since_ns = start_ns

    def start_of(self, key: Hashable, series: Any) -> int:
        """As the SDK's delta points: from the last collection, or from the first
        measurement for a series new since then."""
        return self.since_ns if key in self.seen else max(self.since_ns, series.start_ns)


class ProducedHistogram:
    """An explicit-bucket histogram with the SDK's semantics, aggregated outside the SDK.

    `record` is called on the serving thread; `collect` on the readers' threads. Every
    reader sees every measurement once: cumulative readers the running totals since
    start, delta readers what came since their own previous collection, and each its
    own exemplars since its previous collection.
    """

    # The instrument kind a reader's preferred temporality is looked up by.
    kind: type = SdkHistogram

    def __init__(
        self,
        name: str,
        *,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        scope: InstrumentationScope,
        exemplar_filter: ExemplarFilter | None = None,
    ) -> None:
        """`exemplar_filter`: the meter provider's (default: trace_based, as aiva's)."""
        _check_boundaries(boundaries)
        self.scope = scope
        self._name = name
        self._unit = unit
        self._description = description
        self._bounds = tuple(boundaries)
        self._filter = exemplar_filter or TraceBasedExemplarFilter()
        self._offer = _offer_mode(self._filter)
        self._lock = threading.Lock()
        self._fresh: dict[Hashable, _Series] = {}  # recorded since the last collection
        self._totals: dict[Hashable, _Series] = {}  # for cumulative readers
        self._deltas: dict[int, _DeltaState] = {}  # per delta reader, by id()
        self._reservoirs: dict[int, _Reservoirs] = {}  # per reader, by id()
        # When first recorded (perf_counter_ns): the SDK lists a scope's metrics in the
        # order their instruments were first measured, and aiva's producers follow it.
        self.order: int | None = None

    def attach(self, reader: object, temporality: AggregationTemporality) -> None:
        """Register a reader before it first collects; delta readers get their own state."""
        with self._lock:
            self._reservoirs[id(reader)] = {}
            if temporality is AggregationTemporality.DELTA:
                self._deltas[id(reader)] = _DeltaState(time.time_ns())

    def record(
        self,
        key: Hashable,
        attributes: Mapping[str, Any],
        value: float,
        span: Span | None = None,
        context: Context | None = None,
    ) -> None:
        """One measurement; `key` stands for `attributes` (same key, same attributes).

        `span`: the span current while the measurement is taken (the server span), or
        None to look the current one up, as the SDK does, when the filter needs it.
        `context`: the measurement's context when the caller gave one (then `span` is
        its span), which a filter of the user's own is asked with.
        """
        sample = None if self._offer == _OFF else self._sample(value, attributes, span, context)
        # Bucket i holds (bounds[i-1], bounds[i]], as the SDK's aggregation does.
        index = bisect_left(self._bounds, value)
        with self._lock:
            series = self._fresh.get(key)
            if series is None:
                series = self._fresh[key] = _Series(
                    attributes, len(self._bounds) + 1, time.time_ns()
                )
                if self.order is None:
                    self.order = time.perf_counter_ns()
            series.bucket_counts[index] += 1
            series.count += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value
            if sample is not None:
                if series.exemplars is None:
                    series.exemplars = [None] * len(series.bucket_counts)
                series.exemplars[index] = sample  # the last one offered, as the SDK keeps

    def _sample(
        self,
        value: float,
        attributes: Mapping[str, Any],
        span: Span | None,
        context: Context | None = None,
    ) -> _Sample | None:
        """The measurement as an exemplar when the filter lets it be one, else None."""
        if span is None:
            span = trace.get_current_span()
        if self._offer == _TRACE_BASED:
            # TraceBasedExemplarFilter: a span in the context, and its context sampled.
            if span is INVALID_SPAN:
                return None
            ids = span.get_span_context()
            if not ids.trace_flags.sampled:
                return None
            return (value, time.time_ns(), ids.span_id, ids.trace_id)
        if context is None:
            context = otel_context.get_current()
        if self._offer == _ASK and not self._filter.should_sample(
            value, time.time_ns(), attributes, context
        ):
            return None
        if span is INVALID_SPAN:  # no span: the SDK's bucket keeps no ids
            return (value, time.time_ns(), None, None)
        ids = span.get_span_context()
        return (value, time.time_ns(), ids.span_id, ids.trace_id)

    def collect(self, reader: object) -> Metric | None:
        """This reader's view, as the SDK's Metric; None when nothing was ever recorded."""
        now_ns = time.time_ns()
        with self._lock:
            self._fold_fresh()
            reservoirs = self._reservoirs.get(id(reader))
            if reservoirs is None:  # not attached: a cumulative reader from now on
                reservoirs = self._reservoirs[id(reader)] = {}
            delta = self._deltas.get(id(reader))
            if delta is None:
                points = [
                    s.point(s.start_ns, now_ns, self._bounds, reservoirs.get(key))
                    for key, s in self._totals.items()
                ]
                temporality = AggregationTemporality.CUMULATIVE
            else:
                # In the order the series were first recorded, as the SDK's delta points.
                series = delta.series
                points = [
                    series[key].point(
                        delta.start_of(key, series[key]), now_ns, self._bounds, reservoirs.get(key)
                    )
                    for key in self._totals
                    if key in series
                ]
                delta.seen.update(delta.series)
                delta.series = {}
                delta.since_ns = now_ns
                temporality = AggregationTemporality.DELTA
            reservoirs.clear()  # collected, as the SDK's reservoir empties on collect
        if not points:
            return None
        return Metric(
            name=self._name,
            description=self._description,
            unit=self._unit,
            data=Histogram(data_points=points, aggregation_temporality=temporality),
        )

    def _fold_fresh(self) -> None:
        """Move what was recorded since the last collection into every reader's state."""
        fresh, self._fresh = self._fresh, {}
        targets = [self._totals, *(d.series for d in self._deltas.values())]
        for key, series in fresh.items():
            for target in targets:
                kept = target.get(key)
                if kept is None:
                    # The attributes of the series' first measurement ever, as the SDK's.
                    first = self._totals.get(key, series)
                    kept = target[key] = _Series(
                        first.attributes, len(series.bucket_counts), series.start_ns
                    )
                kept.add(series)
            if series.exemplars is not None:
                for reservoirs in self._reservoirs.values():
                    _keep_latest(reservoirs, key, series.exemplars)


def _keep_latest(reservoirs: _Reservoirs, key: Hashable, samples: list[_Sample | None]) -> None:
    """A reader's reservoir of `key` after the later `samples`: each bucket offered again
    holds the newer measurement."""
    kept = reservoirs.get(key)
    if kept is None:
        reservoirs[key] = list(samples)
        return
    for index, sample in enumerate(samples):
        if sample is not None:
            kept[index] = sample


def _offer_mode(exemplar_filter: ExemplarFilter) -> int:
    # Exact classes: a subclass may override should_sample, so it is asked.
    kind = type(exemplar_filter)
    if kind is AlwaysOffExemplarFilter:
        return _OFF
    if kind is AlwaysOnExemplarFilter:
        return _ON
    if kind is TraceBasedExemplarFilter:
        return _TRACE_BASED
    return _ASK
