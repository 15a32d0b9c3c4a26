"""aiva's lean instruments: the meter's API behaviour (as the SDK's), the producer path's
self-test, build_metrics with and without the fast layer, and a real service's
`aiva.meter()` instruments at a real collector (rotel) and on /metrics."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.metrics import Counter as ApiCounter
from opentelemetry.metrics import Histogram as ApiHistogram
from opentelemetry.metrics import UpDownCounter as ApiUpDownCounter
from opentelemetry.sdk.metrics import MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.resources import Resource
from prometheus_client import generate_latest

from aiva import api
from aiva.fast.producers import ProducingInMemoryReader, producers_work
from aiva.settings import load_settings
from aiva.telemetry.exporters import ExportStats
from aiva.telemetry.instruments import (
    LeanCounter,
    LeanHistogram,
    LeanInstruments,
    LeanMeter,
    LeanMeterProvider,
    LeanUpDownCounter,
    ProducerRegistry,
    meter_of,
)
from aiva.telemetry.metrics import build_metrics
from aiva.telemetry.resource import build_resource
from infra.rotel import Rotel
from infra.service import REPO_ROOT, SRC_DIR, AivaService
from tests.telemetry.test_otlp import otlp_env


def _lean(
    buckets: dict[str, tuple[float, ...]] | None = None,
) -> tuple[LeanMeterProvider, ProducingInMemoryReader]:
    registry = ProducerRegistry()
    reader = ProducingInMemoryReader(registry, Resource({"service.name": "t"}))
    provider = LeanMeterProvider(
        metric_readers=[reader],
        shutdown_on_exit=False,
        lean=LeanInstruments(registry, TraceBasedExemplarFilter(), buckets or {}),
    )
    return provider, reader


def _lean_provider() -> LeanMeterProvider:
    return _lean()[0]


def test_the_producer_path_passes_its_self_test() -> None:
    assert producers_work() is None


def test_instruments_are_the_apis_and_one_object_per_identity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = _lean_provider()
    meter = meter_of(provider, "shop", "1")
    assert isinstance(meter, LeanMeter) and meter_of(provider, "shop", "1") is meter
    counter = meter.create_counter("Shop.Orders", unit="{order}")
    assert isinstance(counter, LeanCounter) and isinstance(counter, ApiCounter)
    assert counter.name == "shop.orders"  # as the SDK names it
    assert meter.create_counter("shop.orders", unit="{order}") is counter
    assert meter.create_counter("shop.orders", unit="{order}", description="x") is not counter
    assert isinstance(meter.create_up_down_counter("shop.queue"), LeanUpDownCounter)
    assert isinstance(meter.create_up_down_counter("shop.queue"), ApiUpDownCounter)
    histogram = meter.create_histogram("shop.size", explicit_bucket_boundaries_advisory=[1, 2])
    assert isinstance(histogram, LeanHistogram) and isinstance(histogram, ApiHistogram)
    assert not caplog.records
    # The same identity with another advisory: the first one, and the SDK's warning.
    again = meter.create_histogram("shop.size", explicit_bucket_boundaries_advisory=[5])
    assert again is histogram
    assert "different advisory value [1, 2] and will be used instead" in caplog.text
    # Names and units the SDK refuses are refused the same way.
    with pytest.raises(Exception, match="maximum length 255"):
        meter.create_counter("9 bad name")
    with pytest.raises(Exception, match="maximum length 63"):
        meter.create_counter("ok", unit="x" * 64)
    provider.shutdown()


def test_gauges_observables_and_unusable_buckets_are_the_sdks() -> None:
    provider = _lean_provider()
    meter = meter_of(provider, "shop")
    sdk_module = "opentelemetry.sdk.metrics._internal.instrument"
    assert type(meter.create_gauge("shop.temperature")).__module__ == sdk_module
    observable = meter.create_observable_gauge("shop.open", callbacks=[lambda options: []])
    assert type(observable).__module__ == sdk_module
    # Boundaries the SDK refuses at the first measurement: its own instrument, its error.
    unsorted = meter.create_histogram("shop.odd", explicit_bucket_boundaries_advisory=[2, 1])
    assert type(unsorted).__module__ == sdk_module
    provider.shutdown()


def test_configured_buckets_win_over_the_advisory() -> None:
    provider, reader = _lean({"shop.size": (10.0, 20.0)})
    histogram = meter_of(provider, "shop").create_histogram(
        "shop.size", explicit_bucket_boundaries_advisory=[1, 2]
    )
    histogram.record(15, {"a": "b"})
    data = reader.get_metrics_data()
    assert data is not None
    [point] = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert tuple(point.explicit_bounds) == (10.0, 20.0) and list(point.bucket_counts) == [0, 1, 0]
    provider.shutdown()


def test_instruments_made_from_threads_after_the_readers_all_produce() -> None:
    provider, reader = _lean()
    meter = meter_of(provider, "shop")

    def make(index: int) -> None:
        for round_ in range(50):
            meter.create_counter(f"shop.c{(index + round_) % 20}").add(1)

    threads = [threading.Thread(target=make, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    data = reader.get_metrics_data()
    assert data is not None
    values = {
        metric.name: metric.data.data_points[0].value
        for metric in data.resource_metrics[0].scope_metrics[0].metrics
    }
    expected: dict[str, int] = {}
    for index in range(4):
        for round_ in range(50):
            name = f"shop.c{(index + round_) % 20}"
            expected[name] = expected.get(name, 0) + 1
    assert values == expected
    provider.shutdown()


def test_the_operation_histogram_is_lean_on_aivas_provider() -> None:
    provider = _lean_provider()
    assert isinstance(api._histogram_of(provider), LeanHistogram)
    assert not isinstance(api._histogram_of(MeterProvider()), LeanHistogram)
    provider.shutdown()


def _build(fast: bool, **env: str) -> Any:
    environ = {"AIVA_TELEMETRY__METRICS__EXPORTERS": '["otlp"]', **env}
    settings = load_settings(environ, config_dir="/nonexistent").settings
    return build_metrics(settings, build_resource(settings), ExportStats(), fast=fast)


def test_without_the_fast_layer_everything_is_the_sdks_and_metrics_renders() -> None:
    built = _build(
        False,
        AIVA_TELEMETRY__OTLP__ENDPOINT="http://127.0.0.1:9",
        AIVA_TELEMETRY__OTLP__TIMEOUT_S="1",
        AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S="3600",
    )
    try:
        assert type(built.provider) is MeterProvider
        assert built.request_duration is None and built.client_duration is None
        meter = meter_of(built.provider, "shop")
        assert not isinstance(meter, LeanMeter)
        meter.create_counter("shop.orders").add(3, {"shop.region": "eu"})
        meter.create_histogram("shop.size", explicit_bucket_boundaries_advisory=[1, 5]).record(2)
        text = generate_latest(built.registry).decode()
        assert re.search(r'^shop_orders_total\{.*shop_region="eu".*\} 3\.0$', text, re.M)
        assert re.search(r'^shop_size_bucket\{.*le="5(\.0)?".*\} 1\.0$', text, re.M)
    finally:
        built.provider.shutdown()


def test_with_the_fast_layer_metrics_renders_the_lean_instruments() -> None:
    built = _build(True)
    try:
        assert isinstance(built.provider, LeanMeterProvider)
        meter = meter_of(built.provider, "shop")
        meter.create_counter("shop.orders").add(3, {"shop.region": "eu"})
        meter.create_histogram("shop.size", explicit_bucket_boundaries_advisory=[1, 5]).record(2)
        text = generate_latest(built.registry).decode()
        assert re.search(r'^shop_orders_total\{.*shop_region="eu".*\} 3\.0$', text, re.M)
        assert re.search(r'^shop_size_bucket\{.*le="5(\.0)?".*\} 1\.0$', text, re.M)
    finally:
        built.provider.shutdown()


@pytest.mark.parametrize("fast_path", ["auto", "off"])
def test_a_services_meter_instruments_reach_the_collector_and_metrics(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService], fast_path: str
) -> None:
    collector = rotel()
    service = aiva_service(
        env={
            **otlp_env(collector, "grpc"),
            "PYTHONPATH": f"{SRC_DIR}:{REPO_ROOT}",
            "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
            "AIVA_TELEMETRY__FAST_PATH": fast_path,
        },
        args=["tests.apps.metered_service:app"],
        ready_path="/livez",
    )
    since = collector.mark()
    with service.client() as client:
        kinds = {client.get("/order", params={"items": n}).text for n in (1, 2, 3)}
    assert kinds == ({"LeanMeter"} if fast_path == "auto" else {"Meter"})
    text = httpx.get(f"{service.base_url}/metrics", timeout=5).text
    assert re.search(r'^shop_orders_total\{.*shop_region="eu".*\} 6\.0$', text, re.M), text
    # 1/4, 2/4, 3/4 in buckets (.., 0.5], (0.5, 1], (1, 2]: cumulative 2, 3, 3.
    for le, count in (("0.5", 2), ("1.0", 3), ("2.0", 3), ("+Inf", 3)):
        pattern = rf'^shop_order_size_seconds_bucket\{{.*le="{re.escape(le)}".*\}} {count}\.0$'
        assert re.search(pattern, text, re.M), (le, text)
    assert re.search(r"^shop_order_size_seconds_sum\{.*\} 1\.5$", text, re.M)

    def arrived(c: Rotel) -> bool:
        names = {m["name"] for m in c.metrics(since)}
        return {"shop.orders", "shop.order.size"} <= names and "Value: 6" in c.output(since)

    collector.wait_for(arrived, timeout=15.0, since=since)
    [orders, *_] = [m for m in collector.metrics(since) if m["name"] == "shop.orders"]
    assert orders["monotonic"] is True and orders["unit"] == "{order}"
    assert orders["point_attributes"] == [{"shop.region": "eu"}]
    assert orders["scope"].startswith("shop")
