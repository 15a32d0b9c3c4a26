"""The sums of aiva's Counter and UpDownCounter (aiva.telemetry.instruments): aggregated
once, under one lock, with the SDK's semantics, and handed to every reader of the
provider at collection as the SDK's own Sum points, as ProducedHistogram does for
histograms (aiva.telemetry.histogram)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Hashable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import Counter as SdkCounter
from opentelemetry.sdk.metrics import ExemplarFilter, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics import UpDownCounter as SdkUpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN

from aiva.telemetry.histogram import (
    _ASK,
    _TRACE_BASED,
    _DeltaState,
    _offer_mode,
    _Sample,
)

logger = logging.getLogger(__name__)


class _SumSeries:
    """One attribute set's sum, and its exemplar candidate since the last fold."""

    __slots__ = ("attributes", "offered", "sample", "start_ns", "value")

    def __init__(self, attributes: Mapping[str, Any], start_ns: int) -> None:
        self.attributes = attributes
        self.value: float = 0  # 0 + amounts: an int while every amount is, as the SDK's
        self.start_ns = start_ns
        self.sample: _Sample | None = None
        self.offered = 0


# A reader's exemplar of one series: [sample, how many were offered since its collection].
_SumReservoir = list[Any]


class ProducedSum:
    """A Counter's or UpDownCounter's sums with the SDK's semantics, aggregated once."""

    def __init__(
        self,
        name: str,
        *,
        unit: str,
        description: str,
        scope: InstrumentationScope,
        monotonic: bool,
        exemplar_filter: ExemplarFilter | None = None,
    ) -> None:
        self.scope = scope
        self.kind: type = SdkCounter if monotonic else SdkUpDownCounter
        self.order: int | None = None  # as ProducedHistogram.order
        self._name = name
        self._unit = unit
        self._description = description
        self._monotonic = monotonic
        self._filter = exemplar_filter or TraceBasedExemplarFilter()
        self.offer = _offer_mode(self._filter)
        self._lock = threading.Lock()
        self._fresh: dict[Hashable, _SumSeries] = {}
        self._totals: dict[Hashable, _SumSeries] = {}
        self._deltas: dict[int, _DeltaState] = {}
        self._reservoirs: dict[int, dict[Hashable, _SumReservoir]] = {}

    def attach(self, reader: object, temporality: AggregationTemporality) -> None:
        """As ProducedHistogram.attach."""
        with self._lock:
            self._reservoirs[id(reader)] = {}
            if temporality is AggregationTemporality.DELTA:
                self._deltas[id(reader)] = _DeltaState(time.time_ns())

    def add(
        self, key: Hashable, attributes: Mapping[str, Any], value: float, sample: _Sample | None
    ) -> None:
        with self._lock:
            series = self._fresh.get(key)
            if series is None:
                series = self._fresh[key] = _SumSeries(attributes, time.time_ns())
                if self.order is None:
                    self.order = time.perf_counter_ns()
            series.value = series.value + value
            if sample is not None:
                # Reservoir sampling of size 1, as SimpleFixedSizeExemplarReservoir(1).
                series.offered += 1
                if series.offered == 1 or random.random() * series.offered < 1:
                    series.sample = sample

    def collect(self, reader: object) -> Metric | None:
        """This reader's view, as the SDK's Metric; None when it has no point."""
        now_ns = time.time_ns()
        with self._lock:
            self._fold_fresh()
            reservoirs = self._reservoirs.get(id(reader))
            if reservoirs is None:  # not attached: a cumulative reader from now on
                reservoirs = self._reservoirs[id(reader)] = {}
            delta = self._deltas.get(id(reader))
            if delta is None:
                points = [
                    _point(s, s.value, s.start_ns, now_ns, reservoirs.get(key))
                    for key, s in self._totals.items()
                ]
                temporality = AggregationTemporality.CUMULATIVE
            else:
                series = delta.series
                points = [
                    _point(
                        series[key],
                        series[key].value,
                        delta.start_of(key, series[key]),
                        now_ns,
                        reservoirs.get(key),
                    )
                    for key in self._totals
                    if key in series
                ]
                delta.seen.update(series)
                delta.series = {}
                delta.since_ns = now_ns
                temporality = AggregationTemporality.DELTA
            reservoirs.clear()
        if not points:
            return None
        return Metric(
            name=self._name,
            description=self._description,
            unit=self._unit,
            data=Sum(
                data_points=points,
                aggregation_temporality=temporality,
                is_monotonic=self._monotonic,
            ),
        )

    def _fold_fresh(self) -> None:
        fresh, self._fresh = self._fresh, {}
        targets: list[dict[Hashable, _SumSeries]] = [
            self._totals,
            *(d.series for d in self._deltas.values()),
        ]
        for key, series in fresh.items():
            for target in targets:
                kept = target.get(key)
                if kept is None:
                    # The attributes of the series' first measurement ever, as the SDK's.
                    first = self._totals.get(key, series)
                    kept = target[key] = _SumSeries(first.attributes, series.start_ns)
                kept.value = kept.value + series.value
            if series.sample is not None:
                for reservoirs in self._reservoirs.values():
                    _keep_one(reservoirs, key, series.sample, series.offered)


def _keep_one(
    reservoirs: dict[Hashable, _SumReservoir], key: Hashable, sample: _Sample, offered: int
) -> None:
    """A reader's exemplar of `key` after `offered` more measurements whose uniform pick
    is `sample`: still uniform over all of them."""
    kept = reservoirs.get(key)
    if kept is None:
        reservoirs[key] = [sample, offered]
        return
    kept[1] += offered
    if random.random() * kept[1] < offered:
        kept[0] = sample


def _point(
    series: _SumSeries,
    value: float,
    start_ns: int,
    now_ns: int,
    reservoir: _SumReservoir | None,
) -> NumberDataPoint:
    from opentelemetry.sdk.metrics import Exemplar

    exemplars = []
    if reservoir is not None:
        sample_value, time_ns, span_id, trace_id = reservoir[0]
        exemplars.append(
            Exemplar({} if series.attributes else None, sample_value, time_ns, span_id, trace_id)
        )
    return NumberDataPoint(
        attributes=series.attributes,
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        value=value,
        exemplars=exemplars,
    )


def sample_of(
    offer: int,
    exemplar_filter: ExemplarFilter,
    value: float,
    measured: Mapping[str, Any] | None,
    context: Context | None,
) -> _Sample | None:
    """The measurement as an exemplar when the filter lets it be one (never for _OFF)."""
    span = trace.get_current_span(context)
    if offer == _TRACE_BASED:
        if span is INVALID_SPAN:
            return None
        span_context = span.get_span_context()
        if not span_context.trace_flags.sampled:
            return None
        return (value, time.time_ns(), span_context.span_id, span_context.trace_id)
    now_ns = time.time_ns()
    if offer == _ASK:
        from opentelemetry.context import get_current

        if not exemplar_filter.should_sample(value, now_ns, measured, context or get_current()):
            return None
    if span is INVALID_SPAN:
        return (value, now_ns, None, None)
    span_context = span.get_span_context()
    return (value, now_ns, span_context.span_id, span_context.trace_id)
