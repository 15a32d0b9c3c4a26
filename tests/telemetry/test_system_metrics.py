"""aiva's process and system metrics: read with psutil on the conventions' attributes,
one set per meter provider, the contrib instrumentor's older ones kept out."""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import aiva
from aiva.settings import load_settings
from aiva.telemetry import system_reads
from aiva.telemetry.system import (
    CONTRIB_METER_NAME,
    METER_NAME,
    PROMETHEUS_NAMES,
    SystemMetrics,
    available_metrics,
    system_views,
)
from infra.ports import free_port
from infra.processes import ManagedProcess
from infra.service import answers, service_env

AUTO_INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")


def metrics_by_name(reader: InMemoryMetricReader) -> dict[str, Any]:
    """name -> (scope name, SDK Metric) of one collection."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: (scope.scope.name, metric)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


@pytest.fixture
def collected() -> Iterator[Callable[[], dict[str, Any]]]:
    """A private provider with aiva's system metrics; calling it collects once."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    SystemMetrics(provider).start()
    yield lambda: metrics_by_name(reader)
    provider.shutdown()


def test_every_metric_is_collected_under_aiva_s_scope(
    collected: Callable[[], dict[str, Any]],
) -> None:
    # The utilizations share out the CPU time since start-up: let some clock ticks
    # (10 ms each on Linux) pass first.
    time.sleep(0.2)
    metrics = collected()
    assert {name for name, (scope, _) in metrics.items()} == {m.name for m in available_metrics()}
    assert {scope for scope, _ in metrics.values()} == {METER_NAME}
    for metric in available_metrics():
        assert metrics[metric.name][1].unit == metric.unit
        assert metrics[metric.name][1].data.data_points, metric.name


def points(metrics: dict[str, Any], name: str) -> list[Any]:
    return list(metrics[name][1].data.data_points)


def test_attributes_carry_the_conventions_keys(collected: Callable[[], dict[str, Any]]) -> None:
    metrics = collected()
    cpus = psutil.cpu_count()
    cpu_points = points(metrics, "system.cpu.time")
    assert {p.attributes["cpu.logical_number"] for p in cpu_points} == set(range(cpus))
    assert {p.attributes["cpu.mode"] for p in cpu_points} >= {"user", "system", "idle"}
    assert {p.attributes["cpu.mode"] for p in points(metrics, "process.cpu.time")} == {
        "user",
        "system",
    }
    memory = {
        p.attributes["system.memory.state"]: p.value for p in points(metrics, "system.memory.usage")
    }
    assert set(memory) == {"used", "free", "buffers", "cached"}
    switches = points(metrics, "process.context_switches")
    assert {p.attributes["process.context_switch.type"] for p in switches} == {
        "voluntary",
        "involuntary",
    }
    for point in points(metrics, "system.network.io"):
        assert point.attributes["network.io.direction"] in {"transmit", "receive"}
        assert point.attributes["network.interface.name"]
    generations = {
        p.attributes["cpython.gc.generation"] for p in points(metrics, "cpython.gc.collections")
    }
    assert generations == {0, 1, 2}


def test_memory_states_add_up_to_the_limit(collected: Callable[[], dict[str, Any]]) -> None:
    states = system_reads.memory_states(psutil.virtual_memory())
    assert sum(states.values()) == psutil.virtual_memory().total
    assert all(value >= 0 for value in states.values())
    metrics = collected()
    [limit] = points(metrics, "system.memory.limit")
    shares = [p.value for p in points(metrics, "system.memory.utilization")]
    assert limit.value == psutil.virtual_memory().total
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-9)


def test_each_cpu_s_modes_share_its_time(collected: Callable[[], dict[str, Any]]) -> None:
    time.sleep(system_reads.MIN_WINDOW_S + 0.1)  # a window of real CPU time to share
    metrics = collected()
    shares: dict[int, float] = {}
    for point in points(metrics, "system.cpu.utilization"):
        assert 0.0 <= point.value <= 1.0
        number = point.attributes["cpu.logical_number"]
        shares[number] = shares.get(number, 0.0) + point.value
    assert shares and all(math.isclose(total, 1.0, rel_tol=1e-9) for total in shares.values())
    for point in points(metrics, "process.cpu.utilization"):
        assert 0.0 <= point.value <= 1.0


def test_counters_never_go_backwards(collected: Callable[[], dict[str, Any]]) -> None:
    first = collected()
    sum(i * i for i in range(200_000))  # some CPU time of this process
    second = collected()
    for name in ("process.cpu.time", "system.cpu.time", "process.context_switches"):
        before = {frozenset(p.attributes.items()): p.value for p in points(first, name)}
        for point in points(second, name):
            assert point.value >= before[frozenset(point.attributes.items())], name


def test_a_utilization_window_shorter_than_the_minimum_repeats_the_last_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples = iter(range(100))
    window = system_reads.Windowed(
        lambda: next(samples),
        lambda before, after, elapsed: [system_reads.Observation(after - before)],
    )
    monkeypatch.setattr(system_reads, "MIN_WINDOW_S", 0.2)
    first = window.observe()  # sample 1 against the baseline 0
    assert [o.value for o in first] == [1]
    assert window.observe() is first  # a scrape right after: no new sample taken
    time.sleep(0.25)
    assert [o.value for o in window.observe()] == [1]  # sample 2 against sample 1
    assert next(samples) == 3


def test_two_providers_in_one_process_each_have_their_own() -> None:
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    providers = [MeterProvider(metric_readers=[r], shutdown_on_exit=False) for r in readers]
    try:
        for provider in providers:
            SystemMetrics(provider).start()
        for reader in readers:
            assert "process.uptime" in metrics_by_name(reader)
    finally:
        for provider in providers:
            provider.shutdown()


def test_the_contrib_instrumentor_s_metrics_are_dropped_by_aiva_s_views() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=system_views(), shutdown_on_exit=False)
    instrumentor = SystemMetricsInstrumentor()
    assert not instrumentor.is_instrumented_by_opentelemetry
    instrumentor.instrument(meter_provider=provider)
    try:
        SystemMetrics(provider).start()
        metrics = metrics_by_name(reader)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert {scope for scope, _ in metrics.values()} == {METER_NAME}
    assert "process.open_file_descriptor.count" not in metrics
    assert CONTRIB_METER_NAME != METER_NAME


def prometheus_families(text: str) -> dict[str, set[str]]:
    """Family name -> the label names its samples carry, of a text exposition."""
    return {
        family.name: {label for sample in family.samples for label in sample.labels}
        for family in text_string_to_metric_families(text)
    }


@pytest.mark.fast_layer("metric_producers")
def test_prometheus_names_avoid_the_count_suffix_and_otlp_keeps_the_conventions() -> None:
    settings = load_settings({}, config_dir="/nonexistent").settings
    with TestClient(aiva.create_app(settings)) as client:
        families = prometheus_families(client.get("/metrics").text)
    assert "process_threads" in families and "process_unix_file_descriptors" in families
    assert not [name for name in families if name.endswith("_count")]
    assert families["process_cpu_time_seconds"] >= {"cpu_mode"}
    assert families["system_disk_io_bytes"] >= {"system_device", "disk_io_direction"}
    assert set(PROMETHEUS_NAMES) <= {m.name for m in available_metrics()}


def test_under_opentelemetry_instrument_only_the_conventions_reach_metrics(
    tmp_path: Path,
) -> None:
    """The auto-instrumentation switches the contrib instrumentor on with the global meter
    provider, which becomes aiva's: its older series must not join aiva's on /metrics."""
    assert AUTO_INSTRUMENT.exists(), "opentelemetry-instrumentation installs it beside python"
    port = free_port()
    env = service_env({"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false"}, tmp_path)
    argv = [str(AUTO_INSTRUMENT), sys.executable, "-m", "aiva", "serve", "--port", str(port)]
    service = ManagedProcess(argv=argv, log_path=tmp_path / "auto.log", env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        service.start(lambda: answers(url + "/"), 30)
        families = prometheus_families(httpx.get(url + "/metrics", timeout=10).text)
        service.signal(signal.SIGTERM)
        assert service.wait(20) == 0
    finally:
        service.stop()
    assert families["process_cpu_time_seconds"] >= {"cpu_mode"}
    assert "type" not in families["process_cpu_time_seconds"]
    assert "state" not in families["system_memory_usage_bytes"]
    assert not [name for name in families if name.startswith("process_runtime_")]
    assert "process_open_file_descriptor_count" not in families
    log = service.log_text()
    assert "Callback failed" not in log and "Traceback" not in log, log[-3000:]
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=system_metrics" in log
