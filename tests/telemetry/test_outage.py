"""A collector outage costs telemetry at most, never a request; it is counted; it heals."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import httpx
import psutil
import pytest

from infra.proxy import TcpProxy
from infra.rotel import Rotel
from infra.service import AivaService
from infra.wait import wait_for


def metric_value(service: AivaService, name: str, labels: str) -> float:
    text = httpx.get(f"{service.base_url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def median_latency(client: httpx.Client, path: str, count: int) -> float:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        assert client.get(path).status_code == 200
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_outage_costs_no_request_and_heals(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService], protocol: str
) -> None:
    collector = rotel()
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    service = aiva_service(
        env={
            "AIVA_TELEMETRY__OTLP__ENDPOINT": endpoint,
            "AIVA_TELEMETRY__OTLP__PROTOCOL": protocol,
            "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "1",
            "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
            # The SDK's own batch settings: export often, and a small queue so that an
            # outage overflows it quickly.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BSP_MAX_QUEUE_SIZE": "64",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "32",
        }
    )
    with service.client(timeout=5) as client:
        healthy = median_latency(client, "/api/demo/items/up", 50)
        collector.wait_for_spans(lambda s: s["attributes"].get("url.path") == "/api/demo/items/up")
        assert metric_value(service, "aiva_telemetry_failed_total", 'signal="spans"') == 0

        collector.stop()
        outage = median_latency(client, "/api/demo/items/down", 300)
        # Exports block only the SDK's threads: requests do not wait for them.
        assert outage < healthy * 3 + 0.005, (healthy, outage)
        wait_for(
            lambda: metric_value(service, "aiva_telemetry_failed_total", 'signal="spans"') > 0,
            timeout=15,
            message=lambda: "no failed span export counted",
        )
        wait_for(
            lambda: metric_value(service, "aiva_telemetry_dropped_total", 'signal="spans"') > 0,
            timeout=15,
            message=lambda: "no dropped span counted",
        )

        collector.restart()
        since = collector.mark()

        def marker_arrived() -> bool:
            client.get("/api/demo/items/back")
            return any(
                s["attributes"].get("url.path") == "/api/demo/items/back"
                for s in collector.spans(since)
            )

        wait_for(marker_arrived, timeout=60, interval=1, message=lambda: "no span after recovery")
    assert service.terminate() == 0


def test_no_outbound_connection_without_otlp_endpoint(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service()
    with service.client() as client:
        for path in ("/", "/info", "/metrics", "/api/demo/work", "/api/demo/items/1"):
            client.get(path)
        time.sleep(1)
        assert service.pid is not None
        connections = psutil.Process(service.pid).net_connections(kind="inet")
    for connection in connections:
        # Only the listening socket and the test's own inbound connections.
        assert connection.laddr.port == service.port, connection


def test_otel_sdk_disabled_sends_nothing(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(
        env={"AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint, "OTEL_SDK_DISABLED": "true"}
    )
    with service.client() as client:
        assert client.get("/api/demo/items/1").status_code == 200
        assert client.get("/metrics").status_code == 404
    assert service.terminate() == 0
    assert (collector.spans(), collector.log_records(), collector.metrics()) == ([], [], [])


def test_black_holed_collector_blocks_no_request(
    rotel: Callable[[], Rotel],
    tcp_proxy: Callable[..., TcpProxy],
    aiva_service: Callable[..., AivaService],
) -> None:
    """A collector that accepts and never answers: each export hangs for its timeout."""
    collector = rotel()
    proxy = tcp_proxy("127.0.0.1", collector.grpc_port)
    service = aiva_service(
        env={
            "AIVA_TELEMETRY__OTLP__ENDPOINT": f"http://{proxy.address}",
            "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "1",
            "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
            # The overall status is asserted: a busy host must not degrade it first.
            "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    with service.client(timeout=5) as client:
        healthy = median_latency(client, "/api/demo/items/up", 50)
        proxy.set_mode("blackhole")
        black_holed = median_latency(client, "/api/demo/items/down", 200)
        # An export waiting on the collector would add up to its 1 s timeout.
        assert black_holed < healthy * 3 + 0.02, (healthy, black_holed)
        wait_for(
            lambda: metric_value(service, "aiva_telemetry_failed_total", "") > 0,
            timeout=15,
            message=lambda: "no failed export counted",
        )
        wait_for(lambda: client.get("/health").json()["status"] == "degraded", timeout=15)
        telemetry = next(
            c for c in client.get("/health").json()["checks"] if c["name"] == "telemetry"
        )
        assert telemetry["status"] == "degraded"
        assert telemetry["message"].startswith("OTLP export failing for ")
    started = time.monotonic()
    assert service.terminate(timeout=30) == 0
    assert time.monotonic() - started < 15  # the flush gives up within its deadline
