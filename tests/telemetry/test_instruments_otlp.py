"""aiva's lean instruments against the SDK's for the same calls, byte for byte at the OTLP
level (the SDK's own encoder), cumulative and delta, under each exemplar filter."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Counter,
    ExemplarFilter,
    Histogram,
    MeterProvider,
    TraceBasedExemplarFilter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from aiva.fast.producers import ProducingInMemoryReader
from aiva.telemetry.instruments import (
    LeanInstruments,
    LeanMeter,
    LeanMeterProvider,
    ProducerRegistry,
    meter_of,
)
from aiva.telemetry.metrics import bucket_views

RESOURCE = Resource({"service.name": "instruments-test"})
BUCKETS = {"shop.configured": (0.5, 1.0, 2.0)}
FILTERS: dict[str, Callable[[], ExemplarFilter]] = {
    "trace_based": TraceBasedExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
}
DELTA = {kind: AggregationTemporality.DELTA for kind in (Counter, UpDownCounter, Histogram)}


class Pair:
    """The SDK's provider and aiva's, each with the same readers' preferences."""

    def __init__(
        self,
        exemplar_filter: Callable[[], ExemplarFilter],
        temporalities: Sequence[dict[type, Any]],
    ) -> None:
        self.sdk_readers: list[MetricReader] = [
            InMemoryMetricReader(preferred_temporality=t) for t in temporalities
        ]
        self.sdk = MeterProvider(
            metric_readers=self.sdk_readers,
            resource=RESOURCE,
            views=bucket_views(BUCKETS),
            exemplar_filter=exemplar_filter(),
            shutdown_on_exit=False,
        )
        registry = ProducerRegistry()
        self.lean_readers: list[MetricReader] = [
            ProducingInMemoryReader(registry, RESOURCE, t) for t in temporalities
        ]
        lean_filter = exemplar_filter()
        self.lean = LeanMeterProvider(
            metric_readers=self.lean_readers,
            resource=RESOURCE,
            views=bucket_views(BUCKETS),
            exemplar_filter=lean_filter,
            shutdown_on_exit=False,
            lean=LeanInstruments(registry, lean_filter, BUCKETS),
        )

    def meters(self) -> tuple[Meter, Meter]:
        lean = meter_of(self.lean, "shop", "1.0")
        assert isinstance(lean, LeanMeter)
        return self.sdk.get_meter("shop", "1.0"), lean

    def collect(self, index: int = 0) -> tuple[MetricsData | None, MetricsData | None]:
        sdk, lean = self.sdk_readers[index], self.lean_readers[index]
        assert isinstance(sdk, InMemoryMetricReader) and isinstance(lean, InMemoryMetricReader)
        return sdk.get_metrics_data(), lean.get_metrics_data()

    def shutdown(self) -> None:
        self.sdk.shutdown()
        self.lean.shutdown()


def _span(rng: random.Random, sampled: bool) -> Any:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return NonRecordingSpan(
        SpanContext(rng.getrandbits(128), rng.getrandbits(64), False, trace_flags=flags)
    )


class Normalised:
    """One side's encoded collections with the timestamps that must differ replaced:

    - a point's time_unix_nano (each side reads its own clock when it collects) by the
      number of the collection;
    - its start_time_unix_nano by the number of the earlier collection it equals (a delta
      point starts at the previous collection), else by -1 (the series' first
      measurement, as the SDK starts it) after checking it is not after the point;
    - an exemplar's time_unix_nano (the measurement's own clock) by 0.
    Everything else (values, attributes, order, buckets, exemplar values and ids) is
    compared as the SDK's encoder writes it.
    """

    def __init__(self) -> None:
        self.times: dict[int, int] = {}  # a collection's point time -> its number

    def __call__(self, data: MetricsData | None, number: int) -> bytes:
        if data is None:
            return b""
        request = encode_metrics(data)
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        assert point.start_time_unix_nano <= point.time_unix_nano
                        start = self.times.get(point.start_time_unix_nano, -1)
                        self.times.setdefault(point.time_unix_nano, number)
                        point.time_unix_nano = number
                        point.start_time_unix_nano = start & 0xFFFFFFFF
                        for exemplar in point.exemplars:
                            exemplar.time_unix_nano = 0
        return request.SerializeToString(deterministic=True)


Calls = Callable[[Meter, int, random.Random], None]


def _same_points(pair: Pair, calls: Calls, rounds: int, reader: int = 0) -> None:
    """`calls` on both sides, collected `rounds` times: equal bytes each time."""
    sdk_norm, lean_norm = Normalised(), Normalised()
    sdk_meter, lean_meter = pair.meters()
    for number in range(1, rounds + 1):
        for meter in (sdk_meter, lean_meter):
            calls(meter, number, random.Random(number))  # the same calls, spans included
        sdk, lean = pair.collect(reader)
        assert lean_norm(lean, number) == sdk_norm(sdk, number), f"collection {number}"


ATTRIBUTE_SETS: list[Any] = [
    {"shop.region": "eu", "shop.tier": "gold"},
    {"shop.tier": "gold", "shop.region": "eu"},  # the same set, another order
    {"shop.ok": True},
    {"shop.ok": 1},  # the SDK keeps True and 1 apart
    {"shop.ok": 1.0},
    {"shop.count": 3, "shop.ratio": 0.5, "shop.tags": ["a", "b"]},
    {"shop.raw": b"\x00\x01", "shop.nested": {"k": "v"}},
    None,
    {},  # the same series as None
]
# Of each pair of attribute sets that are one series, one a collection: one measurement
# per series keeps the exemplars deterministic.
SAME_SERIES = ({0, 7}, {1, 8})


def _one_each(meter: Meter, number: int, rng: random.Random) -> None:
    """One measurement per series per instrument and collection, in a sampled span, an
    unsampled one or none: exemplars are deterministic on both sides (the SDK's sum
    reservoir keeps the first measurement offered since the collection)."""
    counter = meter.create_counter("shop.orders", unit="{order}", description="Orders.")
    updown = meter.create_up_down_counter("shop.queue", unit="{item}")
    advised = meter.create_histogram(
        "shop.latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0, 10.0]
    )
    configured = meter.create_histogram(
        "shop.configured", unit="s", explicit_bucket_boundaries_advisory=[5.0]
    )
    default = meter.create_histogram("shop.size", unit="By")
    for index, attributes in enumerate(ATTRIBUTE_SETS):
        if index in SAME_SERIES[number % 2] or (index + number) % 4 == 0:
            continue  # some series skip a collection: delta leaves them out
        context = trace.set_span_in_context(_span(rng, sampled=index % 3 != 1))
        if index % 3 == 2:
            context = None  # the current context: no span
        value = rng.choice((0, 1, 2, 0.5, 1.5, 3.25, 7))
        counter.add(value, attributes, context=context)
        updown.add(value - 3, attributes, context=context)
        advised.record(value / 4, attributes, context=context)
        configured.record(value / 2, attributes, context=context)
        default.record(value * 1000, attributes, context=context)


@pytest.mark.parametrize("exemplar_filter", FILTERS)
@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_points_and_exemplars_equal_the_sdks(exemplar_filter: str, temporality: str) -> None:
    pair = Pair(FILTERS[exemplar_filter], [DELTA if temporality == "delta" else {}])
    try:
        _same_points(pair, _one_each, rounds=4)
    finally:
        pair.shutdown()


def _many(meter: Meter, number: int, rng: random.Random) -> None:
    """Many measurements per series, negative and non-finite ones among them (refused
    with the SDK's warnings), exemplars off (see the test below for those)."""
    counter = meter.create_counter("shop.orders", unit="{order}")
    updown = meter.create_up_down_counter("shop.queue")
    histogram = meter.create_histogram("shop.latency", unit="s")
    for index in range(300):
        attributes = ATTRIBUTE_SETS[index % len(ATTRIBUTE_SETS)]
        value = rng.choice((-1, -0.25, 0, 1, 2, 0.1, 0.7, 1e-3, 123.456, float("nan")))
        counter.add(value, attributes)
        updown.add(value, attributes)
        histogram.record(abs(value) * 10 if index % 7 else value, attributes)


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_many_measurements_and_refused_ones_equal_the_sdks(
    temporality: str, caplog: pytest.LogCaptureFixture
) -> None:
    pair = Pair(AlwaysOffExemplarFilter, [DELTA if temporality == "delta" else {}])
    try:
        _same_points(pair, _many, rounds=3)
    finally:
        pair.shutdown()
    # The SDK's warnings, once a refused measurement each, with the same text.
    sdk = sorted(r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry"))
    ours = sorted(r.getMessage() for r in caplog.records if r.name.startswith("aiva"))
    assert ours == sdk
    assert any("must be non-negative on Counter shop.orders" in m for m in ours)
    assert any("is not finite on UpDownCounter shop.queue" in m for m in ours)


def test_sum_exemplars_are_one_of_the_measurements_offered() -> None:
    """With several measurements offered per collection the SDK keeps a random one
    (reservoir sampling of size 1): aiva's keeps one of them too, with its span's ids."""
    pair = Pair(AlwaysOnExemplarFilter, [{}])
    sdk_meter, lean_meter = pair.meters()
    rng = random.Random(5)
    offered: dict[float, tuple[int, int]] = {}
    try:
        for meter in (sdk_meter, lean_meter):
            counter = meter.create_counter("shop.orders")
            for value in range(1, 50):
                span = _span(random.Random(value), sampled=True)
                context = span.get_span_context()
                offered[value] = (context.span_id, context.trace_id)
                counter.add(value, {"k": "v"}, context=trace.set_span_in_context(span))
        for data in pair.collect():
            assert data is not None
            point = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]
            assert point.value == sum(range(1, 50))  # type: ignore[union-attr]
            [exemplar] = point.exemplars
            assert (exemplar.span_id, exemplar.trace_id) == offered[exemplar.value]
            assert exemplar.filtered_attributes == {}
    finally:
        pair.shutdown()
    assert rng  # the draws are each side's own: which one is kept may differ


def _binary(meter: Meter, number: int, rng: random.Random) -> None:
    """Binary fractions and integers: exact sums, whichever way they are grouped."""
    counter = meter.create_counter("shop.orders")
    histogram = meter.create_histogram("shop.latency", explicit_bucket_boundaries_advisory=[1, 4])
    for index in range(40):
        attributes = {"shop.region": ("eu", "us", "ap")[index % 3]}
        counter.add(rng.choice((1, 2, 0.5, 0.25)), attributes)
        histogram.record(rng.choice((0.5, 1.0, 3.75, 8.0)), attributes)


def test_two_readers_cumulative_and_delta_each_equal_the_sdks() -> None:
    """One aggregation for both readers: each still gets its own view, collected at its
    own times."""
    pair = Pair(AlwaysOffExemplarFilter, [{}, DELTA])
    norms = [(Normalised(), Normalised()), (Normalised(), Normalised())]
    sdk_meter, lean_meter = pair.meters()
    try:
        for number in range(1, 7):
            for meter in (sdk_meter, lean_meter):
                _binary(meter, number, random.Random(number))
            reader = number % 2 if number < 5 else 1  # the delta reader twice in a row, too
            sdk, lean = pair.collect(reader)
            sdk_norm, lean_norm = norms[reader]
            assert lean_norm(lean, number) == sdk_norm(sdk, number), f"collection {number}"
    finally:
        pair.shutdown()


def test_measurements_from_threads_equal_the_sdks() -> None:
    pair = Pair(TraceBasedExemplarFilter, [DELTA])
    sdk_meter, lean_meter = pair.meters()
    errors: list[Exception] = []

    def measure(meter: Meter, seed: int) -> None:
        try:
            counter = meter.create_counter("shop.orders")
            histogram = meter.create_histogram("shop.latency")
            rng = random.Random(seed)
            for _ in range(2000):
                attributes = {"shop.worker": seed % 3}
                counter.add(rng.choice((1, 2, 3)), attributes)
                histogram.record(rng.choice((0.5, 2.0, 30.0, 600.0)), attributes)
        except Exception as error:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(error)

    try:
        for meter in (sdk_meter, lean_meter):
            threads = [threading.Thread(target=measure, args=(meter, seed)) for seed in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert not any(thread.is_alive() for thread in threads)
        assert not errors
        sdk, lean = pair.collect()
        # Series in the order they were first measured: the threads race for that, so
        # compare the points sorted (the race is the same for the SDK).
        assert _sorted_points(lean) == _sorted_points(sdk)
    finally:
        pair.shutdown()


def _sorted_points(data: MetricsData | None) -> list[Any]:
    assert data is not None
    points = []
    for scope in data.resource_metrics[0].scope_metrics:
        for metric in scope.metrics:
            for point in metric.data.data_points:
                shape = point.to_json()
                points.append((metric.name, repr(sorted(point.attributes.items())), shape))
    return sorted((name, attributes, _without_times(shape)) for name, attributes, shape in points)


def _without_times(shape: str) -> str:
    import json

    parsed = json.loads(shape)
    parsed.pop("start_time_unix_nano")
    parsed.pop("time_unix_nano")
    return json.dumps(parsed, sort_keys=True)
